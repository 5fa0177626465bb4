// The agent's wall clock moved back and forth while it runs (an injected
// offset, schemas/wall_clock.hpp, not the system's clock): rows are stamped
// with the moved clock, and nothing waits on it. Batches keep coming after
// every move, and every row arrives once, in order.

#include <gtest/gtest.h>

#include <regex>

#include "outpost/outpost.hpp"
#include "schemas/codec.hpp"
#include "schemas/wall_clock.hpp"
#include "tests/actor_test_util.hpp"
#include "tests/host_test_util.hpp"
#include "tests/temp_dir.hpp"
#include "tests/utc_time.hpp"

namespace outpost {
namespace {

using namespace std::chrono_literals;
using testing::eventually;

int64_t system_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct Row {
  uint64_t record;
  std::string query;  // "syn" or "ticks"
  uint64_t number;    // Seq or Tick
  int64_t time_ns;    // Time, or Now (in seconds)
};

// Every row the sink was handed, in order.
std::vector<Row> rows_of(testing::Held& held) {
  static const std::regex syn("\"artifact\":\"syn\".*\"Seq\":(\\d+),\"Time\":\"([^\"]+)\"");
  static const std::regex ticks("\"artifact\":\"ticks\".*\"Now\":(\\d+),\"Tick\":(\\d+)");
  std::vector<Row> out;
  for (auto& [batch, ack] : held.of("events"))
    for (auto& r : batch.records) {
      std::istringstream lines(r.json);
      for (std::string line; std::getline(lines, line);) {
        std::smatch m;
        if (std::regex_search(line, m, syn))
          out.push_back({r.seq, "syn", std::stoull(m[1]), testing::parse_utc_ns(m[2])});
        else if (std::regex_search(line, m, ticks))
          out.push_back({r.seq, "ticks", std::stoull(m[2]), std::stoll(m[1]) * 1'000'000'000});
      }
    }
  return out;
}

struct ClockShift : ::testing::Test {
  testing::TempDir tmp;
  ~ClockShift() override { schemas::set_wall_clock_offset({}); }
};

TEST_F(ClockShift, BackAndForthRowsKeepComingOnceAndInOrder) {
  testing::Held held;
  held.auto_ack = true;
  AgentOptions o;
  o.config_yaml = "buffer: {dir: " + tmp.path("buf").string() + ", limit: 64MiB}\n" +
                  "link: {type: host}\n"
                  "inspector: {socket: ~}\n"
                  "event_table: []\n"
                  "queries:\n"
                  "  - name: syn\n"
                  "    source: {type: synthetic, rate: 500, row_size: 16}\n"
                  "    batch: {rows: 50, delay_ms: 20}\n"
                  "  - name: ticks\n"
                  "    source: {type: vql, query: \"SELECT now() AS Now, Tick FROM clock(period=0.05)\"}\n"
                  "    batch: {rows: 50, delay_ms: 20}\n";
  o.sink = held.sink();
  Agent agent(std::move(o));
  ASSERT_TRUE(agent.start());

  for (auto shift : {-1h, 24h, -24h, 0h}) {
    schemas::set_wall_clock_offset(shift);
    int64_t moved_to = system_ns() + std::chrono::nanoseconds(shift).count();
    // Rows of both queries stamped by the moved clock arrive: the move took,
    // and neither batching nor the clock() period waits on the wall clock.
    auto stamped = [&](const std::string& query) {
      for (auto& r : rows_of(held))
        if (r.query == query && r.time_ns >= moved_to - 1'000'000'000 && r.time_ns < moved_to + 600'000'000'000)
          return true;
      return false;
    };
    ASSERT_TRUE(eventually([&] { return stamped("syn") && stamped("ticks"); }))
        << "no row stamped after moving the clock by " << std::chrono::duration_cast<std::chrono::hours>(shift).count()
        << " h";
  }
  ASSERT_TRUE(agent.stop());

  auto rows = rows_of(held);
  std::map<std::string, uint64_t> last;
  uint64_t last_record = 0;
  for (auto& r : rows) {
    EXPECT_EQ(r.number, last[r.query] + 1) << r.query << " out of order or repeated at record " << r.record;
    last[r.query] = r.number;
    EXPECT_GE(r.record, last_record);
    last_record = r.record;
  }
  EXPECT_GT(last["syn"], 0u);
  EXPECT_GT(last["ticks"], 0u);
}

}  // namespace
}  // namespace outpost
