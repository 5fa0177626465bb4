#!/usr/bin/env bash
# Runs every fuzz target (tests/fuzz/*_fuzz.cpp) for SECONDS each (default
# 600; a night: 28800), or only the TARGETs named (vql_parser, parsers, ...),
# from its seeds in tests/fuzz/corpus/<target>/, two at a time. They are
# built in the ASan+UBSan tree (scripts/sanitizers/build.sh asan; clang). Inputs that reach new code are kept in
# build-asan/fuzz-corpus/<target>/ for the next run; a finding leaves crash-*,
# leak-*, timeout-* or oom-* and the target's log in build-asan/fuzz-findings/
# and fails the run. A finding worth keeping becomes a seed
# (corpus/<target>/regress-*) and a test of the suite.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${1:-600}
shift || true
build=$(bash scripts/sanitizers/build.sh asan)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in tests/fuzz/*_fuzz.cpp; do targets+=("$(basename "$f" _fuzz.cpp)"); done
fi
export ASAN_OPTIONS="detect_stack_use_after_return=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$root/scripts/sanitizers/lsan.supp:print_suppressions=0"
findings=$root/$build/fuzz-findings
mkdir -p "$findings"

# One target: 0 when it ran its time without a finding.
fuzz() {
  local t=$1 corpus=$root/$build/fuzz-corpus/$1 dict=()
  mkdir -p "$corpus" "$findings/$t"
  case $t in vql_*|artifact) dict=(-dict="$root/tests/fuzz/vql.dict") ;; esac
  (cd "$findings/$t" && "$root/$build/tests/fuzz/outpost-fuzz-$t" -max_total_time="$seconds" -timeout=20 \
     -rss_limit_mb=4096 -max_len=8192 -print_final_stats=1 "${dict[@]}" "$corpus" "$root/tests/fuzz/corpus/$t" \
     > "$findings/$t.log" 2>&1)
}

status=0
jobs=2
pids=() names=()
report() {  # waits for the oldest running target and prints how it went
  local rc=0
  wait "${pids[0]}" || rc=$?
  local t=${names[0]} log=$findings/${names[0]}.log
  pids=("${pids[@]:1}") names=("${names[@]:1}")
  local runs
  runs=$(grep -ao "^stat::number_of_executed_units: [0-9]*" "$log" | grep -o "[0-9]*$" || echo "?")
  if [ $rc -eq 0 ]; then
    echo "fuzz $t: $runs runs in $seconds s, nothing found"
  else
    status=1
    echo "fuzz $t: FAILED after $runs runs; the finding is in $findings/$t/, the log in $log:"
    grep -m 1 -A 30 "ERROR\|runtime error\|deadly signal\|Timeout\|out-of-memory\|abort" "$log" | head -n 40 || tail -n 20 "$log"
  fi
}
for t in "${targets[@]}"; do
  [ ${#pids[@]} -ge "$jobs" ] && report
  fuzz "$t" &
  pids+=($!) names+=("$t")
done
while [ ${#pids[@]} -gt 0 ]; do report; done
exit $status
