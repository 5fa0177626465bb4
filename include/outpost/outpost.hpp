#pragma once
// Outpost as a library: an agent (its queries, its durable buffer and its
// link) inside a host program. No type of a library Outpost is built on (CAF,
// Cap'n Proto, kj, LMDB, spdlog) appears here, so a host that uses other
// versions of them can include this header.
//
// Threads: every member of Agent may be called from any thread, concurrently
// with the others. What each one may block on is said next to it. An Agent
// holds no process-wide state: several run side by side in one process, each
// with its own buffer directory.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "outpost/export.hpp"
#include "outpost/plugins.hpp"
#include "outpost/values.hpp"

namespace outpost {

// What a call came to, for the caller to branch on; Result::message says
// what and where.
enum class Errc : int {
  ok = 0,
  invalid_config,   // the configuration, or a query in it, was refused
  invalid_query,    // run_query/run_artifact: the VQL, artifact or a parameter was refused
  query_failed,     // run_query/run_artifact: the query failed while it ran
  io,               // the buffer (a directory, a file, the disk) could not be opened
  already_started,  // start() on an agent that was started before (an Agent runs once)
  timeout,          // stop(): the ordered shutdown did not finish in time and was forced
  failed,           // the agent ended by itself after a failure (for example its link's)
  would_block,      // push(): the query holds as many rows as it may; the buffer is at its limit
  unknown_query,    // push(), wait_writable(): no query of that name has a host source
  not_running,      // push(), wait_writable(): the agent is not running (yet, or any more)
  too_large,        // push(): the row alone is bigger than a record may be
};

// The name of a code ("invalid_config", ...).
OUTPOST_API const char* to_string(Errc code);

struct Result {
  Errc code = Errc::ok;
  std::string message;  // empty when ok
  explicit operator bool() const { return code == Errc::ok; }
};

// --- Rows from the host: a query whose `source: {type: host}` ---------------

// Called on one of the agent's threads when a host query that answered
// would_block can take rows again. It must not block; it may push().
using WritableCallback = std::function<void(const std::string& query)>;

// --- The host as the link: the configuration's `link: host` ---------------

// One record of the buffer, as the host's sink receives it.
struct SinkRecord {
  uint64_t seq = 0;       // its place in its lane: increasing, never reused (also across restarts)
  uint64_t query_id = 0;  // the query that made it
  uint64_t rows = 0;      // its rows; 0 for a record that is not rows (a log line, an upload chunk)
  std::string json;       // JSON lines as a file link writes them: one per row, else one
};

// Records of one lane, handed over together, in seq order.
struct SinkBatch {
  std::string lane;  // "control", "events", "results" or "uploads"
  std::vector<SinkRecord> records;
};

// The host's word that a batch is stored where it keeps it. Any thread,
// inside the sink's call or later; the first call counts, later ones do
// nothing. The buffer deletes a batch once it and every earlier batch of its
// lane are acknowledged; a batch not acknowledged when the agent stops (or
// its process dies) comes again at the next start, with the same seqs.
// After the agent stopped a call does nothing. Blocks on nothing.
class SinkAck {
 public:
  OUTPOST_API void operator()() const;

  struct State;  // api/host_link.hpp
  OUTPOST_API explicit SinkAck(std::shared_ptr<State> state);

