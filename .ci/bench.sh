#!/usr/bin/env bash
# The benches in their quick modes (bench/README.md): a few thousand events and a second of
# orders, so a change that breaks a bench, or makes navstream lose, dead-letter or leave an
# order unanswered under load, fails CI. No timing is gated here (--check): these machines are
# noisy; the figures are read from full runs (docs/performance.md).
set -euo pipefail
cd "$(dirname "$0")/.."
python bench/bench_risk.py --quick --check --rates 1000 --seconds 1 --warmup 0.5
python bench/bench_loop.py --events 5000 --repeat 1 --check
