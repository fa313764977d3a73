#!/usr/bin/env bash
# CI: build the container image and run it as docker-compose.yml describes it (docs/deployment.md,
# "How CI builds and runs the image"). Called by .ci/run from the repo root, venv active, with
# the CI Redis on 127.0.0.1:6379.
#
#  1. Docker: Debian's docker.io (installed when missing; dockerd started when `docker info`
#     fails, stopped again at the end).
#  2. The Dockerfile's base image: no registry is reachable, so a stand-in is built from Debian's
#     packages (debootstrap minbase + python3, python3-venv, ca-certificates, the host's CA
#     bundle) and imported under the base image's tag; cached as a tarball in
#     /var/cache/navstream-ci, and skipped while the image is there.
#  3. The image, with the legacy builder (DOCKER_BUILDKIT=0) and --network host; its runtime set
#     comes from requirements/runtime.lock with hashes.
#  4. Two `consumer` replicas with the compose file's own settings (tools/compose_run.py) on the
#     CI Redis under a key prefix of their own: /healthz 200 within the start period, the image's
#     HEALTHCHECK healthy, events consumed, `docker stop` exits 0 within the grace period with
#     nothing pending, one audit log per consumer in the shared state volume.
#  5. The `ingest` service the same way, its CoinGecko source pointed at a local stub.
#
# Every container runs with --network host (never a bridge network); every container, volume and
# Redis key it makes is removed on exit, and every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

T0=$SECONDS
log() { printf '[image.sh %4ss] %s\n' "$((SECONDS - T0))" "$*"; }
die() { log "FAILED: $*"; exit 1; }
timings=()
phase_start=$SECONDS
phase() {  # phase NAME: close the running phase's timing, open NAME's
  if [ -n "${phase_name:-}" ]; then timings+=("$(printf '%-34s %4ss' "$phase_name" "$((SECONDS - phase_start))")"); fi
  phase_name=$1
  phase_start=$SECONDS
  [ -z "$phase_name" ] || log "--- $phase_name"
}

