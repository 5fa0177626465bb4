#pragma once
// Whose log line is it? spdlog's default logger is one per process, and every
// part of the agent logs through it; several agents may run in one process,
// each with its own level and sinks (its inspector's ring, its log file, the
// host's log sink). So the default logger routes by thread: a line goes to
// the route of the agent the logging thread works for (t_log_route), and a
// line from any other thread goes where the default logger sent it before.
//
// Who sets t_log_route (actors/log_thread.hpp): agent actors while they run
// (instrumented.hpp), the agent's own threads from their start (they take
// their creator's), and the library's calls for the host thread making them
// (ScopedLogRoute).

#include <spdlog/common.h>
#include <spdlog/details/log_msg.h>
#include <spdlog/sinks/sink.h>

#include <atomic>
#include <vector>

#include "actors/log_thread.hpp"

namespace outpost {

// One agent's log: its level and sinks. Any thread; the sinks are fixed at
// construction (each sink is thread-safe: spdlog's _mt sinks).
class LogRoute {
 public:
  LogRoute(std::vector<spdlog::sink_ptr> sinks, spdlog::level::level_enum level)
      : sinks_(std::move(sinks)), level_(level) {}

  // Writes a line at or above the level to every sink; from info up, flushes
  // them (lifecycle lines reach a file at once). Never logs.
  void write(const spdlog::details::log_msg& msg) const;
  void flush() const;
  spdlog::level::level_enum level() const { return level_.load(std::memory_order_relaxed); }
  void set_level(spdlog::level::level_enum level) { level_.store(level, std::memory_order_relaxed); }

 private:
  const std::vector<spdlog::sink_ptr> sinks_;
  std::atomic<spdlog::level::level_enum> level_;
};

// Makes spdlog's default logger route by thread, unless it does already: it
// then takes every level, and a line of no route goes to the sinks the
// default logger had, at its level then. Any thread; call before an agent's
// threads log (a host that replaces the default logger later takes the
// routing away: agents' lines then go to its logger).
void route_default_logger();

}  // namespace outpost
