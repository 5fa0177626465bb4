@0xc8be1211c3412033;
# The agent <-> collector protocol: Cap'n Proto RPC over TLS (two-party).
# The agent calls Collector.hello and then uploads through its Session; the
# collector calls back through the AgentController the agent passed in.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("outpost::protocol");

using Rows = import "rows.capnp";

# A peer whose major version differs is refused; minors are compatible.
const majorVersion :UInt16 = 1;
const minorVersion :UInt16 = 0;

# What a collector accepts in one upload; a peer that sends more is cut off.
const maxRecordsPerUpload :UInt32 = 1000;
const maxUploadBytes :UInt64 = 33554432;  # 32 MiB

struct AgentInfo {
  majorVersion @0 :UInt16;
  minorVersion @1 :UInt16;
  hostname @2 :Text;
  software @3 :Text;   # "outpost-agent <version>"
  claimedId @4 :Text;  # used only when the collector runs without TLS (--insecure);
                       # with TLS the identity is the client certificate's common name
}

struct LaneSeq {
  lane @0 :Rows.Lane;
  seq @1 :UInt64;
}

# One buffered record as the agent's buffer holds it: `data` is the encoded
# Record message (rows.capnp), byte for byte.
struct StoredRecord {
  seq @0 :UInt64;
  data @1 :Data;
}

struct CollectRequest {
  artifact @0 :Text;
  vql @1 :Text;                  # empty: the artifact's own query
  parameters @2 :List(Parameter);
  flowId @3 :UInt64;             # the collector's, unique per collector; the agent's query id

  struct Parameter {
    name @0 :Text;
    value @1 :Text;
  }
}

interface Collector {
  # Opens a session. `resumeFrom` holds, per lane, the highest seq the
  # collector has durably stored for this agent: the agent acks through it
  # and sends what follows.
  hello @0 (agent :AgentInfo, controller :AgentController)
       -> (session :Session, resumeFrom :List(LaneSeq), majorVersion :UInt16,
           minorVersion :UInt16, agentId :Text);
}

interface Session {
  # Records of one lane in ascending seq order, all above `after`: the lane's
  # mark as the agent knows it (resumeFrom, or the last seq of its previous
  # upload). Answers once they are durably stored (or were already): the
  # agent may delete everything through `storedThrough`. Several uploads may
  # be in flight; they are stored in call order. An upload whose `after` lies
  # beyond the collector's mark (an earlier one failed) is refused: the agent
  # reconnects and resumes.
  upload @0 (lane :Rows.Lane, after :UInt64, records :List(StoredRecord))
        -> (storedThrough :UInt64);
}

interface AgentController {
  # Runs a collection on the agent; its rows come back on the results lane.
  collect @0 (request :CollectRequest) -> (flowId :UInt64);
  # Stops a collection and deletes its rows still buffered on the agent.
  cancel @1 (flowId :UInt64) -> (purgedRecords :UInt64);
  # Replaces the event queries the agent runs (entries whose flowId already
  # runs go on). Every entry is checked before anything changes.
  setEventTable @2 (artifacts :List(CollectRequest)) -> ();
  # The agent's status as JSON.
  status @3 () -> (json :Text);
}

# --- The collector's local admin interface, served on the unix socket
# <datadir>/admin.sock (mode 0600) to `outpost-collector <command>`.

struct AgentSummary {
  id @0 :Text;
  connected @1 :Bool;
  peer @2 :Text;              # address of its connection, when connected
  connectedNs @3 :Int64;
  lastUploadNs @4 :Int64;     # 0: never
  marks @5 :List(LaneSeq);    # what the collector has stored, per lane
  eventTable @6 :List(CollectRequest);
  pendingRequests @7 :UInt32; # waiting for the agent to connect
}

interface Admin {
  listAgents @0 () -> (agents :List(AgentSummary));
  # Sent at once when the agent is connected (an error of the agent's comes
  # back here); otherwise kept, durably, and sent when it connects.
  collect @1 (agent :Text, request :CollectRequest) -> (flowId :UInt64, queued :Bool);
  cancel @2 (agent :Text, flowId :UInt64) -> (purgedRecords :UInt64, queued :Bool);
  # Stored, and sent to the agent now and at every connection.
  setEventTable @3 (agent :Text, artifacts :List(CollectRequest)) -> (queued :Bool);
  agentStatus @4 (agent :Text) -> (json :Text);
}

# How the collector keeps an agent's requests in its LMDB environment.
struct PendingRequest {
  union {
    collect @0 :CollectRequest;
    cancel @1 :UInt64;        # flow id
  }
}

struct EventTable {
  entries @0 :List(CollectRequest);
}
