#pragma once
// One operation retried after failures (a buffer read or ack of one lane):
// at most one retry pending at a time, each after a delay that doubles from
// policy.initial up to policy.cap while the failures go on, so a permanent
// error costs one attempt per delay, not one per event that would have
// started it. No jitter: the operation is local, there is no herd to spread
// (reconnects to the collector use Backoff, which has it).

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>

#include "net/agent/backoff.hpp"

namespace outpost::net {

class Retry {
 public:
  explicit Retry(BackoffPolicy policy) : policy_(policy) {}

  // The operation failed: the delay after which to try again, or nothing if a
  // retry is already pending (it will try again).
  std::optional<std::chrono::milliseconds> failed() {
    ++failures_;
    if (pending_) return std::nullopt;
    pending_ = true;
    auto delay = policy_.initial.count() << std::min<unsigned>(attempts_++, 30);
    return std::chrono::milliseconds(std::min<int64_t>(delay, policy_.cap.count()));
  }
  // The pending retry's delay has passed: the operation may start again.
  void due() { pending_ = false; }
  // The operation worked: the next failure waits the initial delay again.
  void succeeded() {
    attempts_ = 0;
    pending_ = false;
  }
  // A retry is pending: do not start the operation before it is due.
  bool pending() const { return pending_; }
  uint64_t failures() const { return failures_; }  // in all

 private:
  BackoffPolicy policy_;
  unsigned attempts_ = 0;  // failures since the last success
  bool pending_ = false;
  uint64_t failures_ = 0;
};

}  // namespace outpost::net