CACHE_DIR=${NAVSTREAM_CI_CACHE:-/var/cache/navstream-ci}
REDIS_URL=${NAVSTREAM_CI_REDIS_URL:-redis://127.0.0.1:6379/0}
RUN_ID="ci$$x$(date +%s)"
PREFIX="navstream-ci-$RUN_ID"
IMAGE="navstream:ci"
COMPOSE=docker-compose.yml
WORK=$(mktemp -d "${TMPDIR:-/tmp}/navstream-image.XXXXXX")
containers=()
volumes=()
dockerd_pid=""
stub_pid=""
DOCKER=docker

cleanup() {
  local rc=$? c
  set +e
  trap - EXIT
  if [ "$rc" -ne 0 ]; then
    for c in "${containers[@]}"; do
      log "logs of $c (last 40 lines):"
      "$DOCKER" logs --tail 40 "$c" 2>&1 | sed 's/^/    /'
      "$DOCKER" inspect --format '    state: {{json .State}}' "$c" 2>&1 | cut -c1-2000
    done
  fi
  for c in "${containers[@]}"; do "$DOCKER" rm -f "$c" >/dev/null 2>&1; done
  for c in "${volumes[@]}"; do "$DOCKER" volume rm -f "$c" >/dev/null 2>&1; done
  [ -z "$stub_pid" ] || kill "$stub_pid" 2>/dev/null
  python - "$REDIS_URL" "$PREFIX" <<'PY' 2>/dev/null || log "could not delete the keys under $PREFIX:"
import sys, redis
client = redis.Redis.from_url(sys.argv[1], socket_timeout=5)
keys = list(client.scan_iter(match=sys.argv[2] + ":*", count=1000))
if keys:
    client.delete(*keys)
print(f"[image.sh] deleted {len(keys)} Redis keys under {sys.argv[2]}:")
PY
  if [ -n "$dockerd_pid" ]; then
    kill -TERM "$dockerd_pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$dockerd_pid" 2>/dev/null
    log "stopped the dockerd this script started"
  fi
  rm -rf "$WORK"
  phase ""
  log "timings:"
  for c in "${timings[@]}"; do log "  $c"; done
  log "exit $rc after $((SECONDS - T0))s"
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# ------------------------------------------------------------------------------------------------
phase "docker"
if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
  log "installing docker.io and debootstrap (Debian packages)"
  timeout 300 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq docker.io debootstrap >/dev/null
fi
# /usr/local/bin/docker may be another (newer, static) client; Debian's matches its dockerd.
if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; fi
log "docker client: $DOCKER ($("$DOCKER" --version))"
if ! "$DOCKER" info >/dev/null 2>&1; then
  log "dockerd is not running: starting it (no bridge, no iptables: every container uses --network host)"
  mkdir -p /var/log/navstream-ci
  setsid dockerd --bridge=none --iptables=false >/var/log/navstream-ci/dockerd.log 2>&1 </dev/null &
  dockerd_pid=$!
  for _ in $(seq 1 60); do
    "$DOCKER" info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || { tail -20 /var/log/navstream-ci/dockerd.log; die "dockerd exited"; }
    sleep 1
  done
  "$DOCKER" info >/dev/null 2>&1 || { tail -20 /var/log/navstream-ci/dockerd.log; die "dockerd did not answer within 60 s"; }
fi
log "docker server: $("$DOCKER" version --format '{{.Server.Version}}')"
python -c 'import yaml' 2>/dev/null || pip install --quiet pyyaml  # for tools/compose_run.py

# ------------------------------------------------------------------------------------------------
phase "base image"
mapfile -t bases < <(python - <<'PY'
import re
stages, bases = set(), []
for line in open("Dockerfile"):
    m = re.match(r"\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
    if m:
        if m[1] not in stages and m[1] not in bases:
            bases.append(m[1])
        if m[2]:
            stages.add(m[2])
print("\n".join(bases))
PY
)
[ "${#bases[@]}" -eq 1 ] || die "expected one base image in the Dockerfile, found: ${bases[*]}"
BASE=${bases[0]}
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
[ -f "$CA_BUNDLE" ] || die "no CA bundle at $CA_BUNDLE"
base_id="debootstrap-bookworm-$(sha256sum "$CA_BUNDLE" | cut -c1-12)"
base_tar="$CACHE_DIR/base-$base_id.tar"
label=$("$DOCKER" image inspect --format '{{index .Config.Labels "navstream.ci.base"}}' "$BASE" 2>/dev/null || echo missing)
if [ "$label" = "$base_id" ]; then
  log "$BASE is there (stand-in $base_id)"
elif [ "$label" = "" ]; then
  log "$BASE is there and is not a stand-in (a real one): using it"
else
  mkdir -p "$CACHE_DIR"
  if [ ! -s "$base_tar" ]; then
    log "building the stand-in for $BASE: debootstrap bookworm minbase + python3 python3-venv ca-certificates"
    rootfs="$WORK/rootfs"
    timeout 600 debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
      || { tail -30 "$WORK/debootstrap.log"; die "debootstrap failed"; }
    # The host's CA bundle: the package index is reached through this network's TLS proxy.
    cp "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
    # python:3.11-slim's interpreter is /usr/local/bin/python; the Dockerfile calls `python`.
    ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -cf "$base_tar.tmp" .
    mv "$base_tar.tmp" "$base_tar"
    rm -rf "$rootfs"
    log "cached $base_tar ($(du -h "$base_tar" | cut -f1))"
  else
    log "importing the cached stand-in $base_tar"
  fi
  "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL navstream.ci.base=$base_id" \
    --change 'CMD ["python3"]' \
    "$base_tar" "$BASE" >/dev/null
  log "imported the stand-in as $BASE"
fi

# ------------------------------------------------------------------------------------------------
phase "lock files"
# requirements/runtime.in must list pyproject's runtime dependencies (all but the demo's
# fakeredis) with the same bounds, and runtime.lock must pin each of them.
python - <<'PY'
import re, sys, tomllib
def name(req): return re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0].lower().replace("_", "-")
def norm(req): return re.sub(r"\s+", "", req).lower().replace("_", "-")
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
want = {name(d): norm(d) for d in deps if name(d) != "fakeredis"}
lines = [l.split("#")[0].strip() for l in open("requirements/runtime.in")]
have = {name(l): norm(l) for l in lines if l and not l.startswith("-")}
pinned = {m[1].lower() for m in re.finditer(r"^([A-Za-z0-9._-]+)==", open("requirements/runtime.lock").read(), re.M)}
problems = [f"pyproject.toml has {want[n]}, requirements/runtime.in has {have.get(n, 'nothing')}"
            for n in want if have.get(n) != want[n]]
problems += [f"requirements/runtime.in has {have[n]}, which pyproject.toml does not depend on" for n in have if n not in want]
problems += [f"requirements/runtime.lock pins no {n}: run bash requirements/lock.sh" for n in want if n not in pinned]
if problems:
    sys.exit("lock files out of step:\n  " + "\n  ".join(problems))
print(f"[image.sh] requirements/runtime.in matches pyproject.toml; runtime.lock pins {len(pinned)} packages")
PY

# ------------------------------------------------------------------------------------------------
phase "build"
build_args=()
index=${PIP_INDEX_URL:-$(pip config get global.index-url 2>/dev/null || true)}
case "$index" in
  "") log "pip: no index configured: the build uses PyPI (this host's file:// indexes and find-links are not visible inside it)" ;;
  *@*) log "pip: the configured index has credentials in its URL: not passed to the build (build arguments are kept in the image); using PyPI" ;;
  http://*|https://*) log "pip: passing the index $index to the build"; build_args+=(--build-arg "PIP_INDEX_URL=$index") ;;
  *) log "pip: the configured index $index is not reachable from a container: using PyPI" ;;
