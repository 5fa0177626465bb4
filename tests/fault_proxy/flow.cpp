#include "tests/fault_proxy/flow.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "tests/fault_proxy/socket.hpp"

namespace outpost::testing::relay {
namespace {

// A flow stops reading once it holds this much, so a stalled reader pushes back on the writer
// through TCP flow control just as it would without the proxy in between.
constexpr size_t kMaxQueued = 1024 * 1024;
// A rate-limited flow writes at most 1/kRateSlices of a second's allowance at a time, so that
// bursts stay short and a lower bound on transfer time holds for small transfers too.
constexpr uint64_t kRateSlices = 50;

}  // namespace

bool Flow::wants_read() const { return !read_eof_ && queued_ < kMaxQueued; }

bool Flow::read(TimePoint now, std::chrono::milliseconds delay) {
  char buffer[kReadSize];
  ssize_t n = recv(from_, buffer, sizeof buffer, 0);
  if (n < 0) return errno == EINTR || would_block(errno);
  if (n == 0) read_eof_ = true;
  queue_.push_back(Chunk{now + delay, std::string(buffer, static_cast<size_t>(n)), 0});
  queued_ += static_cast<size_t>(n);
  return true;
}

bool Flow::write(TimePoint now, uint64_t rate) {
  while (!write_blocked_ && !queue_.empty() && queue_.front().due <= now) {
    Chunk& chunk = queue_.front();
    if (chunk.bytes.empty()) {
      shutdown(to_, SHUT_WR);
      finished_ = true;
      queue_.pop_front();
      continue;
    }
    size_t size = chunk.bytes.size() - chunk.written;
    if (rate > 0) {
      if (paced_until_ > now) break;
      size = std::min<uint64_t>(size, std::max<uint64_t>(1, rate / kRateSlices));
    }
    ssize_t n = send(to_, chunk.bytes.data() + chunk.written, size, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (!would_block(errno)) return false;
      write_blocked_ = true;
      break;
    }
    auto sent = static_cast<size_t>(n);
    delivered_ += sent;
    chunk.written += sent;
    queued_ -= sent;
    if (rate > 0) {
      auto cost = std::chrono::nanoseconds(static_cast<int64_t>(sent * 1'000'000'000ULL / rate));
      paced_until_ = std::max(paced_until_, now) + cost;
    }
    if (chunk.written == chunk.bytes.size()) queue_.pop_front();
  }
  return true;
}

std::optional<TimePoint> Flow::next_due(uint64_t rate) const {
  if (write_blocked_ || queue_.empty()) return std::nullopt;
  const Chunk& next = queue_.front();
  if (rate > 0 && !next.bytes.empty()) return std::max(next.due, paced_until_);
  return next.due;
}

}  // namespace outpost::testing::relay
