#pragma once
// The agent's configuration: what it buffers where, where it delivers, how it
// logs, and which queries it runs. Read from YAML (agent.yaml), then adjusted
// by `--set key=value` overrides.
//
//   buffer: {dir: outpost-data/buffer, limit: 1GiB, sync: full, compact_threshold: 64MiB,
//            pending_budget: 64MiB,   # appends waiting in RAM; also the store's shutdown reserve
//            commit_interval_ms: 0}   # e.g. 250: a trickle of appends is committed at most this often
//   link: {type: file, path: outpost-data/delivered.jsonl}   # or {type: offline}
//   link: {type: collector, address: 127.0.0.1:4750, ca: ca.pem, cert: agent.pem, key: agent.key,
//          max_delay_ms: 0}   # e.g. 200: fresh rows wait that long to share an upload
//   log: {level: info, file: ""}
//   event_table:          # event artifacts, each a query on the events lane
//     - artifact: Linux.Events.ProcessCreation
//       parameters: {period: 1}
//       name: processes     # default: the artifact's name
//   queries:
//     - name: suspicious
//       source: {type: vql, query: "SELECT * FROM pslist() WHERE Name =~ 'nc'"}
//     - name: users
//       lane: results
//       source: {type: artifact, name: Linux.Sys.Users}
//     - name: heartbeat
//       lane: events
//       source: {type: clock, period_ms: 1000}
//       batch: {rows: 1000, bytes: 1MiB, delay_ms: 5}
//       max_in_flight: 2
//
// Every key is optional except a query's name; what is left out keeps its
// default. `link` may also be written as one word: offline, file or
// file:PATH. Sizes take the units of parse_size(); buffer.limit is at most
// 16TiB and a synthetic row_size at most 4032KiB. A source's keys depend on its
// type (clock: period_ms; synthetic: rate, row_size, max_rows, fail_after;
// vql: query, parameters; artifact: name, parameters). Event-table entries
// follow the queries, with the next ids; every name is unique. VQL and
// artifacts are checked by outpost-agent at start, with its query engine
// (the engine is not this library's).
// Unknown keys, duplicate keys, wrong types and out-of-range values are
// errors, reported as "<origin>: <key path>: <problem>".

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "actors/control.hpp"
#include "actors/pending_budget.hpp"
#include "persistence/buffer_store.hpp"
#include "schemas/codec.hpp"