esac
log "DOCKER_BUILDKIT=0 docker build --network host ${build_args[*]} -t $IMAGE ."
if ! DOCKER_BUILDKIT=0 timeout 900 "$DOCKER" build --network host "${build_args[@]}" -t "$IMAGE" . >"$WORK/build.log" 2>&1; then
  cat "$WORK/build.log"
  die "docker build failed"
fi
grep -E '^Step [0-9]+/[0-9]+ : (FROM|RUN)|^Successfully (built|tagged)' "$WORK/build.log" | cut -c1-160 | sed 's/^/    /'
log "image $IMAGE: $("$DOCKER" image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
"$DOCKER" run --rm --network host --entrypoint python "$IMAGE" -c '
import importlib.util as u, sys
present = [m for m in ("fakeredis", "lupa", "google.cloud.firestore", "pip", "pytest") if u.find_spec(m.split(".")[0]) and u.find_spec(m)]
assert u.find_spec("navstream"), "navstream is not installed"
sys.exit(f"the runtime image has {present}" if present else 0)' || die "the image holds packages it must not"
log "the image has navstream and none of fakeredis, lupa, google-cloud-firestore, pip, pytest"
# The variant with the Firestore sink (requirements/firestore.lock) must build too; not run.
if ! DOCKER_BUILDKIT=0 timeout 900 "$DOCKER" build --network host "${build_args[@]}" --build-arg NAVSTREAM_EXTRAS=firestore \
    -t "$IMAGE-firestore" . >"$WORK/build-firestore.log" 2>&1; then
  cat "$WORK/build-firestore.log"
  die "docker build --build-arg NAVSTREAM_EXTRAS=firestore failed"
fi
"$DOCKER" run --rm --network host --entrypoint python "$IMAGE-firestore" -c 'import google.cloud.firestore, navstream' \
  || die "the firestore variant cannot import google.cloud.firestore"
