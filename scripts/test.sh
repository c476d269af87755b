#!/usr/bin/env bash
# Installs what is missing, builds the dev preset (Debug: tests, examples, benchmarks) and runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake --preset dev
cmake --build --preset dev
ctest --preset dev
