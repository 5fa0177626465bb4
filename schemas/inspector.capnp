@0xf08be52cc5403c5c;
# The agent's inspector: Cap'n Proto RPC (two-party) on a unix socket
# (inspector.socket in the agent's configuration, mode 0600), which
# `outpostctl` calls. Every call is answered from counters the actors keep
# anyway, or within a few seconds; the client puts a timeout on each.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("outpost::inspector");

# Bumped when a call or a field changes meaning; hello refuses another.
const version :UInt32 = 1;

struct ActorInfo {
  id @0 :UInt64;
  kind @1 :Text;           # buffer, buffer-reader, link, net-link, supervisor, waker, query, sensor
  name @2 :Text;           # a query's name, a sensor's key; empty for the others
  parent @3 :UInt64;       # the actor that spawned it; 0: the agent's top level
  state @4 :Text;          # running, waiting-for-space, sleeping, suspended, offline, backing-off, handing-over
  stateForNs @5 :Int64;
  mailbox @6 :UInt64;      # messages waiting
  handled @7 :UInt64;
  handlingNs @8 :UInt64;   # total time in its handlers
  handlingMaxNs @9 :UInt64;
  busyForNs @10 :Int64;    # its current handler has run this long; 0: idle
  rowsOut @11 :UInt64;     # rows passed on: appended by a query, read from the buffer, sent by a link
  bytesIn @12 :UInt64;     # encoded records that reached it: appended to the buffer
  bytesOut @13 :UInt64;    # encoded records passed on, as rowsOut
  dropped @14 :UInt64;
  lastError @15 :Text;
  lastErrorNs @16 :Int64;  # wall clock; 0: none
  startNs @17 :Int64;      # wall clock
  detached @18 :Bool;      # on a thread of its own
  status @19 :Text;        # its own status (kind-specific fields) as JSON; empty if it did not answer in time
  handlingHistogram @20 :List(UInt64);  # log2 ns buckets, while watched (empty otherwise)
  mailboxHistogram @21 :List(UInt64);
  rowsIn @22 :UInt64;      # rows that reached it, as bytesIn
}

struct ActorExit {
  id @0 :UInt64;
  parent @1 :UInt64;
  kind @2 :Text;
  name @3 :Text;
  reason @4 :Text;         # empty: it ended normally
  atNs @5 :Int64;
  handled @6 :UInt64;
}

struct Warning {
  kind @0 :Text;
  actor @1 :UInt64;
  actorName @2 :Text;
  evidence @3 :Text;
  sinceNs @4 :Int64;       # wall clock; 0: unknown
}

struct TraceEvent {
  actor @0 :UInt64;
  sender @1 :UInt64;
  flow @2 :UInt64;
  type @3 :Text;
  enqueuedNs @4 :Int64;    # monotonic; 0: unknown
  startNs @5 :Int64;
  durationNs @6 :Int64;
  bytes @7 :UInt64;        # of the records the message carried
  payload @8 :Text;        # those records as JSON lines (cut at 4 KiB), when the trace asked for payloads
}

enum Action {
  suspend @0;    # target: a query's name or id
  resume @1;
  restart @2;
  logLevel @3;   # target: trace, debug, info, warn, error, critical, off
  cancel @4;     # target: a query; it stops and its buffered rows are deleted
  reconnect @5;  # the link connects again at once; no target
  compact @6;    # the buffer's file is rewritten without its free pages; no target
}

interface Inspector {
  hello @0 (version :UInt32) -> (version :UInt32, pid :UInt32, control :Bool, startNs :Int64, agent :Text);
  # startNs: when the agent's actor system started (wall clock).
  # Every live actor, and the last ones that exited. withStatus: also each one's own status
  # (asks every actor; those that do not answer within the call's time have none).
  actors @1 (withStatus :Bool) -> (actors :List(ActorInfo), exits :List(ActorExit), nowNs :Int64);
  warnings @2 () -> (warnings :List(Warning));
  # Log lines after sequence number `after` (0: every line kept, the last 1000), at most `max`.
  logs @3 (after :UInt64, max :UInt32) -> (lines :List(Text), last :UInt64);
  # Histograms on for this many seconds (at most 3600), or until this connection ends.
  watch @4 (seconds :UInt32) -> ();
  # Records handled messages until maxEvents, or a second with more than maxPerSecond, or the
  # deadline: whichever comes first ends it. Empty actors: all.
  trace @5 (actors :List(UInt64), maxEvents :UInt64, maxPerSecond :UInt64, seconds :UInt32, payloads :Bool)
        -> (events :List(TraceEvent), endedBy :Text);
  # Refused unless the agent's configuration has inspector.control: true.
  control @6 (action :Action, target :Text) -> (result :Text);
}
