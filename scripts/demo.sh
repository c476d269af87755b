#!/usr/bin/env bash
# Installs what is missing, builds the two demo programs (Release) and runs the demo: both lock-ups of
# the seed, naive versus faultsafe, with a summary table. Only the demo's targets are built, so the table
# is on screen in a couple of minutes on a fresh clone (CI builds the rest of the Release preset itself).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target brian colin
bash scripts/run-demo.sh build/release/examples
