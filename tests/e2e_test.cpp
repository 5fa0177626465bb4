// Agent -> collector as real processes over TLS on 127.0.0.1: every row
// arrives once and in order, across collector kill -9; certificates that
// must be refused are.

#include <gtest/gtest.h>


#include <iostream>
#include <random>
#include <regex>

#include "actors/buffer_actor.hpp"
#include "actors/buffer_reader.hpp"
#include "net/collector/collector_store.hpp"
#include "net/agent/net_link.hpp"
#include "persistence/buffer_store.hpp"
#include "tests/utc_time.hpp"
#include "persistence/meta.hpp"
#include "tests/fault_proxy/fault_proxy.hpp"
#include "tests/e2e_fixture.hpp"

namespace outpost {
namespace {
using namespace outpost::testing;
namespace fs = std::filesystem;

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

// A live row goes from the buffer's commit straight to the network: once the
// link has sent everything, a small commit's records come with the
// notification and no buffer read happens (a thread hop and a transaction).
TEST_F(EndToEnd, LiveRowsAreSentWithoutReadingThemBack) {
  start_collector();
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  persistence::StoreOptions options;
  options.dir = tmp.path("buf");
  auto store = std::make_shared<persistence::BufferStore>(options);
  auto buf = sys.spawn<caf::detached>(buffer, store);
  auto reader = sys.spawn<caf::detached>(buffer_reader, store, buf);
  net::ClientConfig client;
  client.port = port;
  client.tls = {cert("ca.pem"), cert("agent-1.pem"), cert("agent-1.key"), false};
  auto link = sys.spawn(net::net_link, buf, reader, client);
  self->send(buf, set_link_atom::value, link_actor{link});
  auto link_count = [&](const char* key) { return count(status_of(self, link), key); };
  // Connected, and every lane read until it had nothing: the link is caught up.
  ASSERT_TRUE(eventually([&] { return count(status_of(self, reader), "reads") >= static_cast<int64_t>(schemas::kLaneCount); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  uint64_t reads = count(status_of(self, reader), "reads");
  for (uint64_t n = 1; n <= 20; ++n) {
    schemas::RowBatchWriter rows(1, "syn", "syn", Lane::EVENTS, {"Seq"});
    rows.add_row()[0].setUint64(n);
    RecordRef record{std::make_shared<const schemas::Encoded>(rows.finish()), 1, schemas::now_ns()};
    self->request(buf, std::chrono::seconds(10), append_atom::value, Lane::EVENTS, record)
        .receive([](uint64_t) {}, [&](caf::error& e) { FAIL() << sys.render(e); });
    ASSERT_TRUE(eventually([&] { return delivered().size() == n; })) << slurp(collector_log);
  }
  EXPECT_EQ(delivered(), one_to(20));
  // The first row may meet the connection's last read still under way (a busy machine): one read
  // at most. Without this path, each row costs two (one for it, one finding nothing after it).
  EXPECT_GE(link_count("fresh_sends"), 19);
  EXPECT_LE(count(status_of(self, reader), "reads"), reads + 1);
  self->send_exit(link, caf::exit_reason::user_shutdown);
  self->send(buf, close_atom::value);
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

TEST_F(EndToEnd, ACollectorThatLostItsStateStillGetsNewRows) {
  start_collector();
  start_agent(6000, 1500);  // four seconds of rows
  ASSERT_TRUE(eventually([&] { return delivered().size() >= 1000; })) << slurp(agent_log);
  kill(collector, SIGKILL);
  ASSERT_EQ(wait_exit(collector), 128 + SIGKILL);
  fs::remove_all(data);  // its marks are now below what the agent had acked
  start_collector();
  ASSERT_TRUE(eventually([&] { return !delivered().empty() && delivered().back() == 6000; },
                         std::chrono::seconds(30)))
      << delivered().size() << " rows\n" << slurp(agent_log);
  EXPECT_NE(slurp(agent_log).find("its state was reset"), std::string::npos);
}

TEST_F(EndToEnd, CertificatesThatMustBeRefusedAre) {
  start_collector();
  AgentOptions expired;
  expired.name = "expired";  // signed by our CA, but expired
  start_agent(0, 10, expired);
  ASSERT_TRUE(eventually([&] { return slurp(collector_log).find("refused") != std::string::npos; }))
      << slurp(collector_log);
  EXPECT_NE(slurp(collector_log).find("certificate verify failed"), std::string::npos);
  EXPECT_FALSE(fs::exists(data / "expired"));
}

TEST_F(EndToEnd, SelfSignedClientCertificateIsRefused) {
  start_collector();
  // A CA's own certificate is self-signed: it names "Outpost CA ...", signed by nobody we trust.
  fs::copy(tmp.path("other-ca/ca.pem"), certs / "selfsigned.pem");
  fs::copy(tmp.path("other-ca/ca.key"), certs / "selfsigned.key");
  AgentOptions self_signed;
  self_signed.name = "selfsigned";
  start_agent(10, 10, self_signed);
  ASSERT_TRUE(eventually([&] { return slurp(collector_log).find("refused") != std::string::npos; }))
      << slurp(collector_log);
  EXPECT_NE(slurp(collector_log).find("certificate verify failed"), std::string::npos);
}

TEST_F(EndToEnd, PlaintextOnlyWhenBothEndsAskForIt) {
  start_collector();  // TLS
  fs::path config = tmp.path("insecure.yaml");
  std::ofstream(config) << "buffer: {dir: " << tmp.path("buf").string() << "}\n"
                        << "link: {type: collector, address: 127.0.0.1:" << port
                        << ", insecure: true, agent_id: sneaky}\n"
                        << "log: {file: " << agent_log.string() << "}\n"
                        << "queries: [{name: syn, source: {type: synthetic, rate: 10}}]\n";
  procs.add(spawn({OUTPOST_AGENT, "--config", config.string()}));
  ASSERT_TRUE(eventually([&] { return slurp(agent_log).find("offline") != std::string::npos; }))
      << slurp(agent_log);
  EXPECT_NE(slurp(agent_log).find("TLS is OFF"), std::string::npos);
  EXPECT_FALSE(fs::exists(data / "sneaky"));
  // A collector without TLS material refuses to start unless told --insecure.
  EXPECT_EQ(wait_exit(spawn({OUTPOST_COLLECTOR, "--datadir", tmp.path("c2").string()},
                            tmp.path("c2.log"))),
            2);
  EXPECT_NE(slurp(tmp.path("c2.log")).find("--insecure"), std::string::npos);
}

TEST_F(EndToEnd, AgentRefusesACollectorItsPinnedCaDidNotSign) {
  start_collector();
  AgentOptions foreign;
  foreign.ca = tmp.path("other-ca/ca.pem").string();
  start_agent(100, 100, foreign);
  ASSERT_TRUE(eventually([&] { return slurp(agent_log).find("not trusted") != std::string::npos; }))
      << slurp(agent_log);
  EXPECT_TRUE(delivered().empty());
}

TEST_F(EndToEnd, FlappingThenThrottledLinkKeepsExactlyOnce) {
  start_collector();
  FaultProxy proxy(port);
  proxy.cut_every(std::chrono::milliseconds(300));
  AgentOptions via_proxy;
  via_proxy.target = proxy.port();
  start_agent(20000, 5000, via_proxy);  // four seconds of rows
  ASSERT_TRUE(eventually([&] { return proxy.connections_accepted() >= 3; })) << slurp(agent_log);
  proxy.cut_every(std::chrono::milliseconds(0));
  proxy.set_rate(1024 * 1024);
  ASSERT_TRUE(eventually([&] { return delivered().size() >= 20000; }, std::chrono::seconds(90)))
      << delivered().size() << " rows\n" << slurp(agent_log);
  EXPECT_EQ(delivered(), one_to(20000));
}

// The bytes an agent's buffer holds, as its last commit left them, read from
// another process (LMDB readers never wait for, nor disturb, the writer).
uint64_t buffered_bytes(const fs::path& dir) {
  if (!fs::exists(dir / "data.mdb")) return 0;
  MDB_env* env = nullptr;
  EXPECT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 8);
  uint64_t bytes = 0;
  if (mdb_env_open(env, dir.c_str(), MDB_RDONLY | MDB_NOTLS, 0600) == 0) {
    MDB_txn* txn = nullptr;
    MDB_dbi dbi;
    MDB_val key{sizeof persistence::meta_format::kKey, const_cast<char*>(persistence::meta_format::kKey)};
    MDB_val value;
    persistence::Meta meta;
    if (mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn) == 0) {
      if (mdb_dbi_open(txn, "meta", 0, &dbi) == 0 && mdb_get(txn, dbi, &key, &value) == 0 &&
          persistence::meta_format::decode(value, meta) == persistence::meta_format::Decoded::ok)
        bytes = meta.live_bytes();
      mdb_txn_abort(txn);
    }
  }
  mdb_env_close(env);
  return bytes;
}

TEST_F(EndToEnd, CollectorDownFillsTheBufferThenEverythingArrivesOnce) {
  start_collector();
  kill(collector, SIGKILL);
  ASSERT_EQ(wait_exit(collector), 128 + SIGKILL);
  AgentOptions small;
  small.limit = "256KiB";  // about 2,500 of the 20,000 rows fit
  pid_t agent = start_agent(20000, 20000, small);
  // The buffer fills while nothing can leave it, to within a batch (~20 KB) of its limit.
  uint64_t limit = 256 * 1024;
  ASSERT_TRUE(eventually([&] { return buffered_bytes(tmp.path("buf")) >= limit * 3 / 4; }))
      << buffered_bytes(tmp.path("buf")) << " bytes buffered\n" << slurp(agent_log);
  EXPECT_LE(buffered_bytes(tmp.path("buf")), limit);
  start_collector();
  ASSERT_TRUE(eventually([&] { return delivered().size() >= 20000; }, std::chrono::seconds(90)))
      << delivered().size() << " rows\n" << slurp(agent_log);
  EXPECT_EQ(delivered(), one_to(20000));
  kill(agent, SIGTERM);
  EXPECT_EQ(wait_exit(agent), 0);
  EXPECT_NE(slurp(agent_log).find("query syn stopped: 20000 rows produced, 20000 rows committed"),
            std::string::npos)
      << slurp(agent_log);
}

// Record seqs in the collector's file, one per record (a record's rows share it).
std::vector<uint64_t> record_seqs(const fs::path& dir) {
  std::vector<uint64_t> seqs;
  static const std::regex seq("^\\{\"seq\":(\\d+),");
  std::vector<fs::path> files;
  std::error_code missing;  // none yet: nothing delivered
  for (auto& e : fs::directory_iterator(dir, missing)) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (auto& f : files) {
    std::ifstream in(f);
    for (std::string line; std::getline(in, line);) {
      std::smatch m;
      if (!std::regex_search(line, m, seq)) continue;
      uint64_t s = std::stoull(m[1]);
      if (seqs.empty() || seqs.back() != s) seqs.push_back(s);
    }
  }
  return seqs;
}

TEST_F(EndToEnd, LiveRowsAreNotStuckBehindABacklog) {
  start_collector();
  kill(collector, SIGKILL);
  ASSERT_EQ(wait_exit(collector), 128 + SIGKILL);
  fs::path config = tmp.path("agent.yaml");
  std::ofstream(config)
      << "buffer: {dir: " << tmp.path("buf").string() << ", limit: 256MiB, sync: full}\n"
      << "link: {type: collector, address: 127.0.0.1:" << port << ", ca: " << cert("ca.pem")
      << ", cert: " << cert("agent-1.pem") << ", key: " << cert("agent-1.key")
      << ", backoff_initial_ms: 50, backoff_cap_ms: 200}\n"
      << "log: {file: " << agent_log.string() << "}\n"
      << "queries:\n"
      << "  - {name: backlog, lane: results, source: {type: synthetic, rate: 0, row_size: 512, "
         "max_rows: 600000}}\n"
      << "  - {name: live, lane: events, source: {type: clock, period_ms: 10}}\n";
  procs.add(spawn({OUTPOST_AGENT, "--config", config.string()}));
  // The buffer fills with results (600,000 rows of 512 bytes do not fit its 256 MiB).
  ASSERT_TRUE(eventually([&] { return buffered_bytes(tmp.path("buf")) >= (192ull << 20); },
                         std::chrono::seconds(60)))
      << buffered_bytes(tmp.path("buf")) << " bytes buffered\n" << slurp(agent_log);
  start_collector();
  auto up = schemas::now_ns();

  // Follow the live file while the backlog drains; a row's delay is from its
  // Time (set by the agent when produced) to when we first see it stored.
  fs::path live_dir = data / "agent-1" / "live";
  static const std::regex time_re("\"Time\":\"([^\"]+)\"");
  std::vector<double> delays_ms;
  size_t seen_lines = 0;
  auto backlog_bytes = [&] {
    uint64_t bytes = 0;
    if (fs::exists(data / "agent-1" / "backlog"))
      for (auto& e : fs::directory_iterator(data / "agent-1" / "backlog")) bytes += fs::file_size(e.path());
    return bytes;
  };
  uint64_t backlog_at_end = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(6);
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (!fs::exists(live_dir)) continue;
    std::vector<std::string> lines;
    for (auto& e : fs::directory_iterator(live_dir)) {
      std::ifstream in(e.path());
      for (std::string line; std::getline(in, line);) lines.push_back(line);
    }
    int64_t now = schemas::now_ns();
    for (size_t i = seen_lines; i < lines.size(); ++i) {
      std::smatch m;
      if (!std::regex_search(lines[i], m, time_re)) continue;
      int64_t produced = testing::parse_utc_ns(m[1]);
      // After the reconnect (the agent tries every 200 ms at most): a backlog
      // of 256 MiB drains in about 1.4 s on an idle machine, so the 20 rows
      // are measured within its first half.
      if (produced > up + 300000000) delays_ms.push_back((now - produced) / 1e6);
    }
    seen_lines = lines.size();
    if (delays_ms.size() >= 20) {
      backlog_at_end = backlog_bytes();
      break;
    }
  }
  ASSERT_GE(delays_ms.size(), 20u) << slurp(agent_log);
  // The backlog was still arriving while live rows were measured.
  uint64_t last = 0;
  ASSERT_TRUE(eventually([&] {
    uint64_t now = backlog_bytes();
    bool settled = now == last;
    last = now;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    return settled;
  }));
  EXPECT_LT(backlog_at_end, last) << "the backlog drained before the measurement: not a test of fairness";
  std::sort(delays_ms.begin(), delays_ms.end());
  double p99 = delays_ms[delays_ms.size() * 99 / 100];
  RecordProperty("live_p50_ms", std::to_string(delays_ms[delays_ms.size() / 2]));
  RecordProperty("live_p99_ms", std::to_string(p99));
  std::cout << "live rows during the drain: p50 " << delays_ms[delays_ms.size() / 2] << " ms, p99 "
            << p99 << " ms over " << delays_ms.size() << " rows\n";
  EXPECT_LT(p99, 2000) << "live rows waited behind the backlog";
}

TEST_F(EndToEnd, AgentKillNineRepeatedlyDeliversNoRecordTwiceAndLosesNone) {
  start_collector();
  std::mt19937 rng(11);
  for (int cycle = 0; cycle < 10; ++cycle) {
    pid_t agent = start_agent(0, 4000);
    std::this_thread::sleep_for(std::chrono::milliseconds(200 + rng() % 300));
    kill(agent, SIGKILL);
    ASSERT_EQ(wait_exit(agent), 128 + SIGKILL);
  }
  // What the killed runs committed and had not sent is in the buffer now; a
  // last run, with no query of its own, delivers it.
  uint64_t buffered_max = 0;
  {
    persistence::StoreOptions o;
    o.dir = tmp.path("buf");
    persistence::BufferStore buffer(o);
    auto left = buffer.read(Lane::EVENTS, 0, 1000000, uint64_t{1} << 40);
    if (!left.records.empty()) buffered_max = left.records.back().seq;
  }
  AgentOptions quiet;
  quiet.queries = "  []\n";
  auto runs = [&] {  // "agent running" lines in the log, which every run appends to
    std::string log = slurp(agent_log);
    size_t n = 0;
    for (size_t at = 0; (at = log.find("agent running", at)) != std::string::npos; ++at) ++n;
    return n;
  };
  size_t runs_before = runs();
  pid_t agent = start_agent(0, 0, quiet);
  ASSERT_TRUE(eventually([&] { return runs() > runs_before; })) << slurp(agent_log);
  ASSERT_TRUE(eventually(
      [&] {
        auto seqs = record_seqs(data / "agent-1" / "syn");
        return !seqs.empty() && seqs.back() >= buffered_max;
      },
      std::chrono::seconds(60)))
      << slurp(agent_log);
  kill(agent, SIGTERM);
  ASSERT_EQ(wait_exit(agent), 0);
  kill(collector, SIGTERM);
  ASSERT_EQ(wait_exit(collector), 0);

  auto seqs = record_seqs(data / "agent-1" / "syn");
  ASSERT_FALSE(seqs.empty());
  EXPECT_TRUE(std::is_sorted(seqs.begin(), seqs.end()));
  EXPECT_EQ(std::adjacent_find(seqs.begin(), seqs.end()), seqs.end()) << "a record was stored twice";
  // Whatever is still buffered, the collector has stored already.
  uint64_t mark = net::CollectorStore(data).marks("agent-1")[static_cast<size_t>(Lane::EVENTS)];
  EXPECT_EQ(mark, seqs.back());
  persistence::StoreOptions o;
  o.dir = tmp.path("buf");
  persistence::BufferStore buffer(o);
  auto left = buffer.read(Lane::EVENTS, 0, 100000, 1ull << 30);
  for (auto& r : left.records) EXPECT_LE(r.seq, mark) << "committed but never delivered";
}

}  // namespace
}  // namespace outpost
