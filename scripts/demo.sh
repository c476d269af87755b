#!/usr/bin/env bash
# Installs what is missing, builds the release preset and runs the demo: both lock-ups of the seed,
# naive versus faultsafe, with a summary table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake --preset release >/dev/null
cmake --build --preset release
bash scripts/run-demo.sh build/release/examples
