#!/usr/bin/env bash
# Regenerate the image's hash-pinned lock files from their *.in inputs (docs/deployment.md,
# "Dependency lock files"). Needs uv (`pip install uv`) and PyPI; run from anywhere:
#   bash requirements/lock.sh            # keep the pins that still satisfy the inputs
#   bash requirements/lock.sh --upgrade  # move every pin to the newest allowed version
# Resolved for the image's interpreter (CPython 3.11 on Linux), against PyPI only: a machine's
# own pip or uv configuration (a local mirror, find-links) must not leak into the lock.
set -euo pipefail
cd "$(dirname "$0")"
for name in runtime firestore build; do
  echo "requirements/$name.lock"
  uv pip compile --no-config --quiet --generate-hashes --python-version 3.11 --python-platform linux \
    --index-url https://pypi.org/simple --custom-compile-command "bash requirements/lock.sh" \
    "$@" "$name.in" -o "$name.lock"
done
