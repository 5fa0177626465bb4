// Agent -> collector as real processes over TLS on 127.0.0.1: every row
// arrives once and in order, across collector kill -9; certificates that
// must be refused are.

#include <gtest/gtest.h>

#include <random>
#include <regex>

#include "tests/process_util.hpp"
#include "tests/temp_dir.hpp"

namespace outpost {
namespace {
using namespace outpost::testing;
namespace fs = std::filesystem;

struct EndToEnd : ::testing::Test {
  TempDir tmp;
  Processes procs;
  fs::path certs = tmp.path("certs");
  fs::path data = tmp.path("collector");
  fs::path agent_log = tmp.path("agent.log");
  fs::path collector_log;
  uint16_t port = 0;
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
    collector = procs.add(spawn({OUTPOST_COLLECTOR, "--datadir", data.string(), "--listen",
                                 "127.0.0.1:" + std::to_string(port), "--ca", cert("ca.pem"),
                                 "--cert", cert("collector.pem"), "--key", cert("collector.key")},
                                collector_log));
    std::smatch m;
    ASSERT_TRUE(eventually([&] {
      std::string text = slurp(collector_log);
      return std::regex_search(text, m, std::regex("listening on port (\\d+)"));
    })) << slurp(collector_log);
    port = static_cast<uint16_t>(std::stoi(m[1]));
  }

  pid_t start_agent(uint64_t rows, uint64_t rate, const std::string& name = "agent-1",
                    const std::string& ca = "") {
    fs::path config = tmp.path("agent.yaml");
    std::ofstream(config)
        << "buffer: {dir: " << tmp.path("buf").string() << ", limit: 64MiB, sync: full}\n"
        << "link: {type: collector, address: 127.0.0.1:" << port << ", ca: "
        << (ca.empty() ? cert("ca.pem") : ca) << ", cert: " << cert(name + ".pem")
        << ", key: " << cert(name + ".key") << ", backoff_initial_ms: 50, backoff_cap_ms: 400}\n"
        << "log: {level: info, file: " << agent_log.string() << "}\n"
        << "queries:\n"
        << "  - name: syn\n"
        << "    source: {type: synthetic, rate: " << rate << ", max_rows: " << rows
        << ", row_size: 64}\n"
        << "    batch: {rows: 200, delay_ms: 5}\n";
    return procs.add(spawn({OUTPOST_AGENT, "--config", config.string()}));
  }

  // The Seq column of every row the collector stored for query syn, in file order.
  std::vector<uint64_t> delivered() const {
    std::vector<uint64_t> seqs;
    fs::path dir = data / "agent-1" / "syn";
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

TEST_F(EndToEnd, EveryRowArrivesOnceAndInOrderOverTls) {
  start_collector();
  pid_t agent = start_agent(20000, 20000);
  ASSERT_TRUE(eventually([&] { return delivered().size() >= 20000; }, std::chrono::seconds(60)))
      << delivered().size() << " rows\n" << slurp(agent_log);
  EXPECT_EQ(delivered(), one_to(20000));
  EXPECT_NE(slurp(collector_log).find("agent agent-1 connected"), std::string::npos);
  kill(agent, SIGTERM);
  EXPECT_EQ(wait_exit(agent), 0) << slurp(agent_log);
}

TEST_F(EndToEnd, CollectorKillNineRepeatedlyKeepsExactlyOnce) {
  start_collector();
  start_agent(30000, 6000);  // five seconds of rows
  std::mt19937 rng(7);
  for (int cycle = 0; cycle < 10; ++cycle) {
    std::this_thread::sleep_for(std::chrono::milliseconds(150 + rng() % 250));
    kill(collector, SIGKILL);
    ASSERT_EQ(wait_exit(collector), 128 + SIGKILL);
    start_collector();
  }
  ASSERT_TRUE(eventually([&] { return delivered().size() >= 30000; }, std::chrono::seconds(90)))
      << delivered().size() << " rows\n" << slurp(agent_log);
  EXPECT_EQ(delivered(), one_to(30000));
}

TEST_F(EndToEnd, CertificatesThatMustBeRefusedAre) {
  start_collector();
  start_agent(0, 10, "expired");  // signed by our CA, but expired
  ASSERT_TRUE(eventually([&] { return slurp(collector_log).find("refused") != std::string::npos; }))
      << slurp(collector_log);
  EXPECT_NE(slurp(collector_log).find("certificate verify failed"), std::string::npos);
  EXPECT_FALSE(fs::exists(data / "expired"));
}

TEST_F(EndToEnd, AgentRefusesACollectorItsPinnedCaDidNotSign) {
  start_collector();
  start_agent(100, 100, "agent-1", tmp.path("other-ca/ca.pem").string());
  ASSERT_TRUE(eventually([&] { return slurp(agent_log).find("not trusted") != std::string::npos; }))
      << slurp(agent_log);
  EXPECT_TRUE(delivered().empty());
}

}  // namespace
}  // namespace outpost
