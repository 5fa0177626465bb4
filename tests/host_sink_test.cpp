// The host as the link (`link: host`): batches handed to the host's sink,
// deleted from the buffer only once acknowledged, in order; and a host
// process killed with -9 that loses and repeats nothing (real processes).

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <vector>

#include "outpost/outpost.hpp"
#include "schemas/json_reader.hpp"
#include "tests/host_test_util.hpp"
#include "tests/process_util.hpp"
#include "tests/temp_dir.hpp"

namespace outpost {
namespace {

using namespace std::chrono_literals;
using schemas::Json;
using testing::eventually;

using testing::events_count;
using testing::Held;
using testing::status_of;
uint64_t link_count(const Agent& agent, const std::string& key) { return testing::count_of(agent, "link", key); }

struct HostSink : ::testing::Test {
  testing::TempDir tmp;

  AgentOptions options(Sink sink, unsigned max_unacked, bool query = true) {
    AgentOptions o;
    o.origin = "host-sink.yaml";
    o.config_yaml = "buffer: {dir: " + tmp.path("buf").string() + ", limit: 64MiB}\n" +
                    "link: {type: host, max_unacked: " + std::to_string(max_unacked) + "}\n" +
                    "inspector: {socket: ~}\n"
                    "event_table: []\n" +
                    (query ? "queries:\n"
                             "  - name: syn\n"
                             "    source: {type: synthetic, rate: 2000, row_size: 32}\n"
                           : "queries: []\n");
    o.sink = std::move(sink);
    return o;
  }
};

TEST_F(HostSink, ALaneWaitsAtMaxUnackedAndOnlyAcknowledgedBatchesAreDeleted) {
  Held held;
  uint64_t first_unacked = 0;
  {
    Agent agent(options(held.sink(), 2));
    ASSERT_TRUE(agent.start());
    // Two batches out: the lane waits while the buffer takes more rows.
    ASSERT_TRUE(eventually([&] {
      return held.of("events").size() == 2 && link_count(agent, "records_handed") > 0 &&
             events_count(agent, "link", "unacked_batches") == 2 &&
             events_count(agent, "buffer", "records") > held.of("events")[1].first.records.back().seq -
                                                            held.of("events")[0].first.records.front().seq + 1;
    }));
    auto events = held.of("events");
    ASSERT_EQ(events[1].first.records.front().seq, events[0].first.records.back().seq + 1);  // no gap
    events[0].second();
    events[0].second();  // once counts
    ASSERT_TRUE(eventually([&] { return held.of("events").size() == 3; }));
    uint64_t through = events[0].first.records.back().seq;
    ASSERT_TRUE(eventually([&] { return events_count(agent, "link", "deleted_through") == through; }));
    EXPECT_EQ(link_count(agent, "acks_received"), 1u);
    first_unacked = events[1].first.records.front().seq;
    ASSERT_TRUE(agent.stop());
  }
  // The next start hands over again what was not acknowledged, with its seqs.
  Held again;
  Agent agent(options(again.sink(), 2, false));
  ASSERT_TRUE(agent.start());
  ASSERT_TRUE(eventually([&] { return !again.of("events").empty(); }));
  EXPECT_EQ(again.of("events")[0].first.records.front().seq, first_unacked);
  held.of("events")[1].second();  // an ack of a stopped agent does nothing
  EXPECT_TRUE(agent.stop());
}

TEST_F(HostSink, OutOfOrderAcknowledgementsDeleteNothingPastTheFirstGap) {
  Held held;
  Agent agent(options(held.sink(), 3));
  ASSERT_TRUE(agent.start());
  ASSERT_TRUE(eventually([&] { return held.of("events").size() == 3; }));
  auto events = held.of("events");
  events[2].second();
  events[1].second();
  ASSERT_TRUE(eventually([&] { return link_count(agent, "acks_received") == 2; }));
  EXPECT_EQ(events_count(agent, "link", "acked_through"), 0u);
  EXPECT_EQ(events_count(agent, "link", "deleted_through"), 0u);
  events[0].second();
  uint64_t through = events[2].first.records.back().seq;
  ASSERT_TRUE(eventually([&] { return events_count(agent, "link", "deleted_through") == through; }));
  EXPECT_TRUE(agent.stop());
}

TEST_F(HostSink, AThrowingSinkIsALinkErrorAndItsBatchComesAgain) {
  std::mutex mutex;
  std::vector<uint64_t> firsts, lasts;  // of the events batches, throwing on the first
  Sink sink = [&](const SinkBatch& b, SinkAck ack) {
    if (b.lane != "events") return ack();
    std::lock_guard<std::mutex> lock(mutex);
    firsts.push_back(b.records.front().seq);
    lasts.push_back(b.records.back().seq);
    if (firsts.size() == 1) throw std::runtime_error("host storage unavailable");
    ack();
  };
  Agent agent(options(sink, 2));
  ASSERT_TRUE(agent.start());
  ASSERT_TRUE(eventually([&] {
    std::lock_guard<std::mutex> lock(mutex);
    return firsts.size() >= 2;
  }));
  uint64_t again_through = 0;
  {
    std::lock_guard<std::mutex> lock(mutex);
    EXPECT_EQ(firsts[1], firsts[0]);
    again_through = lasts[1];
  }
  // Acknowledged the second time, it is deleted: the throw left nothing behind that holds the lane.
  ASSERT_TRUE(eventually([&] { return events_count(agent, "link", "deleted_through") >= again_through; }));
  auto link = status_of(agent, "link");
  EXPECT_EQ(link["errors"].u(), 1u);
  EXPECT_NE(link["last_error"].s.find("the host's sink threw: host storage unavailable"), std::string::npos)
      << link["last_error"].s;
  EXPECT_TRUE(agent.stop());
}

TEST_F(HostSink, AHostLinkNeedsASinkAndASinkNeedsAHostLink) {
  auto no_sink = options(nullptr, 2);
  Agent a(no_sink);
  auto r = a.start();
  EXPECT_EQ(r.code, Errc::invalid_config);
  EXPECT_NE(r.message.find("host-sink.yaml: link: type host"), std::string::npos) << r.message;
  EXPECT_NE(r.message.find("AgentOptions::sink"), std::string::npos) << r.message;

  Held held;
  auto file_link = options(held.sink(), 2);
  file_link.overrides = {"link=offline"};
  Agent b(file_link);
  r = b.start();
  EXPECT_EQ(r.code, Errc::invalid_config);
  EXPECT_NE(r.message.find("the link's type must be host"), std::string::npos) << r.message;
}

TEST_F(HostSink, StopFromTheSinksThreadAsksAndWaitWaits) {
  std::atomic<Agent*> self{nullptr};
  std::atomic<int> asked{-1};
  Sink sink = [&](const SinkBatch&, SinkAck ack) {
    ack();
    if (asked == -1) asked = static_cast<int>(self.load()->stop(1s).code);  // must not wait for itself
  };
  Agent agent(options(sink, 2));
  self = &agent;
  ASSERT_TRUE(agent.start());
  ASSERT_TRUE(eventually([&] { return asked != -1; }));
  EXPECT_EQ(asked, static_cast<int>(Errc::ok));
  EXPECT_TRUE(agent.wait());
}

// The rows of the sink host's file: per row its lane, record seq and the
// synthetic row's own number (Seq), up to the last batch marker.
struct StoredRow {
  std::string lane;
  uint64_t seq, row;
};
std::vector<StoredRow> stored_rows(const std::filesystem::path& file) {
  std::vector<StoredRow> rows;
  std::vector<std::string> batch;  // lines since the last marker: a kill may have cut them
  std::istringstream in(testing::slurp(file));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("# ", 0) != 0) {
      batch.push_back(line);
      continue;
    }
    for (auto& l : batch) {
      std::istringstream fields(l);
      StoredRow r;
      std::string json;
      fields >> r.lane >> r.seq;
      std::getline(fields, json);
      auto j = Json::parse(json);
      r.row = j.has("row") ? j["row"]["Seq"].u() : 0;
      rows.push_back(r);
    }
    batch.clear();
  }
  return rows;
}