log "image $IMAGE-firestore (NAVSTREAM_EXTRAS=firestore): $("$DOCKER" image inspect --format '{{.Size}}' "$IMAGE-firestore" | awk '{printf "%.0f MB", $1/1e6}'), imports google.cloud.firestore"
for file in navstream.toml ingest.toml; do
  "$DOCKER" run --rm --network host -v "$PWD/config:/etc/navstream:ro" "$IMAGE" config check "/etc/navstream/$file" \
    >/dev/null || die "config check /etc/navstream/$file failed in the image"
done
log "config check of config/navstream.toml and config/ingest.toml in the image: ok"

# ------------------------------------------------------------------------------------------------
# helpers
free_port() { python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_service() {  # start_service SERVICE NAME [compose_run.py options...]: docker run as compose says
  local service=$1 name=$2
  shift 2
  python tools/compose_run.py "$COMPOSE" "$service" --image "$IMAGE" --name "$name" -0 "$@" >"$WORK/args"
  local -a args
  mapfile -d '' -t args <"$WORK/args"
  log "docker run -d $(printf '%q ' "${args[@]}")"
  containers+=("$name")
  "$DOCKER" run -d "${args[@]}" >/dev/null
}

wait_http_200() {  # wait_http_200 CONTAINER PORT SECONDS
  python - "$DOCKER" "$1" "$2" "$3" <<'PY'
import subprocess, sys, time, urllib.request, urllib.error
docker, name, port, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
start = time.monotonic()
last = "no answer"
while time.monotonic() - start < limit:
    state = subprocess.run([docker, "inspect", "--format", "{{.State.Status}}", name], capture_output=True, text=True).stdout.strip()
    if state != "running":
        sys.exit(f"{name} is {state}, not running")
    try:
        with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            print(f"[image.sh] {name}: /healthz 200 after {time.monotonic() - start:.1f}s: {r.read(200).decode().strip()}")
            sys.exit(0)
    except urllib.error.HTTPError as e:
        last = f"{e.code} {e.read(200).decode(errors='replace').strip()}"
    except OSError as e:
        last = str(e)
    time.sleep(0.3)
sys.exit(f"{name}: /healthz not 200 within {limit:g}s (last: {last})")
PY
}

wait_healthy() {  # wait_healthy CONTAINER SECONDS: the image's (or compose's) HEALTHCHECK says healthy
  local name=$1 limit=$2 start=$SECONDS status
  while :; do
    status=$("$DOCKER" inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$name")
    case "$status" in
      healthy) log "$name: HEALTHCHECK healthy after $((SECONDS - start))s: $("$DOCKER" inspect --format '{{with .State.Health}}{{range .Log}}{{.Output}}{{end}}{{end}}' "$name" | grep . | tail -1)"; return 0 ;;
      unhealthy|none) die "$name: health is $status" ;;
    esac
    [ $((SECONDS - start)) -lt "$limit" ] || die "$name: not healthy within ${limit}s (status $status)"
    sleep 1
  done
}

has_healthcheck() {
  local test
  test=$("$DOCKER" inspect --format '{{if .Config.Healthcheck}}{{json .Config.Healthcheck.Test}}{{end}}' "$1")
  [ -n "$test" ] && [ "$test" != '["NONE"]' ] && [ "$test" != "null" ]
}

healthcheck_s() {  # healthcheck_s CONTAINER FIELD: StartPeriod, Interval or Timeout in seconds (Docker's default when unset)
  "$DOCKER" inspect --format '{{json .Config.Healthcheck}}' "$1" | python -c '
import json, sys
hc = json.load(sys.stdin) or {}
field = sys.argv[1]
print(int((hc.get(field) or 0) / 1e9) or {"StartPeriod": 0, "Interval": 30, "Timeout": 30}[field])' "$2"
}

