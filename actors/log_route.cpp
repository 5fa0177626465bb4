#include "actors/log_route.hpp"

#include <spdlog/spdlog.h>

#include <mutex>

namespace outpost {

void LogRoute::write(const spdlog::details::log_msg& msg) const {
  if (msg.level < level()) return;
  for (auto& sink : sinks_)
    if (sink->should_log(msg.level)) {
      sink->log(msg);
      if (msg.level >= spdlog::level::info) sink->flush();
    }
}

void LogRoute::flush() const {
  for (auto& sink : sinks_) sink->flush();
}

namespace {

// The default logger's only sink once it routes.
class RoutingSink final : public spdlog::sinks::sink {
 public:
  explicit RoutingSink(std::shared_ptr<spdlog::logger> before) : before_(std::move(before)) {}

  void log(const spdlog::details::log_msg& msg) override {
    if (auto* route = t_log_route) return route->write(msg);
    if (!before_ || !before_->should_log(msg.level)) return;
    for (auto& sink : before_->sinks())
      if (sink->should_log(msg.level)) sink->log(msg);
    if (msg.level >= before_->flush_level()) flush();
  }
  void flush() override {
    if (auto* route = t_log_route) return route->flush();
    if (before_)
      for (auto& sink : before_->sinks()) sink->flush();
  }
  // Each sink keeps its own pattern.
  void set_pattern(const std::string&) override {}
  void set_formatter(std::unique_ptr<spdlog::formatter>) override {}

 private:
  const std::shared_ptr<spdlog::logger> before_;  // what the default logger was
};

}  // namespace

void route_default_logger() {
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  auto current = spdlog::default_logger();
  if (current && current->name() == "outpost-routed") return;
  auto logger = std::make_shared<spdlog::logger>("outpost-routed", std::make_shared<RoutingSink>(current));
  logger->set_level(spdlog::level::trace);  // each route has its level; the lines of no route, the logger's before
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace outpost
