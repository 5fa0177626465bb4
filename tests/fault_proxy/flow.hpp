#pragma once
// One direction of a relayed connection, where delay and rate limits are applied.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>

namespace outpost::testing::relay {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

constexpr size_t kReadSize = 64 * 1024;

// Reads from one socket and writes to another, which it borrows: the connection owns both.
class Flow {
 public:
  Flow(int from, int to, std::atomic<uint64_t>& delivered)
      : from_(from), to_(to), delivered_(delivered) {}

  bool wants_read() const;
  bool write_blocked() const { return write_blocked_; }
  bool finished() const { return finished_; }  // FIN passed on.
  void unblock() { write_blocked_ = false; }
  void restart_pacing(TimePoint now) { paced_until_ = now; }

  // Both return false when the connection is broken and must be aborted.
  bool read(TimePoint now, std::chrono::milliseconds delay);
  bool write(TimePoint now, uint64_t rate);  // Whatever is due; rate 0 is unlimited.

  // When write() next has something to do, unless it's waiting for the socket.
  std::optional<TimePoint> next_due(uint64_t rate) const;

 private:
  // No bytes stands for FIN, queued like data so that it can't overtake it.
  struct Chunk {
    TimePoint due;
    std::string bytes;
    size_t written;
  };

  int from_;
  int to_;
  std::atomic<uint64_t>& delivered_;
  std::deque<Chunk> queue_;
  size_t queued_ = 0;
  bool read_eof_ = false;
  bool write_blocked_ = false;
  bool finished_ = false;
  TimePoint paced_until_{};
};

}  // namespace outpost::testing::relay
