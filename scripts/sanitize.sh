#!/usr/bin/env bash
# Builds the tests with sanitizers in their own build directory and runs them.
#   scripts/sanitize.sh asan   AddressSanitizer + UndefinedBehaviorSanitizer
#                              (and LeakSanitizer): the whole ctest suite
#                              except the tests named in ASAN_EXCLUDE below
#   scripts/sanitize.sh tsan   ThreadSanitizer: the tests where our own
#                              threads meet (TSAN_TESTS below)
# Every process the tests start (agent, collector, crash writer) is built the
# same way. Reports go to files (a killed child's stderr is often a log nobody
# reads); any report fails the run, and the reports are printed.
# Extra arguments go to ctest (e.g. -R Buffer).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

kind=${1:-}
shift || true
case "$kind" in
  asan) sanitize=address,undefined ;;
  tsan) sanitize=thread ;;
  *) echo "usage: scripts/sanitize.sh asan|tsan [ctest arguments]" >&2; exit 2 ;;
esac
# ASan+UBSan: everything except
#   buffer_crash: kill -9 cycles of a writer process, a soak CI already runs
#     unsanitized (twice); the store code it drives runs here in the unit tests.
#   ProtocolTest.AcceptGoesOnAfterRunningOutOfDescriptors and the fault
#     proxy's FaultProxyTest.ThrowsWhenItCannotListen and
#     .BacksOffWhenOutOfDescriptorsInsteadOfSpinning: they use up the
#     process's file descriptors on purpose, and UBSan's vptr check needs a
#     pipe to read memory, so every checked downcast meanwhile (in kj) is
#     reported as an invalid vptr (and the report cannot even open its file);
#     the same code runs in the other tests.
#   KernelProcessEventsExit.AProcessOfManyThreadsEndedByOneIsReportedExitingOnce:
#     built with clang's ASan, its forked children of 16 threads end with
#     exit code 0 where exit_group(7) was called (seen 2026-12-03, not yet
#     explained); the sensor's code it tests runs in the other kernel tests,
#     and the test itself in the main suite.
ASAN_EXCLUDE='^(buffer_crash|ProtocolTest\.AcceptGoesOnAfterRunningOutOfDescriptors|FaultProxyTest\.ThrowsWhenItCannotListen|FaultProxyTest\.BacksOffWhenOutOfDescriptorsInsteadOfSpinning|KernelProcessEventsExit\.AProcessOfManyThreadsEndedByOneIsReportedExitingOnce)$'
# TSan: the tests where threads of ours share state. CAF 0.17.6 as Debian
# ships it is not instrumented, so TSan could not see a message handed from
# one CAF worker to another and reported that hand-off as races in every
# actor test: the run builds CAF's core library with TSan from Debian's
# source package (scripts/sanitizers/caf-tsan.sh) and runs the tests on it.
# kj 0.9.2 is not rebuilt: its cross-thread promises (kj::Mutex is a bare
# futex) stay invisible, so the tests that go through them are not here (the
# collector's storage worker and admin writer answering its loop, the agent's
# network thread: ProtocolTest, CollectorMemory, ControlStore's writer,
# NetClientReasons, the in-process EndToEnd). Here:
#   SchedulerPolicy          our workers' sleeping and pokes: jobs queued from
#                            workers and from outside while workers fall asleep
#   AgentApi, HostSink, HostPush, HostPlugin  the library: start/stop from host
#                            threads, the host's pushes against its query,
#                            acknowledgements from host threads against the host
#                            link, host threads waking the host's plugins
#   MetricsTest, TraceRecorder  actor counters written by senders and handlers,
#                            read by another thread; watching and tracing
#   BufferStore.Concurrent*  read_concurrently (reader thread) against the owner
#   PendingBudget            the queries' shared budget from eight threads
#   BufferActorTest, BufferPurge, Pipeline  buffer actor, reader, queries on CAF workers
#   SensorTest               shared sensors: their threads and subscribers
#   CollectorStore           the collector's store from several threads (map
#                            growth under its shared_mutex, writes between a
#                            group's sync and its commit)
#   StorageGroups            how the storage worker picks a group
#   SmallTracker             the process tracker: its owner's updates against
#                            readers on other threads
#   JetStreamTest            the jetstream store: its storage thread against
#                            libnats' threads delivering acks (libnats is not
#                            rebuilt; its pthread locks are seen), real NATS
#   AdminRelayTest           the relay between collectors: libnats' threads
#                            handing calls to a loop, or answering `where`
#                            while that loop is blocked, real NATS
# Left out: SensorTest.DistinctArgumentsCannotStartMoreThanTheSensorLimit,
# which starts the limit of 256 sensors (a detached thread each): under TSan
# it did not end within 600 s (not yet known whether it is slow or stuck;
# unsanitized and under ASan it takes about a second).
TSAN_EXCLUDE='^SensorTest\.DistinctArgumentsCannotStartMoreThanTheSensorLimit$'
TSAN_TESTS='^(SchedulerPolicy\.|JetStreamTest\.|AdminRelayTest\.|LoopMailbox\.|AgentApi\.|HostSink\.|HostPush\.|HostPlugin\.|MetricsTest\.|TraceRecorder\.|BufferStore\.Concurrent|PendingBudget\.|BufferActorTest\.|BufferPurge\.|Pipeline\.|SensorTest\.|CollectorStore\.|StorageGroups\.|SmallTracker\.)'