health_wait_limit() {  # start period + two intervals + a timeout, from the container's own check
  echo $(($(healthcheck_s "$1" StartPeriod) + 2 * $(healthcheck_s "$1" Interval) + $(healthcheck_s "$1" Timeout) + 5))
}

stop_and_check() {  # stop_and_check GRACE CONTAINER...: docker stop them together; each exits 0 in time
  local grace=$1 name
  shift
  local -a pids=()
  for name in "$@"; do
    ( s=$(date +%s.%N); "$DOCKER" stop "$name" >/dev/null; e=$(date +%s.%N); echo "$s $e" >"$WORK/stop-$name" ) &
    pids+=("$!")
  done
  wait "${pids[@]}"  # only these: dockerd may be a background job of this shell too
  for name in "$@"; do
    read -r s e <"$WORK/stop-$name"
    local took code oom
    took=$(python -c "print(f'{$e - $s:.1f}')")
    code=$("$DOCKER" inspect --format '{{.State.ExitCode}}' "$name")
    oom=$("$DOCKER" inspect --format '{{.State.OOMKilled}}' "$name")
    log "$name: docker stop took ${took}s (grace ${grace}s), exit code $code"
    [ "$code" = 0 ] && [ "$oom" = false ] || die "$name did not exit 0 on docker stop (exit $code, oom $oom)"
    python -c "import sys; sys.exit(0 if $took < $grace else 1)" || die "$name: stop took ${took}s, not within ${grace}s"
  done
}

redis_check() {  # redis_check MODE: python checks of the CI prefix's keys
  python - "$REDIS_URL" "$PREFIX" "$@" <<'PY'
import json, sys, time, redis
url, prefix, mode, *rest = sys.argv[1:]
r = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)
events = f"{prefix}:events"

def groups(stream):
    try:
        return r.xinfo_groups(stream)
    except redis.ResponseError:
        return []

if mode == "consumers":  # both names beat, under the one group (Redis lists a consumer in the
    names = rest           # group only once it has read something, so that is not asked here)
    deadline = time.monotonic() + 20
    while True:
        beats = {n: r.hgetall(f"{prefix}:heartbeat:{n}") for n in names}
        gs = groups(events)
        if all(b.get("status") == "running" for b in beats.values()) and len(gs) == 1:
            print(f"[image.sh] one group ({gs[0]['name']}) on {events}; running heartbeats of {names}")
            break
        if time.monotonic() > deadline:
            sys.exit(f"consumers {names}: heartbeats {beats}, groups {[g['name'] for g in gs]}")
        time.sleep(0.5)
elif mode == "drained":  # everything on P:events delivered and acknowledged
    deadline = time.monotonic() + float(rest[0])
    while True:
        g = groups(events)[0]
        if g["lag"] == 0 and g["pending"] == 0:
            members = {c["name"]: c["idle"] for c in r.xinfo_consumers(events, g["name"])}
            print(f"[image.sh] {events}: {g['entries-read']} entries read, lag 0, pending 0; "
                  f"consumers in group {g['name']}: {sorted(members)}")
            break
        if time.monotonic() > deadline:
            sys.exit(f"{events} not drained: {g}")
        time.sleep(0.3)
elif mode == "pending":  # after the stop: nothing pending on any input stream
    report = {}
    for stream in (events, f"{prefix}:orders"):
        for g in groups(stream):
            report[f"{stream} {g['name']}"] = (g["pending"], g.get("entries-read"), r.xlen(stream))
    print(f"[image.sh] after the stop (pending, entries read, length): {report}")
    if not report or any(p for p, _, _ in report.values()):
        sys.exit("entries are pending after a graceful stop" if report else "no consumer group found")
elif mode == "decided":  # the risk gate answered the order on P:decisions
    order_id, limit = rest[0], float(rest[1])
    deadline = time.monotonic() + limit
    while True:
        answers = [f for _, f in r.xrange(f"{prefix}:decisions") if f.get("order_id") == order_id]
        if answers:
            print(f"[image.sh] order {order_id} answered: {answers[0].get('decision')} ({answers[0].get('reasons')})")
            break
        if time.monotonic() > deadline:
            sys.exit(f"order {order_id} not answered within {limit:g}s")
        time.sleep(0.3)