 private:
  std::shared_ptr<State> state_;
};

// Receives each batch on the agent's link thread (one thread, batches of a
// lane in seq order). It may block: only the link waits. At most
// `link.max_unacked` batches of a lane are unacknowledged at a time; then the
// lane waits, the buffer fills and the queries pause at its limit. A sink
// that throws is an error of the link (logged, counted in its status): the
// same batch comes again a second later.
using Sink = std::function<void(const SinkBatch& batch, SinkAck ack)>;

// --- The agent's log ------------------------------------------------------

enum class LogLevel { trace, debug, info, warn, error, critical };

struct LogLine {
  LogLevel level = LogLevel::info;
  int64_t time_ns = 0;  // wall clock, nanoseconds since the Unix epoch
  uint64_t thread = 0;  // the OS thread that logged it
  std::string message;
};

// Receives the agent's log lines at or above its `log.level` (which
// `outpostctl log-level` changes), one call at a time, on the thread that
// logs: one of the agent's, or a host thread inside a call to the Agent. It
// must not call the Agent; what it throws is dropped.
using LogSink = std::function<void(const LogLine& line)>;

struct AgentOptions {
  std::string config_yaml;               // as outpost-agent's --config file; empty: the built-in one
  std::string origin = "configuration";  // names the configuration in errors (a file's path)
  std::vector<std::string> overrides;    // "key=value" each, as outpost-agent's --set
  Sink sink;                             // the link, when the configuration says `link: host`
  WritableCallback on_writable;          // optional: a host query takes rows again
  LogSink log_sink;                      // the agent's log; empty: stderr (and `log.file` when set)
  unsigned worker_threads = 0;           // threads running the actors; 0: one per core (at least 2)
  // The host's own VQL plugins and functions (outpost/plugins.hpp), for the
  // configured queries, the collector's and run_query(). A name that is not
  // an identifier, is taken twice or is a built-in's: start(), check() and
  // run_query() refuse (invalid_config, invalid_query).
  std::vector<PluginDef> plugins;
  std::vector<FunctionDef> functions;
};

using Parameters = std::vector<std::pair<std::string, std::string>>;

// A row as one JSON object. Called on the thread that runs the query; return
// false to end the query there.
using RowCallback = std::function<bool(const std::string& json)>;

struct QueryOptions {
  Parameters parameters;  // the query's or artifact's parameters, name and value
  uint64_t max_rows = 0;  // end after this many rows; 0: when the query ends
};

class Agent {
 public:
  // Takes the options; checks nothing yet (start() does). Blocks on nothing.
  OUTPOST_API explicit Agent(AgentOptions options);
  // stop() with its default deadline, unless stopped already. Not on one of
  // the agent's own threads (a host callback), where it cannot wait.
  OUTPOST_API ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Checks the configuration (every query in it), opens the buffer and
  // starts the actors, the link and (when configured) the inspector and
  // metrics listeners. Blocks while the buffer opens (a damaged one is
  // salvaged first). invalid_config or io leave nothing running, and the
  // agent stopped; already_started on a second call, also after stop().
  OUTPOST_API Result start();

  // Checks the configuration as start() does (every query's VQL or
  // artifact, the link's certificates), without starting: ok or
  // invalid_config. Blocks on nothing but reading the certificates.
  OUTPOST_API Result check() const;

  // Ordered shutdown: the queries hand over their last rows, the buffer
  // commits them, then every actor and thread of the agent ends. Idempotent;
  // before start() it only makes start() refuse. Waits up to `deadline`,
  // then forces the end (rows already committed stay in the buffer; rows a
  // query had not handed over are lost) and answers timeout. From one of the
  // agent's own threads (a host callback) it only asks, and returns ok at
  // once; the destructor or a later stop() or wait() waits.
  OUTPOST_API Result stop(std::chrono::milliseconds deadline = std::chrono::seconds(30));

  // Asks for the ordered shutdown and returns at once.
  OUTPOST_API void request_stop();

  // Blocks until the agent has ended (by stop(), request_stop() or a
  // failure) and its threads are gone: ok, or failed with the reason. At
  // once when it never started.
  OUTPOST_API Result wait();

  // The agent's actors with their counters and their own status: a JSON
  // array with one object per actor, the columns of the VQL plugin actors()
  // (Id, Kind, Name, Parent, State, Mailbox, Handled, RowsIn, RowsOut, ...,
  // Status); "[]" when not running. Waits up to 3 s for the actors' answers.
  OUTPOST_API std::string status_json() const;

  // Runs VQL once and hands each row to `on_row` on the calling thread,
  // until the query ends, max_rows, or on_row answers false. In a running
  // agent it shares the agent's sensors (and actors() lists its actors);
  // otherwise it runs on its own threads, started and ended with the call.
  // An event query runs until on_row answers false (or request_stop()).
  OUTPOST_API Result run_query(const std::string& vql, const RowCallback& on_row, const QueryOptions& options = {});
  // The same for a built-in artifact, by name.
  OUTPOST_API Result run_artifact(const std::string& name, const RowCallback& on_row, const QueryOptions& options = {});

  // Hands a row to the query named `query`, whose source is the host's.
  // The row is encoded on the calling thread; blocks on nothing else. ok:
  // the agent holds the row; it reaches the buffer as soon as the query's
  // last append is answered, and an ordered stop commits it (a crash before
  // that loses it, as it loses rows a query made). would_block: the query
  // holds `queue_rows` rows it could not yet hand to the buffer, which is at
  // its limit (nothing else makes a query wait): the row was not taken;
  // wait_writable() or on_writable says when to push again. too_large,
  // unknown_query, not_running.
  OUTPOST_API Result push(const std::string& query, const Row& row);

  // Blocks until `query` takes rows again (ok), the agent ends (not_running)
  // or `timeout` passes (would_block). unknown_query.
  OUTPOST_API Result wait_writable(const std::string& query, std::chrono::milliseconds timeout);

  // The built-in configuration (what an empty config_yaml means), as YAML.
  OUTPOST_API static std::string default_config_yaml();

  struct Impl;  // api/agent_impl.hpp

 private:
  friend struct AgentAccess;  // Outpost's own tools (api/agent_impl.hpp)
  std::unique_ptr<Impl> impl_;
};

}  // namespace outpost
