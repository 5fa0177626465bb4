#!/usr/bin/env bash
# Configures and builds a sanitizer tree: scripts/sanitizers/build.sh asan|tsan.
# Prints the tree's directory last. Used by scripts/sanitize.sh (the tests) and
# scripts/fuzz.sh (the fuzz targets, which live in the asan tree).
#   asan  clang, AddressSanitizer + UndefinedBehaviorSanitizer, libFuzzer's
#         coverage on every object: the whole suite and the fuzz targets, one
#         build for both
#   tsan  gcc, ThreadSanitizer: outpost-tsan-tests and -nats-tests (the test files where our
#         threads meet, tests/CMakeLists.txt) and the library's hosts
set -euo pipefail
cd "$(dirname "$0")/../.."

kind=${1:-}
case "$kind" in
  asan)
    options=(-DOUTPOST_SANITIZE=address,undefined -DOUTPOST_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++)
    targets=(outpost-unit-tests outpost-actor-tests outpost-net-tests outpost-query-tests outpost-api-tests
             outpost-host-tests outpost-c-api-test outpost-c-plugin-test outpost-fault-proxy-tests outpost-crash-test
             outpost-inspector-tests outpost-kernel-tests outpost-soak-tests outpost-fleet-tests outpost-fuzz-targets) ;;
  tsan)
    options=(-DOUTPOST_SANITIZE=thread)
    targets=(outpost-tsan-tests outpost-tsan-nats-tests outpost-api-tests outpost-host-tests outpost-c-api-test
             outpost-c-plugin-test) ;;
  *) echo "usage: scripts/sanitizers/build.sh asan|tsan" >&2; exit 2 ;;
esac
build=build-$kind

if command -v ccache >/dev/null; then
  options+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi
start=$SECONDS
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${options[@]}" >/dev/null
cmake --build "$build" -j2 --target "${targets[@]}" >&2
echo "sanitize $kind: built in $((SECONDS - start)) s" >&2
echo "$build"
