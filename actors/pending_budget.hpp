#pragma once
// The budget for appends waiting in the buffer: bytes that queries have
// handed to the buffer and not had answered yet. Without it a full buffer
// would hold up to queries x max_in_flight x batch bytes in RAM.
//
// A query reserves a record's bytes before it sends the append and gives
// them back when the append is answered. It does not start a batch while
// the budget is used up, and holds a finished batch that would pass it
// (unless nothing else waits: a record up to kMaxRecordBytes always goes).
// Records that must go whatever the budget (a stopping query's last batch,
// a status report) are reserved anyway; the buffer's shutdown reserve,
// sized by the budget, stores them.
//
// Threads: one object, made by the buffer (buffer_actor.hpp), shared by
// every query, each on whichever CAF worker runs it. Every member may be
// called from any thread; none blocks beyond a mutex held for a few
// instructions to register or wake waiters. Wake functions run on the
// releasing thread, with no lock held.

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace outpost {

// The agent's buffer.pending_budget unless configured.
inline constexpr uint64_t kDefaultPendingBudget = 64ull << 20;

class PendingBudget {
 public:
  explicit PendingBudget(uint64_t limit_bytes) : limit_(limit_bytes) {}

  uint64_t limit() const { return limit_; }
  uint64_t pending() const { return pending_.load(); }
  // No new batch may start.
  bool used_up() const { return pending() >= limit_; }

  // Takes `bytes` if they fit under the limit, or if nothing is pending.
  bool try_reserve(uint64_t bytes) {
    uint64_t now = pending_.load();
    do {
      if (now != 0 && now + bytes > limit_) return false;
    } while (!pending_.compare_exchange_weak(now, now + bytes));
    return true;
  }

  // Takes `bytes` whatever the limit.
  void reserve(uint64_t bytes) { pending_ += bytes; }

  // Gives `bytes` back, and wakes the waiters (oldest first) whose bytes fit now.
  void release(uint64_t bytes) {
    pending_ -= bytes;
    wake_fitting();
  }

  // Registers `wake`, to be called once when `bytes` fit (use 1 for "any
  // room"). Answers the wait's token, or 0, registering nothing, if they fit
  // already.
  uint64_t wait_for(uint64_t bytes, std::function<void()> wake) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (fits(pending_.load(), bytes)) return 0;
    waiters_.push_back({++last_token_, bytes, std::move(wake)});
    return last_token_;
  }

  // The waiter `token` ends without reserving (its query stopped): it is
  // removed if still waiting, and those behind it are woken if they fit
  // (a wake planned on its bytes would otherwise never come).
  void forget(uint64_t token) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto it = waiters_.begin(); it != waiters_.end(); ++it)
        if (it->token == token) {
          waiters_.erase(it);
          break;
        }
    }
    wake_fitting();
  }

 private:
  bool fits(uint64_t pending, uint64_t bytes) const { return pending == 0 || pending + bytes <= limit_; }

  void wake_fitting() {
    std::vector<std::function<void()>> wake;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      uint64_t taken = pending_.load();
      while (!waiters_.empty() && fits(taken, waiters_.front().bytes)) {
        taken += waiters_.front().bytes;
        wake.push_back(std::move(waiters_.front().wake));
        waiters_.pop_front();
      }
    }
    for (auto& w : wake) w();
  }

  struct Waiter {
    uint64_t token;
    uint64_t bytes;
    std::function<void()> wake;
  };
  const uint64_t limit_;
  std::atomic<uint64_t> pending_{0};
  std::mutex mutex_;
  std::deque<Waiter> waiters_;
  uint64_t last_token_ = 0;  // under mutex_
};

using PendingBudgetPtr = std::shared_ptr<PendingBudget>;

}  // namespace outpost
