@0xc8be1211c3412033;
# The agent <-> collector protocol: Cap'n Proto RPC over TLS (two-party).
# The agent calls Collector.hello and then uploads through its Session; the
# collector calls back through the AgentController the agent passed in.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("outpost::protocol");

using Rows = import "rows.capnp";
using Insp = import "inspector.capnp";

# A peer whose major version differs is refused; minors are compatible.
const majorVersion :UInt16 = 1;
const minorVersion :UInt16 = 1;  # 1: CollectRequest.definition

# What a collector accepts in one upload; a peer that sends more is cut off.
const maxRecordsPerUpload :UInt32 = 1000;
const maxUploadBytes :UInt64 = 33554432;  # 32 MiB

# Flow ids (CollectRequest.flowId) start here, above every id an agent's
# configuration may give its queries.
const firstFlowId :UInt64 = 4294967296;  # 2^32

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

# One record of an upload: its seq and the encoded Record message
# (rows.capnp), byte for byte as the agent buffered it.
struct UploadRecord {
  seq @0 :UInt64;
  data @1 :Data;
}

struct CollectRequest {
  artifact @0 :Text;
  vql @1 :Text;                  # empty: the artifact's own query
  parameters @2 :List(Parameter);
  # The agent's query id. The collector never gives one out twice, even
  # after its state directory is reset: each is at least 2^32 plus the wall
  # clock in microseconds since 1970 when it is given out, and above the one
  # before (the last is kept in its LMDB meta). So ids of a reset collector
  # start above every id it gave out before, unless its clock went back.
  flowId @3 :UInt64;
  # 16 random bytes the collector draws when it creates the request and
  # keeps with it while it is queued: a request sent again (its answer lost,
  # or the collector restarted before it heard it) carries the same id, and
  # the agent runs it once (it remembers its running queries and its most
  # recent ended flows). Empty from an older collector: the agent then takes
  # a request whose flow id is a collection still running as sent again.
  requestId @4 :Data;
  # An artifact definition (YAML, as in a definitions file) sent with the
  # request: the agent checks it as it checks a file of its own and runs it
  # in place of any artifact of that name it has. Its name is `artifact`.
  # Empty: the agent's own artifact. An agent of minor version 0 does not
  # know the field; the collector does not send one to it.
  definition @5 :Text;

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
  upload @0 (lane :Rows.Lane, after :UInt64, records :List(UploadRecord))
        -> (storedThrough :UInt64);
}

interface AgentController {
  # Runs a collection on the agent; its rows come back on the results lane.
  collect @0 (request :CollectRequest) -> (flowId :UInt64);
  # Stops a collection and deletes its rows still buffered on the agent.
  # Refused (an error) for a configured query or an event query (only the
  # agent's configuration, or the event table, stops those), and for a flow
  # the agent does not know: not running, not among its recent ended flows,
  # and no rows of it buffered ("no such flow N").
  cancel @1 (flowId :UInt64) -> (purgedRecords :UInt64, outcome :CancelOutcome);
  # Replaces the event queries the agent runs (entries whose flowId already
  # runs go on). Every entry is checked before anything changes.
  setEventTable @2 (artifacts :List(CollectRequest)) -> ();
  # The agent's status as JSON.
  status @3 () -> (json :Text);
  # The agent's inspector (inspector.capnp), read-only: its control calls are refused.
  inspector @4 () -> (inspector :Insp.Inspector);
}

enum CancelOutcome {
  stopped @0;          # it was running: stopped, then its buffered rows deleted
  alreadyFinished @1;  # it had ended: its buffered rows deleted
  notRunning @2;       # not known to this run of the agent (from before it restarted);
                       # its buffered rows deleted
  notSent @3;          # (Admin) still queued at the collector: dropped, it never ran
}

# --- The collector's local admin interface, served on the unix socket
# <datadir>/.collector/admin.sock (mode 0600; --admin-socket moves it) to `outpost-collector <command>`.

struct AgentSummary {
  id @0 :Text;
  connected @1 :Bool;
  peer @2 :Text;              # address of its connection, when connected
  connectedNs @3 :Int64;
  lastUploadNs @4 :Int64;     # 0: never
  marks @5 :List(LaneSeq);    # what the collector has stored, per lane
  eventTable @6 :List(CollectRequest);
  pendingRequests @7 :UInt32; # waiting for the agent to connect
  collector @8 :Text;         # connected to another collector of the fleet (jetstream): its
                              # address; empty when connected to the one asked
}

interface Admin {
  listAgents @0 () -> (agents :List(AgentSummary));
  # Sent at once when the agent is connected (an error of the agent's comes
  # back here); otherwise kept, durably, and sent when it connects. An agent
  # this collector has never met (not connected, never uploaded, nothing
  # queued for it) is refused unless `newAgent`: a mistyped name would
  # otherwise queue requests for nobody. The request's flowId and requestId
  # are the collector's: what the caller sets there is ignored.
  collect @1 (agent :Text, request :CollectRequest, newAgent :Bool) -> (flowId :UInt64, queued :Bool);
  # Refused for an agent never met and for a flow id this collector never
  # gave out; the agent's own refusals (see AgentController.cancel) come back.
  cancel @2 (agent :Text, flowId :UInt64)
         -> (purgedRecords :UInt64, queued :Bool, outcome :CancelOutcome);
  # Stored, and sent to the agent now and at every connection.
  setEventTable @3 (agent :Text, artifacts :List(CollectRequest), newAgent :Bool) -> (queued :Bool);
  agentStatus @4 (agent :Text) -> (json :Text);
  # A connected agent's inspector (read-only), through this collector.
  inspect @5 (agent :Text) -> (inspector :Insp.Inspector);
  # Where this collector stores rows: "jsonl" (files under its datadir) or
  # "jetstream", then also the stream the commands that read rows read.
  storage @6 () -> (backend :Text, stream :StreamAccess);
}

# How to read a jetstream collector's stream: its own NATS settings (files
# named as it was given them).
struct StreamAccess {
  servers @0 :List(Text);
  stream @1 :Text;
  subjectPrefix @2 :Text;   # an agent's records are under <prefix>.<agent>.>
  ca @3 :Text;
  cert @4 :Text;
  key @5 :Text;
  creds @6 :Text;
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

# How the jetstream backend keeps an agent's queued requests: one entry of
# its key-value bucket per agent, replaced by compare-and-set.
struct RequestQueue {
  nextKey @0 :UInt64;        # the key the next request gets
  entries @1 :List(Entry);   # oldest first
  struct Entry {
    key @0 :UInt64;
    request @1 :Data;        # a PendingRequest, encoded
  }
}
