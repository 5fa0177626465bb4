// The link's small pieces with their own state, on time passed in: retries
// of a buffer operation, reconnect backoff, and the log rate limiter.

#include <gtest/gtest.h>

#include "net/agent/backoff.hpp"
#include "net/log_limiter.hpp"
#include "net/agent/retry.hpp"

namespace outpost::net {
namespace {
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

TEST(Retry, OneRetryPendingAtATimeAfterADoublingDelay) {
  Retry r({100ms, 1000ms});
  EXPECT_EQ(r.failed(), std::optional(100ms));
  EXPECT_TRUE(r.pending());
  EXPECT_EQ(r.failed(), std::nullopt) << "a second failure while one retry is pending";
  r.due();
  EXPECT_FALSE(r.pending());
  EXPECT_EQ(r.failed(), std::optional(200ms));
  for (int i = 0; i < 5; ++i) {
    r.due();
    r.failed();
  }
  r.due();
  EXPECT_EQ(r.failed(), std::optional(1000ms)) << "beyond the cap";
  r.succeeded();
  EXPECT_FALSE(r.pending());
  EXPECT_EQ(r.failed(), std::optional(100ms)) << "a success starts again small";
  EXPECT_EQ(r.failures(), 10u);
}

TEST(ReconnectBackoff, ShortSessionsThatStoreNothingKeepBackingOff) {
  ReconnectBackoff b({1000ms, 60000ms}, 30s, 7);
  auto t = Clock::now();
  b.next(t);  // the first attempt failed
  for (int i = 0; i < 10; ++i) {  // connects, but the collector cannot store
    b.connected(t);
    t += 2s;
    b.next(t);
  }
  EXPECT_EQ(b.attempts(), 11u) << "a session that proved nothing reset the backoff";
}

TEST(ReconnectBackoff, AStoredUploadOrALongSessionStartsAgainSmall) {
  ReconnectBackoff b({1000ms, 60000ms}, 30s, 7);
  auto t = Clock::now();
  for (int i = 0; i < 5; ++i) b.next(t);
  b.stored();  // no session up: proves nothing
  b.next(t);
  EXPECT_EQ(b.attempts(), 6u);
  b.connected(t);
  b.stored();
  EXPECT_LE(b.next(t + 1s), 1000ms);
  EXPECT_EQ(b.attempts(), 1u);

  for (int i = 0; i < 5; ++i) b.next(t);
  b.connected(t);
  EXPECT_LE(b.next(t + 30s), 1000ms) << "a session up for 30 s proved the collector healthy";
  EXPECT_EQ(b.attempts(), 1u);
}

TEST(LogLimiter, TheFirstEventOfAWindowIsLoggedThenACount) {
  LogLimiter limit(60s);
  auto t = Clock::now();
  EXPECT_EQ(limit.close_if_over(t), 0u);
  EXPECT_TRUE(limit.allow(t));
  int logged = 1;
  for (int i = 1; i < 1000; ++i) {  // 1,000 refusals in 10 s
    auto now = t + i * 10ms;
    EXPECT_EQ(limit.close_if_over(now), 0u);
    logged += limit.allow(now);
  }
  EXPECT_EQ(logged, 1);
  EXPECT_EQ(limit.suppressed(), 999u);
  EXPECT_EQ(limit.close_if_over(t + 59s), 0u) << "the window is not over";
  EXPECT_EQ(limit.close_if_over(t + 60s), 999u);
  EXPECT_EQ(limit.close_if_over(t + 61s), 0u) << "counted once";
  EXPECT_TRUE(limit.allow(t + 61s)) << "the next event opens a new window";
  EXPECT_FALSE(limit.allow(t + 62s));
  EXPECT_EQ(limit.close(), 1u);
  EXPECT_TRUE(limit.allow(t + 63s)) << "closed early";
}

}  // namespace
}  // namespace outpost::net
