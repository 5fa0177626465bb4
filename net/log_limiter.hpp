#pragma once
// Keeps a repeated warning from flooding the log: the first event of a window
// is logged in full, the rest are counted, and the count is logged as one
// summary ("N more ... in the last 60 s") once the window is over. One thread
// owns it; time is passed in, so it is tested without waiting.

#include <chrono>
#include <cstdint>

namespace outpost::net {

class LogLimiter {
 public:
  using Clock = std::chrono::steady_clock;

  explicit LogLimiter(std::chrono::milliseconds window = std::chrono::seconds(60))
      : window_(window) {}

  // Before each event (and whenever convenient, e.g. on a timer at the end of
  // a window): closes the window if it is over and returns how many events it
  // counted beyond its first; log them as a summary unless 0.
  uint64_t close_if_over(Clock::time_point now) {
    if (!open_ || now - opened_ < window_) return 0;
    open_ = false;
    uint64_t n = suppressed_;
    suppressed_ = 0;
    return n;
  }
  // Closes the window now, over or not (the events have stopped for a known
  // reason); returns what close_if_over would.
  uint64_t close() {
    open_ = false;
    uint64_t n = suppressed_;
    suppressed_ = 0;
    return n;
  }
  // An event at `now`: true to log it in full (it opens a window), false if
  // the open window counts it instead.
  bool allow(Clock::time_point now) {
    if (open_ && now - opened_ < window_) {
      ++suppressed_;
      return false;
    }
    open_ = true;
    opened_ = now;
    return true;
  }
  uint64_t suppressed() const { return suppressed_; }  // in the open window, so far
  std::chrono::milliseconds window() const { return window_; }

 private:
  std::chrono::milliseconds window_;
  Clock::time_point opened_{};
  bool open_ = false;
  uint64_t suppressed_ = 0;
};

}  // namespace outpost::net