elif mode == "ingested":  # a source_status ok from the stub's source, and its price
    deadline = time.monotonic() + float(rest[0])
    while True:
        entries = r.xrange(events)
        ok = [f for _, f in entries if f.get("type") == "source_status" and f.get("source") == "coingecko" and f.get("ok") in ("true", "1")]
        prices = [f for _, f in entries if f.get("type") == "price" and f.get("source") == "coingecko"]
        if ok and prices:
            print(f"[image.sh] ingest wrote {len(prices)} CoinGecko price(s), e.g. {json.dumps(prices[-1])}, and {len(ok)} source_status ok")
            break
        if time.monotonic() > deadline:
            sys.exit(f"no ok source_status and price from ingest within {rest[0]}s; {events} has {[f for _, f in entries][-3:]}")
        time.sleep(0.5)
PY
}

publish() {  # publish N: N price events through the image's own `navstream publish`
  python -c "
import json, sys
for i in range($1):
    print(json.dumps({'type': 'price', 'base': 'BTC', 'quote': 'USDT', 'price': f'{97000 + i}.5', 'source': 'ci'}))
" | timeout 120 "$DOCKER" run --rm -i --network host "$IMAGE" publish --file - --stamp --redis-url "$REDIS_URL" --prefix "$PREFIX" >/dev/null
  log "published $1 price events to $PREFIX:events (navstream publish in the image)"
}

# ------------------------------------------------------------------------------------------------
phase "consumers: start and health"
state_volume="navstream-ci-$RUN_ID-state"
volumes+=("$state_volume")
"$DOCKER" volume create "$state_volume" >/dev/null
consumers=()
for i in 1 2; do
  name="navstream-ci-$RUN_ID-consumer-$i"
  port=$(free_port)
  start_service consumer "$name" --hostname "$RUN_ID-c$i" \
    --env "NAVSTREAM_REDIS_URL=$REDIS_URL" --env "NAVSTREAM_PREFIX=$PREFIX" \
    --env "NAVSTREAM_HTTP_PORT=$port" --env "NAVSTREAM_HTTP_HOST=127.0.0.1" \
    --volume "navstream-state=$state_volume"
  consumers+=("$name")
  echo "$port" >"$WORK/port-$name"
done
start_period=$(healthcheck_s "${consumers[0]}" StartPeriod)
log "the health check's start period: ${start_period}s"
for name in "${consumers[@]}"; do
  wait_http_200 "$name" "$(cat "$WORK/port-$name")" "$start_period" || die "$name: /healthz"
done
redis_check consumers "$RUN_ID-c1-1" "$RUN_ID-c2-1" || die "the replicas do not share the group under distinct names"
publish 200
order_id="$RUN_ID-order-1"
printf '{"type": "order", "order_id": "%s", "venue": "binance", "account": "ci", "symbol": "BTC/USDT", "side": "buy", "qty": "0.01", "price": "97000"}\n' "$order_id" |
  timeout 120 "$DOCKER" run --rm -i --network host "$IMAGE" publish --file - --stamp --redis-url "$REDIS_URL" --prefix "$PREFIX" >/dev/null
log "published order $order_id to $PREFIX:orders"
redis_check drained 30 || die "the consumers did not process the events"
redis_check decided "$order_id" 30 || die "the risk gate did not answer"
for name in "${consumers[@]}"; do
  wait_healthy "$name" "$(health_wait_limit "$name")"
done

