#pragma once
// Reconnect delays: exponential with full jitter (a uniform draw below the
// exponential bound), so that many agents cut off together do not come back
// together. Its own small piece with its own state, as in Zeek's Broker.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>

namespace outpost::net {

struct BackoffPolicy {
  std::chrono::milliseconds initial{1000};
  std::chrono::milliseconds cap{60000};
};

class Backoff {
 public:
  explicit Backoff(BackoffPolicy policy, uint64_t seed = std::random_device{}())
      : policy_(policy), rng_(seed) {}

  // The delay before the next attempt; each call doubles the bound up to the cap.
  std::chrono::milliseconds next() {
    auto bound = policy_.initial.count() << std::min<unsigned>(attempts_, 30);
    bound = std::min<int64_t>(bound, policy_.cap.count());
    ++attempts_;
    return std::chrono::milliseconds(std::uniform_int_distribution<int64_t>(0, bound)(rng_));
  }

  // After a connection that worked: the next failure starts small again.
  void reset() { attempts_ = 0; }
  unsigned attempts() const { return attempts_; }

 private:
  BackoffPolicy policy_;
  std::mt19937_64 rng_;
  unsigned attempts_ = 0;
};

}  // namespace outpost::net
