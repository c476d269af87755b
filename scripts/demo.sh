#!/usr/bin/env bash
# Installs what is missing, builds the two demo programs (Release) and runs the demo: both lock-ups of
# the seed, naive versus faultsafe, in one process and across processes, with a summary table. Only the
# demo's two programs are built, side by side (target demo_programs), so the table is on screen in
# about a minute on a fresh clone with the dependencies installed (CI builds the rest of the Release
# preset itself).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target demo_programs
bash scripts/run-demo.sh build/release/examples
