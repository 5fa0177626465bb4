// Rows the host pushes into a query (`source: {type: host}`): accepted
// until the buffer is at its limit, would_block there, accepted again once
// the sink acknowledges; every accepted row reaches the sink, also the ones
// a stop found still queued.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <sstream>
#include <thread>

#include "tests/actor_test_util.hpp"
#include "tests/host_test_util.hpp"
#include "tests/temp_dir.hpp"

namespace outpost {
namespace {

using namespace std::chrono_literals;
using schemas::Json;
using testing::eventually;
using testing::Held;

struct HostPush : ::testing::Test {
  testing::TempDir tmp;

  AgentOptions options(Sink sink, const std::string& buffer = "limit: 64MiB") {
    AgentOptions o;
    o.origin = "host-push.yaml";
    o.config_yaml = "buffer: {dir: " + tmp.path("buf").string() + ", " + buffer + "}\n" +
                    "link: {type: host, max_unacked: 1}\n"
                    "inspector: {socket: ~}\n"
                    "event_table: []\n"
                    "queries:\n"
                    "  - name: feed\n"
                    "    id: 5\n"
                    "    source: {type: host, queue_rows: 100}\n"
                    "  - name: ticks\n"
                    "    source: {type: vql, query: 'SELECT * FROM clock(period=1)'}\n";
    o.sink = std::move(sink);
    return o;
  }
};

Row row(uint64_t n, size_t text = 16) { return {{"n", n}, {"text", std::string(text, 'x')}}; }

// The numbers (column n) of the feed's rows in the sink's events batches,
// each record counted once by its seq.
std::vector<uint64_t> numbers(Held& held) {
  std::map<uint64_t, std::string> by_seq;
  for (auto& [batch, ack] : held.of("events"))
    for (auto& r : batch.records) by_seq[r.seq] = r.json;
  std::vector<uint64_t> out;
  for (auto& [seq, json] : by_seq) {
    std::istringstream lines(json);
    for (std::string line; std::getline(lines, line);) {
      auto j = Json::parse(line);
      if (j["query_id"].u() == 5) out.push_back(j["row"]["n"].u());
    }
  }
  return out;
}

TEST_F(HostPush, WouldBlockAtTheBufferLimitAndAcceptedOnceTheSinkAcknowledges) {
  Held held;  // acknowledges nothing until told
  std::atomic<int> writable{0};
  auto o = options(held.sink(), "limit: 1MiB, pending_budget: 256KiB");
  o.on_writable = [&](const std::string& query) {
    if (query == "feed") ++writable;
  };
  Agent agent(o);
  ASSERT_TRUE(agent.start());
  // Pushed as fast as this thread encodes: would_block whenever the buffer
  // takes rows slower than that, until it is full.
  uint64_t accepted = 0;
  Result r;
  auto full = [&] { return testing::status_of(agent, "buffer")["full"].b; };
  for (int round = 0;; ++round) {
    ASSERT_LT(round, 10000) << "the buffer never filled: " << agent.status_json();
    while ((r = agent.push("feed", row(accepted, 512)))) ++accepted;
    ASSERT_EQ(r.code, Errc::would_block) << r.message;
    if (agent.wait_writable("feed", 100ms).code == Errc::would_block && full()) break;
  }
  EXPECT_NE(r.message.find("query feed holds as many rows as it may"), std::string::npos) << r.message;
  int told = writable;

  Result waited;
  std::thread waiter([&] { waited = agent.wait_writable("feed", 600s); });  // a lost wakeup hangs it
  held.ack_all();
  waiter.join();
  EXPECT_TRUE(waited) << waited.message;
  // on_writable runs on the agent's thread after it woke the waiter: maybe a moment later.
  EXPECT_TRUE(eventually([&] { return writable > told; }, 60s)) << "on_writable was not called";
  ASSERT_TRUE(agent.push("feed", row(accepted)));
  ++accepted;
  ASSERT_TRUE(eventually([&] { return numbers(held).size() == accepted; }, 60s)) << numbers(held).size();
  EXPECT_TRUE(agent.stop());
}

TEST_F(HostPush, EveryAcceptedRowReachesTheSinkAlsoThoseAStopFoundQueued) {
  const uint64_t kRows = 5000;
  Held first;
  first.auto_ack = true;
  {
    Agent agent(options(first.sink()));
    ASSERT_TRUE(agent.start());
    for (uint64_t n = 0; n < kRows; ++n) {
      Row r = row(n);
      if (n / 1000 % 2) r.emplace_back("odd", true);  // the columns change every 1000 rows
      Result pushed;
      while ((pushed = agent.push("feed", r)).code == Errc::would_block) ASSERT_TRUE(agent.wait_writable("feed", 60s));
      ASSERT_TRUE(pushed) << pushed.message;
    }
    ASSERT_TRUE(agent.stop());  // with rows still queued, most likely: the hand-over takes them
  }
  Held second;
  second.auto_ack = true;
  Agent agent(options(second.sink()));
  ASSERT_TRUE(agent.start());
  // What the first agent's sink had not acknowledged before it stopped comes again: by seq, once.
  std::vector<uint64_t> all;
  ASSERT_TRUE(eventually([&] {
    all = numbers(first);
    auto more = numbers(second);
    all.insert(all.end(), more.begin(), more.end());
    std::sort(all.begin(), all.end());
    all.erase(std::unique(all.begin(), all.end()), all.end());
    return all.size() == kRows;
  }, 60s)) << all.size();
  EXPECT_EQ(all.back(), kRows - 1);
  EXPECT_TRUE(agent.stop());
}

TEST_F(HostPush, PushNamesWhatIsWrong) {
  Held held;
  held.auto_ack = true;
  Agent agent(options(held.sink()));
  EXPECT_EQ(agent.push("feed", row(1)).code, Errc::not_running);
  ASSERT_TRUE(agent.start());
  auto r = agent.push("nope", row(1));
  EXPECT_EQ(r.code, Errc::unknown_query);
  EXPECT_NE(r.message.find("no query named nope has a host source"), std::string::npos) << r.message;
  EXPECT_EQ(agent.push("ticks", row(1)).code, Errc::unknown_query);
  EXPECT_EQ(agent.wait_writable("ticks", 1s).code, Errc::unknown_query);
  EXPECT_TRUE(agent.push("feed", row(1)));
  ASSERT_TRUE(agent.stop());
  EXPECT_EQ(agent.push("feed", row(2)).code, Errc::not_running);
  EXPECT_EQ(agent.wait_writable("feed", 1s).code, Errc::not_running);
}

}  // namespace
}  // namespace outpost
