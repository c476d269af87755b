#!/usr/bin/env bash
# Runs the seed's two lock-ups, naive and faultsafe, in one process and across OS processes
# (--processes), and prints a table. Usage: run-demo.sh <examples-dir>
# Each example prints one line "RESULT: <text>" and exits 0 when the run matched its mode's expectation.
set -uo pipefail
dir=${1:-build/release/examples}
rows=()
fail=0
run() {
  local name=$1 mode="${*:2}" out rc t0 t1 result
  if [ ! -x "$dir/$name" ]; then
    rows+=("$(printf '%-7s %-23s %-6s %s' "$name" "$mode" "-" "not built")")
    fail=1
    return
  fi
  echo "===== $name $mode ====="
  t0=$(date +%s%N)
  out=$(timeout 30 "$dir/$name" "${@:2}" 2>&1); rc=$?
  t1=$(date +%s%N)
  echo "$out"
  result=$(printf '%s\n' "$out" | sed -n 's/^RESULT: //p' | tail -n 1)
  [ $rc -eq 0 ] || fail=1
  rows+=("$(printf '%-7s %-23s %-6s %6d ms  %s' "$name" "$mode" "$([ $rc -eq 0 ] && echo ok || echo FAIL:$rc)" $(( (t1 - t0) / 1000000 )) "$result")")
}
run brian --naive
run brian --faultsafe
run colin --naive
run colin --faultsafe
run brian --naive --processes
run brian --faultsafe --processes
run colin --naive --processes
run colin --faultsafe --processes
echo
echo "scenario mode                    exit   time     what happened"
printf '%s\n' "${rows[@]}"
[ $fail -eq 0 ] && echo "All right, the kernel's secured." || echo "gaaaame over maaaaan"
exit $fail