start=$SECONDS
build=$(bash "$root/scripts/sanitizers/build.sh" "$kind")
if [ "$kind" = tsan ]; then
  caf_lib=$(bash "$root/scripts/sanitizers/caf-tsan.sh" "$root/$build/caf")
  export LD_LIBRARY_PATH="$caf_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
echo "sanitize $kind: ready to run in $((SECONDS - start)) s"

# The UBSan ignore list is checked before the run relies on it, built with
# CMakeLists.txt's flags for address,undefined (clang): with the list, CAF's
# finding passes and a null shared_ptr of ours aborts; without it, CAF's aborts.
if [ "$kind" = asan ]; then
  check=$root/$build/ubsan_ignore_check
  flags=(-std=c++17 -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -O1 -g1)
  clang++ "${flags[@]}" -fsanitize-ignorelist="$root/scripts/sanitizers/ubsan-ignore.txt" \
    "$root/scripts/sanitizers/ubsan_ignore_check.cpp" -o "$check" -lcaf_core
  clang++ "${flags[@]}" "$root/scripts/sanitizers/ubsan_ignore_check.cpp" -o "$check-bare" -lcaf_core
  bare="print_stacktrace=1:halt_on_error=1"
  if ! UBSAN_OPTIONS="$bare" "$check" caf >/dev/null 2>&1 || UBSAN_OPTIONS="$bare" "$check" ours >/dev/null 2>&1 ||
     UBSAN_OPTIONS="$bare" "$check-bare" caf >/dev/null 2>&1; then
    echo "sanitize asan: scripts/sanitizers/ubsan-ignore.txt does not hold (see ubsan_ignore_check.cpp)" >&2
    exit 1
  fi
  echo "sanitize asan: the UBSan ignore list hides CAF's finding and nothing else"
fi

reports=$root/$build/sanitizer-reports
rm -rf "$reports"
mkdir -p "$reports"
export ASAN_OPTIONS="log_path=$reports/asan:check_initialization_order=1:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="log_path=$reports/ubsan:print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$root/scripts/sanitizers/lsan.supp:print_suppressions=0"
export TSAN_OPTIONS="log_path=$reports/tsan:suppressions=$root/scripts/sanitizers/tsan.supp:print_suppressions=0:second_deadlock_stack=1:history_size=4"

# A test executable missing from scripts/sanitizers/build.sh's targets shows
# up in ctest as <name>_NOT_BUILT: say so before running anything.
if [ "$kind" = asan ]; then selection=(-E "$ASAN_EXCLUDE"); else selection=(-R "$TSAN_TESTS" -E "$TSAN_EXCLUDE"); fi
missing=$(ctest --test-dir "$build" -N "${selection[@]}" "$@" 2>/dev/null | sed -n 's/^ *Test *#[0-9]*: \(.*_NOT_BUILT\)$/\1/p' | tr '\n' ' ' || true)
if [ -n "$missing" ]; then
  echo "sanitize $kind: not built (add to scripts/sanitizers/build.sh's $kind targets): $missing" >&2
  exit 1
fi

start=$SECONDS
status=0
if [ "$kind" = asan ]; then
  ctest --test-dir "$build" --output-on-failure -E "$ASAN_EXCLUDE" --timeout 600 "$@" || status=$?
else
  ctest --test-dir "$build" --output-on-failure -R "$TSAN_TESTS" -E "$TSAN_EXCLUDE" --timeout 600 "$@" || status=$?
fi
echo "sanitize $kind: tests ran in $((SECONDS - start)) s"

shopt -s nullglob
found=("$reports"/*)
if [ ${#found[@]} -gt 0 ]; then
  echo "sanitize $kind: ${#found[@]} report file(s):"
  for f in "${found[@]}"; do
    echo "==== $f"
    head -n 60 "$f"
  done
  status=1
fi
exit $status
