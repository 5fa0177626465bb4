#pragma once
// Real collector and agent processes on 127.0.0.1 over TLS, with their own
// certificates, data directories and logs, for end-to-end tests.

#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <sstream>

#include "schemas/json_reader.hpp"
#include "tests/process_util.hpp"
#include "tests/temp_dir.hpp"

namespace outpost {
namespace fs = std::filesystem;
using namespace outpost::testing;

struct EndToEnd : ::testing::Test {
  TempDir tmp;
  Processes procs;
  fs::path certs = tmp.path("certs");
  fs::path data = tmp.path("collector");
  fs::path agent_log = tmp.path("agent.log");
  fs::path collector_log;
  uint16_t port = 0;
  std::vector<std::string> collector_args;  // more of them, after the usual ones
  pid_t collector = -1;
  int collector_starts = 0;

  EndToEnd() {
    EXPECT_EQ(wait_exit(spawn({OUTPOST_CERTS, "init", certs.string()}, tmp.path("certs.log"))), 0);
    EXPECT_EQ(wait_exit(spawn({OUTPOST_CERTS, "agent", certs.string(), "agent-1"}, tmp.path("certs.log"))), 0);
    EXPECT_EQ(wait_exit(spawn({OUTPOST_CERTS, "agent", certs.string(), "expired", "--expired"},
                              tmp.path("certs.log"))),
              0);
    EXPECT_EQ(wait_exit(spawn({OUTPOST_CERTS, "ca-only", tmp.path("other-ca").string()}, tmp.path("certs.log"))), 0);
  }

  std::string cert(const std::string& name) const { return (certs / name).string(); }

  // Starts the collector (on `port`, or any free one the first time) and
  // waits until it listens.
  void start_collector() {
    collector_log = tmp.path("collector-" + std::to_string(++collector_starts) + ".log");
    collector = spawn_collector(data, port, collector_log);
  }

  // A collector on `datadir` and `at` (0: any free port, then set), logging
  // to `log`; waits until it listens (-1 and a failure if it does not).
  pid_t spawn_collector(const fs::path& datadir, uint16_t& at, const fs::path& log) {
    std::vector<std::string> args{OUTPOST_COLLECTOR, "--datadir", datadir.string(), "--listen",
                                  "127.0.0.1:" + std::to_string(at), "--ca", cert("ca.pem"),
                                  "--cert", cert("collector.pem"), "--key", cert("collector.key")};
    args.insert(args.end(), collector_args.begin(), collector_args.end());
    pid_t pid = procs.add(spawn(args, log));
    std::smatch m;
    std::string text;  // outlives the lambda: m points into it
    bool listening = eventually([&] {
      text = slurp(log);
      return std::regex_search(text, m, std::regex("listening on port (\\d+)"));
    });
    EXPECT_TRUE(listening) << slurp(log);
    if (!listening) return -1;
    at = static_cast<uint16_t>(std::stoi(m[1]));
    return pid;
  }

  struct AgentOptions {
    std::string name = "agent-1";
    std::string ca;           // default: our CA
    uint16_t target = 0;      // default: the collector's port
    std::vector<uint16_t> targets;  // several collectors (addresses: [...]), instead of target
    std::string limit = "64MiB";
    std::string queries;      // YAML list; default: query "syn" with the given rows and rate
    bool control = false;     // the inspector takes control actions
  };

