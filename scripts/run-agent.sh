#!/usr/bin/env bash
# Runs the agent with its built-in configuration (a heartbeat and a synthetic
# query, a file link) and shows the delivered rows as they arrive.
# Ctrl-C stops the agent in order. DURATION=N stops it after N seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p outpost-data
: > outpost-data/delivered.jsonl
./build/tools/outpost-agent "$@" &
agent=$!
tail -n +1 -F outpost-data/delivered.jsonl &
tailer=$!
stop() {
  kill -TERM "$agent" 2>/dev/null || true
  wait "$agent"; status=$?
  kill "$tailer" 2>/dev/null || true
  echo "outpost-agent exited with status $status"
  exit "$status"
}
trap stop INT TERM
if [ -n "${DURATION:-}" ]; then
  sleep "$DURATION"
  stop
fi
wait "$agent"
