#!/usr/bin/env bash
# CI: check every PromQL expression, Prometheus rules file and Prometheus config the docs show,
# with promtool (docs/observability.md). The docs mark them (```promql blocks, and ```yaml blocks
# after <!-- promtool: rules --> or <!-- promtool: config -->); tests/support/docs_promql.py finds them
# and writes them out, each promql expression wrapped as a recording rule (this promtool has no
# offline `check query`; `check rules` parses and checks every rule's expression).
# That the metric names they use exist is tests/serve/test_metrics_docs.py's job (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."

# promtool: Debian's `prometheus` package ships /usr/bin/promtool (PyPI has none). Installing it
# does not start a server here (no init system in CI containers; policy-rc.d forbids it anyway).
# apt-cache's answer is read whole, then matched: `apt-cache ... | grep -q` under pipefail fails
# at random (grep exits at its first match, apt-cache dies writing the rest: SIGPIPE).
installable() { [[ "$(apt-cache policy prometheus 2>/dev/null || true)" =~ Candidate:\ [0-9] ]]; }
if ! command -v promtool >/dev/null 2>&1; then
  if ! installable; then
    apt-get update -qq
  fi
  if ! installable; then
    echo "promtool.sh: no installable 'prometheus' package (it provides promtool); cannot check the docs' PromQL" >&2
    exit 1
  fi
  policy_rc_d=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    policy_rc_d=/usr/sbin/policy-rc.d
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  [ -z "$policy_rc_d" ] || rm -f "$policy_rc_d"
fi
promtool --version 2>&1 | head -n 1

out="$(mktemp -d "${TMPDIR:-/tmp}/navstream-promtool.XXXXXX")"
trap 'rm -rf "$out"' EXIT

python3 tests/support/docs_promql.py "$out" >"$out/manifest"
rules=() configs=()
while read -r kind file; do
  case "$kind" in
    rules) rules+=("$file") ;;
    config) configs+=("$file") ;;
    *) echo "promtool.sh: unknown kind $kind" >&2; exit 1 ;;
  esac
done <"$out/manifest"

echo "checking ${#rules[@]} rules file(s) and ${#configs[@]} config(s) from the docs"
promtool check rules "${rules[@]}"
if [ "${#configs[@]}" -gt 0 ]; then
  promtool check config --syntax-only "${configs[@]}"
fi
