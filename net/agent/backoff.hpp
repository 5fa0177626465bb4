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

  // After a session that worked: the next failure starts small again.
  void reset() { attempts_ = 0; }
  unsigned attempts() const { return attempts_; }

 private:
  BackoffPolicy policy_;
  std::mt19937_64 rng_;
  unsigned attempts_ = 0;
};

// Reconnect delays that start small again only after a session proved
// healthy: it had an upload stored, or it stayed up for `healthy_after`. A
// collector that accepts sessions but cannot store is retried with growing
// delays, not at once after each short session. One thread owns it.
class ReconnectBackoff {
 public:
  using Clock = std::chrono::steady_clock;

  explicit ReconnectBackoff(BackoffPolicy policy,
                            std::chrono::milliseconds healthy_after = std::chrono::seconds(30),
                            uint64_t seed = std::random_device{}())
      : backoff_(policy, seed), healthy_after_(healthy_after) {}

  // A session is up since `now`.
  void connected(Clock::time_point now) {
    up_since_ = now;
    session_up_ = true;
    stored_ = false;
  }
  // The collector stored an upload of the session that is up.
  void stored() { stored_ = session_up_; }
  // The session (or an attempt at one) ended at `now`: the delay before the next attempt.
  std::chrono::milliseconds next(Clock::time_point now) {
    if (session_up_ && (stored_ || now - up_since_ >= healthy_after_)) backoff_.reset();
    session_up_ = stored_ = false;
    return backoff_.next();
  }
  unsigned attempts() const { return backoff_.attempts(); }  // failures since the last healthy session

 private:
  Backoff backoff_;
  std::chrono::milliseconds healthy_after_;
  Clock::time_point up_since_{};
  bool session_up_ = false, stored_ = false;
};

}  // namespace outpost::net