TEST_F(HostSink, EveryRowOnceAcrossAKill9OfTheHostProcess) {
  testing::Processes procs;
  auto dir = tmp.path("host").string();
  std::filesystem::create_directories(dir);
  auto rows_file = tmp.path("host/rows");
  pid_t producer = procs.add(testing::spawn({OUTPOST_SINK_HOST, dir, "produce"}, tmp.path("produce.log")));
  ASSERT_TRUE(eventually([&] { return stored_rows(rows_file).size() > 3000; }, 60s))
      << testing::slurp(tmp.path("produce.log"));
  kill(producer, SIGKILL);
  ASSERT_EQ(testing::wait_exit(producer), 128 + SIGKILL);
  uint64_t before = stored_rows(rows_file).size();

  auto out = tmp.path("drain.out"), log = tmp.path("drain.log");
  pid_t drainer = procs.add(testing::spawn_to({OUTPOST_SINK_HOST, dir, "drain"}, out, log));
  ASSERT_EQ(testing::wait_exit(drainer, std::chrono::seconds(120)), 0) << testing::slurp(log);
  auto printed = testing::slurp(out);  // the log may come before the report
  auto report = Json::parse(printed.substr(printed.rfind('{')));
  // The batch the killed host stored but had not acknowledged came again, and was dropped by seq.
  EXPECT_GT(report["skipped"].u(), 0u) << testing::slurp(out);

  auto rows = stored_rows(rows_file);
  ASSERT_GT(rows.size(), before);
  std::map<std::string, uint64_t> last_seq;
  std::vector<uint64_t> numbers;
  for (auto& r : rows) {
    EXPECT_GE(r.seq, last_seq[r.lane]) << "lane " << r.lane << " went back";
    last_seq[r.lane] = r.seq;
    if (r.lane == "events") numbers.push_back(r.row);
  }
  // The buffer committed a prefix of the query's rows: each is there once.
  std::sort(numbers.begin(), numbers.end());
  ASSERT_FALSE(numbers.empty());
  EXPECT_EQ(numbers.front(), 1u);
  EXPECT_EQ(std::adjacent_find(numbers.begin(), numbers.end()), numbers.end()) << "a row stored twice";
  EXPECT_EQ(numbers.back(), numbers.size()) << "a row missing";
}

}  // namespace
}  // namespace outpost
