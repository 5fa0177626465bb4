// The fleet as the step names it: a three-node JetStream cluster (R=3), two
// collectors and 20 real agents, each knowing both collectors; a NATS
// node, a collector and some agents are killed with -9, twice over, while
// rows flow. Every record an agent buffered ends in the stream exactly
// once, in order (a killed agent runs its query again from row 1 when it
// restarts: a new run of new records).

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <tuple>

#include "tests/e2e_fixture.hpp"
#include "tests/nats_cluster.hpp"

namespace outpost {
namespace {

constexpr int kAgents = 20;
constexpr uint64_t kRows = 1500;  // per agent, at 100 rows/s: about 15 s of rows

struct FleetKill : EndToEnd {
  std::unique_ptr<NatsCluster> nats;
  fs::path data_b = tmp.path("collector-b");
  uint16_t port_b = 0;
  pid_t collector_b = -1;
  std::vector<pid_t> agents = std::vector<pid_t>(kAgents, -1);

  void SetUp() override {
    ASSERT_TRUE(NatsCluster::available()) << kNatsServer << " is missing: scripts/install-deps.sh installs it";
    nats = std::make_unique<NatsCluster>(tmp, 3);
    nats->start_all();
    collector_args = {"--storage", "jetstream", "--nats", nats->urls_joined(), "--nats-replicas", "3"};
    start_collector();
    collector_b = spawn_collector(data_b, port_b, tmp.path("collector-b-1.log"));
    ASSERT_GT(collector_b, 0);
    for (int i = 0; i < kAgents; ++i)
      ASSERT_EQ(wait_exit(spawn({OUTPOST_CERTS, "agent", certs.string(), name(i)}, tmp.path("certs.log"))), 0);
  }

  static std::string name(int i) { return "fleet-" + std::to_string(i); }

  // Agent i (again: the same buffer), its rows numbered 1..kRows.
  void start_fleet_agent(int i) {
    fs::path dir = tmp.path(name(i));
    fs::create_directories(dir);
    fs::path config = dir / "agent.yaml";
    std::ofstream(config) << "buffer: {dir: " << (dir / "buf").string() << ", limit: 64MiB, sync: full}\n"
                          << "link: {type: collector, addresses: [127.0.0.1:" << port << ", 127.0.0.1:" << port_b
                          << "], ca: " << cert("ca.pem") << ", cert: " << cert(name(i) + ".pem")
                          << ", key: " << cert(name(i) + ".key") << ", backoff_initial_ms: 50, backoff_cap_ms: 400}\n"
                          << "log: {level: info, file: " << (dir / "agent.log").string() << "}\n"
                          << "queries:\n  - name: syn\n    source: {type: synthetic, rate: 100, max_rows: " << kRows
                          << ", row_size: 64}\n    batch: {rows: 50, delay_ms: 20}\n";
    agents[i] = procs.add(spawn({OUTPOST_AGENT, "--config", config.string()}));
  }
  void kill_agent(int i) {
    kill(agents[i], SIGKILL);
    waitpid(agents[i], nullptr, 0);
  }

