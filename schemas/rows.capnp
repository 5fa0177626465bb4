@0xb0a315e01c506373;
# Rows and the record envelope that the buffer stores and the link ships.
# A record is encoded once by its producer and travels unchanged.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("outpost::schema");

using Values = import "values.capnp";

# The largest record (an encoded Record message) any layer handles: a
# query's batch is cut before the row that would cross it, a row bigger than
# this alone is refused where it is produced, the buffer stores any record up
# to it (alone in a commit if need be), and the collector's upload and
# traversal limits are above it (checked in codec.cpp).
const maxRecordBytes :UInt64 = 4194304;  # 4 MiB

# Separate queues in the buffer, served by priority (control first).
enum Lane {
  control @0;   # urgent status and log messages
  events @1;    # monitoring (event query) rows
  results @2;   # collection rows
  uploads @3;   # file chunks
}

struct RowBatch {
  queryId @0 :UInt64;
  artifact @1 :Text;
  source @2 :Text;
  lane @3 :Lane;
  createdNs @4 :Int64;
  columns @5 :List(Text);               # once per batch
  rows @6 :List(List(Values.Value));    # each row lists values in column order
}

struct LogMessage {
  level @0 :Level;
  text @1 :Text;
  timeNs @2 :Int64;

  enum Level { trace @0; debug @1; info @2; warn @3; error @4; critical @5; }
}

struct UploadChunk {
  path @0 :Text;
  offset @1 :UInt64;
  data @2 :Data;
  eof @3 :Bool;
  totalSize @4 :UInt64;   # meaningful when eof
  sha256 @5 :Data;        # of the whole file, set when eof
}

struct QueryStatus {
  union {
    started @0 :Void;
    finished :group {
      rowCount @1 :UInt64;
      error @2 :Text;      # empty when the query succeeded
      bytes @7 :UInt64;    # of its rows' records
      durationNs @8 :Int64;
      outcome @9 :Outcome;
    }
    paused @3 :Void;
    resumed @4 :Void;
    droppedAtSource @5 :UInt64;   # events a paused query missed
  }
  # A collection's start and end: the flow and its artifact. Such records
  # belong to no query (Record.queryId 0), so that a cancel's purge of the
  # flow's rows keeps them.
  flowId @6 :UInt64;
  artifact @10 :Text;

  enum Outcome { finished @0; failed @1; cancelled @2; }
}

struct Record {
  queryId @0 :UInt64;   # 0 for records that belong to no query
  createdNs @1 :Int64;
  union {
    rowBatch @2 :RowBatch;
    log @3 :LogMessage;
    uploadChunk @4 :UploadChunk;
    queryStatus @5 :QueryStatus;
  }
}