phase "consumers: graceful stop"
publish 2000  # a batch in flight when the stop comes
grace=$(python tools/compose_run.py "$COMPOSE" consumer --image "$IMAGE" --name x --stop-grace)
stop_and_check "$grace" "${consumers[@]}"
redis_check pending || die "entries left pending"
audit_dir="$("$DOCKER" volume inspect --format '{{.Mountpoint}}' "$state_volume")/audit"
find "$audit_dir" -type f -printf '    %m %U:%G %6s %p\n'
for c in 1 2; do
  [ -f "$audit_dir/risk-$RUN_ID-c$c-1.jsonl" ] || die "no audit log for consumer $RUN_ID-c$c-1 in the shared state volume"
done
audited=$(grep -l -- "$order_id" "$audit_dir"/*.jsonl | wc -l)
[ "$audited" = 1 ] || die "order $order_id is in $audited audit logs, not 1"
log "one audit log per consumer in the shared state volume; the order's decision is in one of them"

# ------------------------------------------------------------------------------------------------
phase "ingest"
stub_port=$(free_port)
cat >"$WORK/stub.py" <<'PY'
# CoinGecko's /simple/price, as the coingecko source asks it (base_url + /simple/price).
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
PRICES = {"bitcoin": "97012.5", "ethereum": "3456.78"}
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlsplit(self.path)
        if url.path != "/simple/price":
            self.send_error(404)
            return
        ids = parse_qs(url.query).get("ids", [""])[0].split(",")
        body = "{" + ",".join(f'"{i}": {{"usd": {PRICES[i]}, "last_updated_at": {int(time.time()) - 1}}}'
                              for i in ids if i in PRICES) + "}"
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, fmt, *args):
        print("stub:", fmt % args, file=sys.stderr, flush=True)
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
PY
python "$WORK/stub.py" "$stub_port" 2>"$WORK/stub.log" &
stub_pid=$!
mkdir -m 0755 "$WORK/ingest-config"
cat >"$WORK/ingest-config/ingest.toml" <<EOF
# CI: config/ingest.toml's CoinGecko source, pointed at a local stub.
[sources.coingecko]
base_url = "http://127.0.0.1:$stub_port"
interval_s = 2
calls_per_minute = 60

[sources.coingecko.ids]
BTC = "bitcoin"
ETH = "ethereum"
EOF
chmod 0644 "$WORK/ingest-config/ingest.toml"
ingest_env=(--env "NAVSTREAM_REDIS_URL=$REDIS_URL" --env "NAVSTREAM_PREFIX=$PREFIX")
ingest_port=$(python tools/compose_run.py "$COMPOSE" ingest --image "$IMAGE" --name x --print-env NAVSTREAM_INGEST_HTTP_PORT)
if [ -n "$ingest_port" ] && [ "$ingest_port" != 0 ]; then  # ingest serves HTTP: a free port of its own
  ingest_port=$(free_port)
  ingest_env+=(--env "NAVSTREAM_INGEST_HTTP_PORT=$ingest_port" --env "NAVSTREAM_HTTP_HOST=127.0.0.1")
fi
ingest="navstream-ci-$RUN_ID-ingest"
start_service ingest "$ingest" --hostname "$RUN_ID-ingest" "${ingest_env[@]}" --volume "./config=$WORK/ingest-config"
redis_check ingested 30 || die "ingest published nothing from the stub"
if [ -n "$ingest_port" ] && [ "$ingest_port" != 0 ]; then wait_http_200 "$ingest" "$ingest_port" 30; fi
if has_healthcheck "$ingest"; then
  wait_healthy "$ingest" "$(health_wait_limit "$ingest")"
else
  log "$ingest: no health check (the compose file disables it)"
fi
grace=$(python tools/compose_run.py "$COMPOSE" ingest --image "$IMAGE" --name x --stop-grace)
stop_and_check "$grace" "$ingest"
log "the stub answered $(grep -c 'GET /simple/price' "$WORK/stub.log") requests"

# Earlier builds' leftovers (untagged images a day old); the current build's cache stays.
"$DOCKER" image prune --force --filter until=24h >/dev/null || true
phase ""
log "OK: the image builds, its consumers and ingest run as docker-compose.yml describes them"