namespace outpost {

// Where a query's rows come from: a VQL query, an artifact (by name), or a
// built-in test source.
struct SourceSpec {
  // host: rows the program embedding Outpost pushes (outpost::Agent::push)
  enum class Kind { synthetic, clock, vql, artifact, host } kind = Kind::clock;
  std::string query;  // vql: the query text
  std::string name;   // artifact: its name
  std::string definition;  // artifact: its YAML when the collector sent it; empty: the agent's own
  std::vector<std::pair<std::string, std::string>> parameters;  // vql, artifact: as text
  double rate = 0;          // synthetic: rows per second, 0 = as fast as accepted
  uint64_t row_size = 256;  // synthetic: bytes of the Data column
  uint64_t max_rows = 0;    // synthetic: stop after this many rows, 0 = never
  uint64_t fail_after = 0;  // synthetic: throw after this many rows (tests of restarts), 0 = never
  std::chrono::milliseconds period{1000};  // clock
  uint64_t queue_rows = 1000;  // host: rows pushed and not yet taken by the query, at most
};

struct QuerySpec {
  std::string name;      // required, unique, [A-Za-z0-9_.-]+
  uint64_t id = 0;       // assigned 1..N in file order if not given; unique, 0 < id < kFirstFlowId
  std::string artifact;  // defaults to name; same characters as a name
  schemas::Lane lane = schemas::Lane::EVENTS;  // "control" | "events" | "results" | "uploads"
  SourceSpec source;
  size_t batch_rows = 1000;                  // send a batch at this many rows,
  size_t batch_bytes = 1 << 20;              // or this many bytes,
  std::chrono::milliseconds batch_delay{5};  // or this long after its first row (a batch goes
                                             // at once when no append is in flight)
  unsigned max_in_flight = 2;                // unanswered appends before the query pauses (1..64)
};

struct LinkSpec {
  // host: the program that embeds Outpost receives the records (outpost::Sink)
  enum class Kind { offline, file, collector, host } kind = Kind::file;
  std::string path = "outpost-data/delivered.jsonl";  // file
  unsigned max_unacked = 4;  // host: batches of a lane handed over and not yet acknowledged
  // collector: TLS with a pinned CA unless `insecure`
  std::string host = "127.0.0.1";
  uint16_t port = 4750;
  // More collectors (`addresses: [...]` beyond the first, which is host:port):
  // after a failed attempt or a lost session the agent tries the next one.
  std::vector<std::pair<std::string, uint16_t>> alternates;
  std::string server_name;  // expected in the collector's certificate; default: host
  std::string ca, cert, key;
  bool insecure = false;
  std::string agent_id;     // sent only when insecure; with TLS the certificate names the agent
  std::chrono::milliseconds backoff_initial{1000};
  std::chrono::milliseconds backoff_cap{60000};
  // Fresh event and result rows wait up to this long to go in one upload
  // with the next: fewer uploads for a fleet's collector, at this much latency.
  std::chrono::milliseconds max_delay{0};
};

struct LogSpec {
  std::string level = "info";  // trace debug info warn error critical off
  std::string file;            // also log to this file (stderr always has the log); empty: none
};

// When the inspector warns (actors/warnings.hpp): each a time a condition must
// last, or a count, before it is worth a person's attention.
struct WarningThresholds {
  std::chrono::milliseconds mailbox_backlog{10000};  // a mailbox over kBacklogMessages this long
  std::chrono::milliseconds slow_handler{500};       // one message handled on a shared worker this long
  std::chrono::milliseconds backpressure{60000};     // a query or the buffer waiting for space this long
  std::chrono::milliseconds link_offline{300000};    // the link not delivering this long
  unsigned restarts = 3;                             // a query failing this often ...
  std::chrono::milliseconds restart_window{600000};  // ... within this time
  std::chrono::milliseconds recent{600000};          // a slow handling or a drop is warned about this long
};

// The agent's inspector endpoint (outpostctl's socket).
struct InspectorSpec {
  std::string socket = "outpost-data/inspector.sock";  // empty: no inspector
  // suspend, resume, restart, cancel, link reconnect, buffer compact, log
  // level; read-only when false
  bool control = false;
  WarningThresholds warnings;
  std::string metrics;          // host:port of the OpenMetrics listener (GET /metrics); empty: none
  bool metrics_remote = false;  // metrics may listen beyond loopback
};

inline persistence::StoreOptions default_store_options() {
  persistence::StoreOptions options;  // limit 1 GiB, sync full, compact at 64 MiB
  options.dir = "outpost-data/buffer";
  return options;
}

// Where kernel events come from (sensors.*).
struct SensorConfig {
  // "auto" (eBPF, else the netlink proc connector), "ebpf" or "proc_connector".
  std::string process_events = "auto";
  uint64_t ring_buffer = 1 << 20;  // eBPF's ring buffer: a power of two, 4KiB to 1GiB
};

struct AgentConfig {
  persistence::StoreOptions buffer = default_store_options();
  // buffer.pending_budget: bytes of appends that may wait in RAM for the
  // buffer (queries pause beyond it). The store is opened with the limit
  // plus this much, kept for shutdown so that the waiting appends are stored.
  uint64_t pending_budget = kDefaultPendingBudget;
  // buffer.commit_interval_ms: while appends trickle in, at most one commit
  // (and fsync) per this interval (BufferOptions::commit_interval); 0: off.
  std::chrono::milliseconds commit_interval{0};
  LinkSpec link;
  std::vector<QuerySpec> queries;  // none is fine: the agent runs no queries
  LogSpec log;
  InspectorSpec inspector;
  // Artifact definitions besides the built-in ones: directories (every
  // *.yaml below) or files; a file that does not load is logged and skipped.
  std::vector<std::string> artifact_paths;
  // VQL's execve() may run programs (vql.allow_execve); refused otherwise.
  bool allow_execve = false;
  SensorConfig sensors;
};

class ConfigError : public std::runtime_error {
 public:
  using runtime_error::runtime_error;
};

// Parses YAML text; `origin` (a file name) prefixes every error:
// "agent.yaml: queries[2].source.rate: expected a non-negative number, got \"fast\"".
// A YAML syntax error reads "agent.yaml: line 3, column 5: <yaml-cpp's message>".
AgentConfig parse_agent_config(const std::string& yaml_text, const std::string& origin);

// Reads and parses a file; an unreadable file is a ConfigError naming it.
AgentConfig load_agent_config(const std::string& path);

// What no single key can tell: checked once the file and every override are
// applied ("agent.yaml: link: a collector link needs ca, cert and key ...",
// "agent.yaml: buffer.limit: ... more address space than this process can
// reserve"). Reserves, then frees, the buffer's map of address space.
void check_agent_config(const AgentConfig& config, const std::string& origin);

// Applies one "key=value" override with a dotted key path: "buffer.limit=64MiB",
// "link=offline", "link=file:/tmp/x.jsonl", "log.level=debug", "buffer.sync=none".
// The value is taken literally (not parsed as YAML) and checked exactly as the
// same key in a file would be; errors have the origin "--set".
void apply_override(AgentConfig& config, const std::string& assignment);

// A commented YAML that parses into the defaults plus a heartbeat (VQL
// clock, every second) and two event artifacts: Linux.Events.ProcessCreation
// and Linux.Detection.Thumbdrives.List.
std::string default_agent_config_yaml();

// The query a collector's request runs: id = flow id, name "F.<flow id>".
// VQL and the engine's artifacts are left to the agent's engine to check.
// The test artifacts Outpost.Test.Clock (period_ms) and
// Outpost.Test.Synthetic (rate, row_size, max_rows, fail_after) are read
// here, their parameters checked like the same keys in a configuration.
// Throws ConfigError: "collect Outpost.Test.Clock: parameter.period_ms:
// expected ...".
QuerySpec collected_query(const CollectSpec& request, schemas::Lane lane);

// "1000", "1000B", "10kB", "5MB", "2GB", "1TB" (1000-based), "512KiB", "64MiB",
// "1GiB", "1TiB" (1024-based); a space before the unit is allowed. Throws
// std::invalid_argument on anything else, and on sizes beyond 64 bits.
uint64_t parse_size(const std::string& text);

}  // namespace outpost
