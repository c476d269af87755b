#!/usr/bin/env bash
# Installs what faultsafe needs on Debian 12 (run as root), skipping what is already there.
set -euo pipefail
need=()
for p in g++ cmake make libboost-dev doctest-dev libbenchmark-dev clang clang-14 libclang-rt-14-dev spin fuse3 libfuse3-dev fio; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "faultsafe: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${need[@]}" || { apt-get update && apt-get install -y --no-install-recommends "${need[@]}"; }
fi