  // Per agent, its rows in the stream in stream order: (record seq, the row's Seq).
  struct Row {
    uint64_t record, seq;
    bool operator<(const Row& o) const { return std::tie(record, seq) < std::tie(o.record, o.seq); }
  };
  std::vector<std::vector<Row>> in_stream() {
    auto messages = read_stream(nats->urls(), "OUTPOST");
    std::vector<std::vector<Row>> out;
    for (int i = 0; i < kAgents; ++i) {
      auto records = stream_values(messages, "outpost." + name(i) + ".", "seq");
      auto seqs = stream_values(messages, "outpost." + name(i) + ".", "Seq");
      EXPECT_EQ(records.size(), seqs.size());
      out.emplace_back();
      for (size_t k = 0; k < std::min(records.size(), seqs.size()); ++k) out.back().push_back({records[k], seqs[k]});
    }
    return out;
  }
  // Whether an agent's last run of its query (a restarted agent runs it
  // again from row 1) is in the stream whole.
  static bool done(const std::vector<Row>& rows) {
    size_t last = rows.size();
    while (last > 0 && rows[last - 1].seq != 1) --last;
    return last > 0 && rows.size() - (last - 1) >= kRows;
  }
  bool all_done() {
    for (auto& rows : in_stream())
      if (!done(rows)) return false;
    return true;
  }
  // Every record once, in order, none missing; every run of the query's
  // rows 1, 2, 3... (cut short where the agent was killed); the last one whole.
  static std::string broken(const std::vector<Row>& rows, bool killed) {
    std::set<Row> seen;
    for (size_t k = 0; k < rows.size(); ++k) {
      if (!seen.insert(rows[k]).second)
        return "row " + std::to_string(rows[k].seq) + " of record " + std::to_string(rows[k].record) + " twice";
      if (k == 0) continue;
      uint64_t record = rows[k].record, before = rows[k - 1].record;
      if (record < before) return "record " + std::to_string(record) + " after " + std::to_string(before);
      // The buffer numbers its records one after another (from the clock
      // when it starts): a gap only where a restarted agent's new run begins.
      if (record > before + 1 && rows[k].seq != 1)
        return "records " + std::to_string(before + 1) + ".." + std::to_string(record - 1) + " missing";
      if (rows[k].seq != 1 && rows[k].seq != rows[k - 1].seq + 1)
        return "row " + std::to_string(rows[k].seq) + " after " + std::to_string(rows[k - 1].seq);
    }
    if (rows.empty() || rows[0].seq != 1) return "the first rows are missing";
    size_t runs = std::count_if(rows.begin(), rows.end(), [](const Row& r) { return r.seq == 1; });
    if (!killed && runs != 1) return std::to_string(runs) + " runs of a query never restarted";
    return done(rows) ? "" : "the last run is not whole";
  }
  size_t total() {
    size_t n = 0;
    for (auto& rows : in_stream()) n += rows.size();
    return n;
  }
  std::string logs() { return slurp(collector_log) + slurp(tmp.path("collector-b-" + std::to_string(b_starts) + ".log")); }
  int b_starts = 1;
};

TEST_F(FleetKill, NodesCollectorsAndAgentsKilledTwiceLoseAndDuplicateNothing) {
  for (int i = 0; i < kAgents; ++i) start_fleet_agent(i);
  const size_t all = kAgents * kRows;
  for (int round = 0; round < 2; ++round) {
    size_t at = (round + 1) * all / 4;
    ASSERT_TRUE(eventually([&] { return total() >= at; }, std::chrono::seconds(90))) << total() << logs();
    nats->kill9(round == 0 ? 2 : 1);  // a node (the second round another one)
    if (round == 0) {  // a collector: its agents fail over to the other
      kill(collector, SIGKILL);
      waitpid(collector, nullptr, 0);
    } else {
      kill(collector_b, SIGKILL);
      waitpid(collector_b, nullptr, 0);
    }
    for (int i = round; i < kAgents; i += 7) kill_agent(i);  // and a few agents
    for (int i = round; i < kAgents; i += 7) start_fleet_agent(i);
    nats->start(round == 0 ? 2 : 1);
    if (round == 0) {
      start_collector();  // same port
    } else {
      collector_b = spawn_collector(data_b, port_b, tmp.path("collector-b-" + std::to_string(++b_starts) + ".log"));
      ASSERT_GT(collector_b, 0);
    }
  }
  ASSERT_TRUE(eventually([&] { return all_done(); }, std::chrono::seconds(180))) << total() << logs();
  auto rows = in_stream();
  for (int i = 0; i < kAgents; ++i) {
    bool killed = i % 7 <= 1;
    EXPECT_EQ(broken(rows[i], killed), "") << name(i) << " (" << rows[i].size() << " rows)";
  }
}

}  // namespace
}  // namespace outpost
