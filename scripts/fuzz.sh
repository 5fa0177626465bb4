#!/usr/bin/env bash
# Fuzzes the VQL parser for N seconds (default 600) from the committed seed
# corpus, with AddressSanitizer. Needs clang. A crash leaves crash-<hash> in
# the current directory and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DOUTPOST_FUZZ=ON >/dev/null
cmake --build build-fuzz -j2 --target outpost-vql-fuzz
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp tests/fuzz/corpus/* "$work"/
build-fuzz/tests/fuzz/outpost-vql-fuzz -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 "$work" 2>&1 | tail -n 12
