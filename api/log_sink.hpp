#pragma once
// The host's LogSink as a spdlog sink, for the agent's LogRoute.

#include <spdlog/details/log_msg.h>
#include <spdlog/sinks/base_sink.h>

#include <mutex>

#include "outpost/outpost.hpp"

namespace outpost {

// Calls the host one line at a time (base_sink's lock), with the message
// alone: the host formats it as it formats its own.
class HostLogSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit HostLogSink(LogSink sink) : sink_(std::move(sink)) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    LogLine line;
    line.level = level_of(msg.level);
    line.time_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(msg.time.time_since_epoch()).count();
    line.thread = msg.thread_id;
    line.message.assign(msg.payload.data(), msg.payload.size());
    try {
      sink_(line);
    } catch (...) {  // nowhere to report it: logging it would come back here
    }
  }
  void flush_() override {}

 private:
  static LogLevel level_of(spdlog::level::level_enum level) {
    switch (level) {
      case spdlog::level::trace: return LogLevel::trace;
      case spdlog::level::debug: return LogLevel::debug;
      case spdlog::level::info: return LogLevel::info;
      case spdlog::level::warn: return LogLevel::warn;
      case spdlog::level::err: return LogLevel::error;
      default: return LogLevel::critical;
    }
  }
  const LogSink sink_;
};

}  // namespace outpost
