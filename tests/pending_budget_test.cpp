// The pending budget's waiters: a query that stops while it waits (or just
// after its wake) must not keep the others waiting.

#include <gtest/gtest.h>

#include "actors/pending_budget.hpp"

namespace outpost {
namespace {

TEST(PendingBudget, AWaiterThatStopsAfterItsWakeLetsTheNextOneIn) {
  PendingBudget budget(100);
  budget.reserve(60);
  int a_woken = 0, b_woken = 0;
  uint64_t a = budget.wait_for(80, [&] { ++a_woken; });
  uint64_t b = budget.wait_for(50, [&] { ++b_woken; });
  ASSERT_NE(a, 0u);
  ASSERT_NE(b, 0u);
  budget.release(60);  // room for A (nothing pending), not for A and B together
  EXPECT_EQ(a_woken, 1);
  EXPECT_EQ(b_woken, 0);
  budget.forget(a);  // A's query stopped before it reserved: B's turn
  EXPECT_EQ(b_woken, 1) << "a wake planned on a stopped query's bytes never came";
}

TEST(PendingBudget, AWaiterThatStopsWhileWaitingIsNeverWoken) {
  PendingBudget budget(100);
  budget.reserve(60);
  int a_woken = 0, b_woken = 0;
  uint64_t a = budget.wait_for(80, [&] { ++a_woken; });
  ASSERT_NE(budget.wait_for(50, [&] { ++b_woken; }), 0u);
  budget.forget(a);
  EXPECT_EQ(b_woken, 0) << "60 + 50 does not fit under 100";
  budget.release(60);
  EXPECT_EQ(a_woken, 0);
  EXPECT_EQ(b_woken, 1);
  EXPECT_EQ(budget.wait_for(100, [] {}), 0u) << "nothing pending: anything fits";
}

}  // namespace
}  // namespace outpost
