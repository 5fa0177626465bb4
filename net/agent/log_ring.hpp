#pragma once
// The agent's last log lines, in memory, for the inspector (`outpostctl logs`).
// A spdlog sink: add it to the logger's sinks. Any thread may log and read.

#include <spdlog/details/log_msg.h>
#include <spdlog/sinks/base_sink.h>

#include <deque>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace outpost::net {

class LogRing final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit LogRing(size_t capacity = 1000) : capacity_(capacity) {}

  // The lines after sequence number `after` still kept (at most `max`, the
  // oldest first), and the sequence number of the last line logged.
  std::pair<std::vector<std::string>, uint64_t> since(uint64_t after, size_t max) {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::string> out;
    if (after > last_) after = 0;  // a cursor from an earlier run of the agent
    uint64_t first = last_ - lines_.size() + 1;  // the sequence number of lines_.front()
    uint64_t seq = std::max(after + 1, first);
    for (; seq <= last_ && out.size() < max; ++seq) out.push_back(lines_[seq - first]);
    return {std::move(out), seq - 1};
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t buf;
    formatter_->format(msg, buf);
    std::string line(buf.data(), buf.size());
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    lines_.push_back(std::move(line));
    ++last_;
    if (lines_.size() > capacity_) lines_.pop_front();
  }
  void flush_() override {}

 private:
  const size_t capacity_;
  std::deque<std::string> lines_;
  uint64_t last_ = 0;
};

}  // namespace outpost::net