  pid_t start_agent(uint64_t rows, uint64_t rate) { return start_agent(rows, rate, AgentOptions{}); }
  pid_t start_agent(uint64_t rows, uint64_t rate, const AgentOptions& o) {
    const std::string& name = o.name;
    const std::string& ca = o.ca;
    fs::path config = tmp.path("agent.yaml");
    std::ofstream(config)
        << "buffer: {dir: " << tmp.path("buf").string() << ", limit: " << o.limit << ", sync: full}\n"
        << "link: {type: collector, " << addresses(o) << ", ca: "
        << (ca.empty() ? cert("ca.pem") : ca) << ", cert: " << cert(name + ".pem")
        << ", key: " << cert(name + ".key") << ", backoff_initial_ms: 50, backoff_cap_ms: 400}\n"
        << "log: {level: info, file: " << agent_log.string() << "}\n"
        << "inspector: {socket: " << tmp.path("inspector.sock").string() << (o.control ? ", control: true" : "")
        << "}\n"
        << "queries:\n"
        << (!o.queries.empty() ? o.queries
                               : "  - name: syn\n    source: {type: synthetic, rate: " +
                                     std::to_string(rate) + ", max_rows: " + std::to_string(rows) +
                                     ", row_size: 64}\n    batch: {rows: 200, delay_ms: 5}\n");
    return procs.add(spawn({OUTPOST_AGENT, "--config", config.string()}));
  }

  std::string addresses(const AgentOptions& o) const {
    if (o.targets.empty()) return "address: 127.0.0.1:" + std::to_string(o.target ? o.target : port);
    std::string list;
    for (auto p : o.targets) list += (list.empty() ? "" : ", ") + std::string("127.0.0.1:") + std::to_string(p);
    return "addresses: [" + list + "]";
  }

  // Runs `outpost-collector <args> --datadir <data>`: its exit code and output.
  std::pair<int, std::string> command(std::vector<std::string> args) {
    fs::path out = tmp.path("command.out");
    fs::remove(out);
    args.insert(args.begin(), OUTPOST_COLLECTOR);
    args.insert(args.end(), {"--datadir", data.string()});
    int code = wait_exit(spawn(args, out));
    return {code, slurp(out)};
  }

  // `outpost-collector collect agent-1 Outpost.Test.Synthetic -p P... --wait`
  // through `datadir`'s collector: its exit code; the rows (stdout) and the
  // flow's start and end (stderr) in `out` and `err`.
  int collect_wait(const fs::path& datadir, const std::vector<std::string>& params, std::string& out,
                   std::string& err) {
    std::vector<std::string> args = {OUTPOST_COLLECTOR, "collect", "agent-1", "Outpost.Test.Synthetic"};
    for (auto& p : params) args.insert(args.end(), {"-p", p});
    args.insert(args.end(), {"--wait", "--timeout", "60", "--datadir", datadir.string()});
    fs::path o = tmp.path("wait.out"), e = tmp.path("wait.err");
    int code = wait_exit(spawn_to(args, o, e));
    out = slurp(o);
    err = slurp(e);
    return code;
  }

  // What `flows --json` printed, by flow id.
  static std::map<uint64_t, schemas::Json> flows_by_id(const std::string& listed) {
    std::map<uint64_t, schemas::Json> flows;
    std::istringstream lines(listed);
    for (std::string line; std::getline(lines, line);) {
      auto j = schemas::Json::parse(line);
      flows[j["flow"].u()] = j;
    }
    return flows;
  }

  // The Seq column of every row the collector stored for an artifact, in file order.
  std::vector<uint64_t> delivered(const std::string& artifact = "syn") const {
    std::vector<uint64_t> seqs;
    fs::path dir = data / "agent-1" / artifact;
    if (!fs::exists(dir)) return seqs;
    std::vector<fs::path> files;
    for (auto& e : fs::directory_iterator(dir)) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    static const std::regex seq("\"Seq\":(\\d+)");
    for (auto& f : files) {
      std::ifstream in(f);
      for (std::string line; std::getline(in, line);) {
        std::smatch m;
        if (std::regex_search(line, m, seq)) seqs.push_back(std::stoull(m[1]));
      }
    }
    return seqs;
  }

  static std::vector<uint64_t> one_to(uint64_t n) {
    std::vector<uint64_t> v(n);
    for (uint64_t i = 0; i < n; ++i) v[i] = i + 1;
    return v;
  }
};

}  // namespace outpost
