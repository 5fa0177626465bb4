#!/usr/bin/env bash
# liboutpost.so exports the API (what include/outpost/outpost.hpp marks
# OUTPOST_API) and nothing else: no symbol of ours outside it, none of a
# library Outpost is built on (CAF, Cap'n Proto, kj, yaml-cpp, spdlog, ...).
# Run by ctest: package_exports_check.sh NM LIBRARY
set -euo pipefail
nm=$1 lib=$2

symbols=$("$nm" -D --defined-only -C "$lib" | cut -d' ' -f3-)
# The API: the members of outpost::Agent (not those of its Impl) and of
# outpost::SinkAck (not of its State), outpost::to_string, and the C API's
# outpost_* functions (include/outpost/outpost.h).
foreign=$( (grep -Ev '^outpost::(Agent::|SinkAck::|to_string\()|^outpost_[a-z_]+$' <<<"$symbols"
            grep -E '^outpost::(Agent::Impl|SinkAck::State)::' <<<"$symbols") || true)
if [ -n "$foreign" ]; then
  echo "$lib exports $(wc -l <<<"$foreign") symbol(s) beyond the API:"
  head -n 40 <<<"$foreign"
  exit 1
fi
for wanted in 'outpost::Agent::start()' 'outpost::Agent::run_query(' 'outpost::to_string(outpost::Errc)' \
  outpost_agent_start outpost_agent_push_json outpost_ack_send; do
  if ! grep -qF "$wanted" <<<"$symbols"; then
    echo "$lib does not export $wanted"
    exit 1
  fi
done
echo "$lib exports $(wc -l <<<"$symbols") symbols, all of the API"
