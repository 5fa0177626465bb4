#!/usr/bin/env bash
# Runs a local collector and an agent with its built-in configuration (a
# heartbeat, and the event artifacts Linux.Events.ProcessCreation and
# Linux.Detection.Thumbdrives.List), talking over TLS with certificates made
# by tools/outpost-certs, and shows the rows as the collector stores them.
# Ctrl-C stops both in order. DURATION=N stops them after N seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
data=outpost-data
certs=$data/certs
mkdir -p "$data"
tools/outpost-certs init "$certs" >/dev/null
tools/outpost-certs agent "$certs" demo-agent

./build/tools/outpost-collector --datadir "$data/collector" --listen 127.0.0.1:4750 \
  --ca "$certs/ca.pem" --cert "$certs/collector.pem" --key "$certs/collector.key" \
  > "$data/collector.log" 2>&1 &
collector=$!
for _ in $(seq 50); do grep -q "listening on port" "$data/collector.log" && break; sleep 0.1; done
grep -q "listening on port" "$data/collector.log" || { cat "$data/collector.log"; exit 1; }

./build/tools/outpost-agent --set link.type=collector --set link.address=127.0.0.1:4750 \
  --set link.ca="$certs/ca.pem" --set link.cert="$certs/demo-agent.pem" \
  --set link.key="$certs/demo-agent.key" --set log.file="$data/agent.log" "$@" 2>/dev/null &
agent=$!

# The collector writes <datadir>/<agent>/<artifact>/<day>.jsonl: follow the
# artifacts' files once they exist (a process started on this machine, a USB
# drive plugged in, and the heartbeat every second).
day=$(date -u +%Y-%m-%d)
files=()
for artifact in heartbeat Linux.Events.ProcessCreation Linux.Detection.Thumbdrives.List; do
  files+=("$data/collector/demo-agent/$artifact/$day.jsonl")
done
tail -n 0 -F "${files[@]}" 2>/dev/null &
tailer=$!

stop() {
  kill -TERM "$agent" 2>/dev/null || true
  wait "$agent"; status=$?
  kill -TERM "$collector" 2>/dev/null || true
  wait "$collector" || true
  kill "$tailer" 2>/dev/null || true
  echo "outpost-agent exited with status $status; rows are in $data/collector/demo-agent/"
  exit "$status"
}
trap stop INT TERM
if [ -n "${DURATION:-}" ]; then
  sleep "$DURATION"
  stop
fi
wait "$agent"
