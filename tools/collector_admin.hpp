#pragma once
// outpost-collector's admin commands: they talk to the running collector over
// its unix socket (protocol.capnp's Admin), except `tail`, `flows` and
// `collect --wait`, which read the data directory's files (collector_files.hpp),
// and `export`, which reads a JetStream stream (jetstream_export.hpp).

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

#include "net/collector/nats_link.hpp"

namespace outpost::admin {

struct AdminOptions {
  std::string datadir;
  std::string socket;  // empty: <datadir>/.collector/admin.sock
};

std::string default_socket(const std::string& datadir);

// What the subcommands' arguments are parsed into.
struct CommandArgs {
  std::string agent, artifact;
  std::string vql;                   // collect: instead of the artifact's query
  std::vector<std::string> params;   // collect: name=value
  std::vector<std::string> param_files;  // collect: name=FILE, the file's content as the value
  std::vector<std::string> entries;  // event-table: Artifact[,name=value...]
  std::vector<std::string> artifact_files;  // collect, event-table: definitions sent with the request
  std::vector<std::string> vql_entries;     // event-table: Name=VQL
  uint64_t flow = 0;
  size_t lines = 10;
  bool json = false, follow = false;
  bool new_agent = false;            // collect, event-table: an agent not yet met is no typo
  bool wait = false;                 // collect: follow the flow to its end
  unsigned timeout_s = 0;            // collect --wait: give up after this long (0: never)
  std::string what = "status";       // inspect: what to show
  struct Trace {                     // inspect AGENT trace: as outpostctl trace
    std::vector<uint64_t> actors;
    unsigned seconds = 5;
    uint64_t count = 10000, rate = 20000;
    bool payloads = false;
    std::string output = "trace.json";
  } trace;
  struct Export {                    // export --from jetstream --to jsonl DIR
    std::string from, to, dir;
    std::string nats = "nats://127.0.0.1:4222", stream = "OUTPOST", prefix = "outpost";
    net::NatsLink link;  // its credentials (the servers come from `nats`)
  } exp;
  std::function<int(const AdminOptions&)> run;  // set by the command given; returns its exit code
};

// Adds the subcommands to `app`; parsing one sets args.run.
void add_commands(CLI::App& app, CommandArgs& args);

}  // namespace outpost::admin
