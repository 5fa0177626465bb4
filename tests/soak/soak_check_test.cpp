// The soak's verdict over collector folders written by the test: each kind
// of wrong delivery is counted as what it is.

#include <gtest/gtest.h>

#include <fstream>

#include "tests/soak/soak_check.hpp"
#include "tests/temp_dir.hpp"

namespace outpost::soak {
namespace {

namespace fs = std::filesystem;

struct SoakCheck : ::testing::Test {
  testing::TempDir tmp;
  fs::path agent = tmp.path("agent-1");

  // Appends rows {record, Seq} to <query>/<day>.jsonl as the collector writes them.
  void store(const std::string& query, const std::vector<std::pair<uint64_t, uint64_t>>& rows,
             const std::string& day = "2026-12-03") {
    fs::create_directories(agent / query);
    std::ofstream out(agent / query / (day + ".jsonl"), std::ios::app);
    for (auto [record, seq] : rows)
      out << "{\"seq\":" << record << ",\"lane\":\"events\",\"query_id\":1,\"artifact\":\"" << query
          << "\",\"source\":\"\",\"row\":{\"Seq\":" << seq << ",\"Time\":\"2026-12-03T00:00:00Z\",\"Data\":\"x\"}}\n";
  }
};

TEST_F(SoakCheck, RowsOnceAndInOrderAcrossDaysAreClean) {
  store("r1q0", {{1, 1}, {1, 2}, {3, 3}});
  store("r1q0", {{5, 4}}, "2026-12-04");
  store("r1q1", {{2, 1}, {4, 2}});
  auto v = verify(agent, {}, {{"r1q0", 4}});
  EXPECT_EQ(v.rows, 6u);
  EXPECT_EQ(v.records, 5u);
  EXPECT_EQ(v.query_runs, 2u);
  EXPECT_EQ(v.lost + v.duplicated + v.reordered + v.lost_to_damage, 0u);
  EXPECT_TRUE(v.problems.empty()) << v.problems[0];
  EXPECT_EQ(highest_record(agent), 5u);
}

TEST_F(SoakCheck, ARowStoredTwiceIsADuplicateEvenInAnotherRecord) {
  store("r1q0", {{1, 1}, {1, 2}, {2, 2}, {3, 3}});
  auto v = verify(agent, {}, {});
  EXPECT_EQ(v.duplicated, 1u);
  EXPECT_EQ(v.rows, 3u);
  EXPECT_EQ(v.lost, 0u);
}

TEST_F(SoakCheck, ARowAfterALaterOneIsReordered) {
  store("r1q0", {{1, 1}, {3, 3}, {2, 2}});
  auto v = verify(agent, {}, {});
  EXPECT_EQ(v.reordered, 1u);
  EXPECT_EQ(v.duplicated, 0u);
}

TEST_F(SoakCheck, AGapWithoutCorruptionIsLost) {
  store("r1q0", {{1, 1}, {1, 2}, {4, 6}});  // rows 3..5 (records 2, 3) never arrived
  store("r1q1", {{3, 1}});                  // record 3 is another query's: only 2 is missing
  auto v = verify(agent, {}, {});
  EXPECT_EQ(v.lost, 3u);
  ASSERT_EQ(v.problems.size(), 1u);
  EXPECT_NE(v.problems[0].find("r1q0: rows 3..5"), std::string::npos) << v.problems[0];
}

TEST_F(SoakCheck, AGapInACorruptedRunsUnstoredRecordsIsLostToDamage) {
  store("r1q0", {{1, 1}, {4, 3}});  // record 2 (row 2) was stored by no one
  store("r1q1", {{3, 1}});
  auto v = verify(agent, {{1, 1}}, {});  // run 1's buffer corrupted when records <= 1 were stored
  EXPECT_EQ(v.lost, 0u);
  EXPECT_EQ(v.lost_to_damage, 1u);
  EXPECT_EQ(v.damaged_records, 1u);
}

TEST_F(SoakCheck, ACorruptionDoesNotExplainWhatWasStoredBeforeItOrALaterRun) {
  store("r1q0", {{1, 1}, {3, 3}});  // record 2 missing, but stored through 3 at the corruption
  store("r2q0", {{5, 1}, {7, 3}});  // run 2 began after run 1's corruption
  auto v = verify(agent, {{1, 3}}, {});
  EXPECT_EQ(v.lost, 2u);
  EXPECT_EQ(v.lost_to_damage, 0u);
}

TEST_F(SoakCheck, TheLastRunMustHoldEveryRowItCommitted) {
  store("r2q0", {{1, 1}, {2, 2}});
  auto v = verify(agent, {}, {{"r2q0", 5}, {"r2q1", 3}});  // r2q1 stored nothing at all
  EXPECT_EQ(v.lost, 3u + 3u);
}

TEST(SoakLog, CommittedRowsAreReadFromTheStopLines) {
  auto c = committed_rows(
      "[info] query r4q0 stopped: 120 rows produced, 118 rows committed\n"
      "[info] query r4q1 stopped: 7 rows produced, 7 rows committed\n");
  EXPECT_EQ(c, (std::map<std::string, uint64_t>{{"r4q0", 118}, {"r4q1", 7}}));
}

}  // namespace
}  // namespace outpost::soak
