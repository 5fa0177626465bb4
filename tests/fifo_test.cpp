// fifo(): a query kept running beside the one that reads its window.

#include <gtest/gtest.h>

#include "queries/engine.hpp"
#include "tests/vql_test_util.hpp"

namespace outpost::vql {
namespace {

TEST(Fifo, KeepsTheLastRowsOfItsQuery) {
  auto rows = json_lines(run_rows(default_registry(),
                                  "LET numbers = SELECT _value AS N FROM foreach(row=[1, 2, 3, 4, 5]) "
                                  "SELECT * FROM fifo(query=numbers, max_rows=2, max_age=60)"));
  EXPECT_EQ(rows, (std::vector<std::string>{R"({"N":4})", R"({"N":5})"}));
}

// The window's query goes on between reads, pulled beside the query that
// reads it: 0.4 s after the first read it has given some 20 more ticks, of
// which the window keeps the last three, in order.
TEST(Fifo, ItsQueryRunsBesideTheQueryThatReadsIt) {
  auto rows = run_rows(default_registry(),
                       "LET ticks = SELECT Tick FROM clock(period=0.02) "
                       "LET window = SELECT * FROM fifo(query=ticks, max_rows=3, max_age=60) "
                       "SELECT {SELECT Tick FROM window} AS Ticks FROM clock(period=0.4) LIMIT 2",
                       Waits::sleep);
  ASSERT_EQ(rows.size(), 2u);
  auto last = rows[1].find("Ticks")->as_list();
  ASSERT_NE(last, nullptr) << to_json(rows[1]);
  ASSERT_EQ(last->size(), 3u) << to_json(rows[1]);
  EXPECT_EQ(*(*last)[1].as_int(), *(*last)[0].as_int() + 1);
  EXPECT_EQ(*(*last)[2].as_int(), *(*last)[1].as_int() + 1);
  EXPECT_GE(*(*last)[2].as_int(), 5) << "the window's query did not run between reads: " << to_json(rows[1]);
}

TEST(Fifo, TakesAQuery) {
  EXPECT_NE(error_of_run([] { run_rows(default_registry(), "SELECT * FROM fifo(query=3)"); })
                .find("fifo(): query: expected a query, got int"),
            std::string::npos);
}

}  // namespace
}  // namespace outpost::vql
