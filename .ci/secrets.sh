#!/usr/bin/env bash
# CI: a maintained secret scanner (detect-secrets, pinned) over every file git tracks or would
# add, against the audited baseline .secrets.baseline: any finding not audited as a false
# positive fails (docs/security.md says how to audit one). Run by .ci/run in the project's venv.
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet 'detect-secrets==1.5.0'
python tools/secrets_check.py
