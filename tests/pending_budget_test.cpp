// The pending budget's waiters: a query that stops while it waits (or just
// after its wake) must not keep the others waiting.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

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

// Queries on different CAF workers share one budget: reserving, waiting and
// releasing from many threads at once, every one gets through and nothing
// stays counted (the ThreadSanitizer run checks the locking).
TEST(PendingBudget, ThreadsThatReserveWaitAndReleaseAllGetThrough) {
  PendingBudget budget(600);
  constexpr int kThreads = 8, kRounds = 500;
  std::atomic<int> done{0}, waits{0}, stuck{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRounds; ++i) {
        uint64_t bytes = 100 + static_cast<uint64_t>(t * 37 + i) % 400;
        while (!budget.try_reserve(bytes)) {
          auto woken = std::make_shared<std::promise<void>>();
          auto once = std::make_shared<std::once_flag>();
          auto fired = woken->get_future();
          uint64_t token = budget.wait_for(bytes, [woken, once] { std::call_once(*once, [&] { woken->set_value(); }); });
          if (token == 0) continue;  // room came meanwhile
          ++waits;
          if (fired.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
            ++stuck;  // a lost wake
            budget.forget(token);
            return;
          }
        }
        for (int y = 0; y < 20; ++y) std::this_thread::yield();  // held a moment, as an append is
        budget.release(bytes);
      }
      ++done;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(stuck, 0);
  EXPECT_EQ(done, kThreads);
  EXPECT_GT(waits, 0) << "the budget never ran out: the test did not test waiting";
  EXPECT_EQ(budget.pending(), 0u);
}

}  // namespace
}  // namespace outpost
