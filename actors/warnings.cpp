#include "actors/warnings.hpp"

#include <fmt/format.h>

#include <map>

namespace outpost {
namespace {

int64_t ns(std::chrono::milliseconds ms) { return static_cast<int64_t>(ms.count()) * 1000000; }

std::string seconds(int64_t ns) { return fmt::format("{:.1f} s", static_cast<double>(ns) / 1e9); }

std::string who(const ActorMetrics& m) {
  auto name = m.name();
  return name.empty() ? std::string(m.kind) : std::string(m.kind) + " " + name;
}

}  // namespace

std::vector<Warning> compute_warnings(const std::vector<ActorRegistry::Entry>& live,
                                      const std::vector<ActorRegistry::Exit>& exits,
                                      const WarningThresholds& limits, int64_t now, int64_t wall) {
  std::vector<Warning> out;
  auto since_wall = [&](int64_t steady) { return wall - (now - steady); };
  for (auto& e : live) {
    const ActorMetrics& m = *e.metrics;
    if (int64_t since = m.backlog_since_ns.load(); since && now - since >= ns(limits.mailbox_backlog))
      out.push_back({"mailbox-backlog", m.id, who(m),
                     fmt::format("its mailbox has held over {} messages for {} (now {}): it handles "
                                 "messages slower than they come",
                                 kBacklogMessages, seconds(now - since), m.mailbox_size()),
                     since_wall(since)});
    if (int64_t busy = m.busy_since_ns.load(); busy && now - busy >= ns(limits.slow_handler) && !m.detached)
      out.push_back({"busy-handler", m.id, who(m),
                     fmt::format("one message has been in its handler for {}, holding a shared worker thread",
                                 seconds(now - busy)),
                     since_wall(busy)});
    // A slow handling or a drop is warned about for `recent` after the last one, then no more.
    int64_t slow_at = m.slow_last_wall_ns.load();
    if (uint64_t slow = m.slow_handlings.load(); slow && !m.detached && wall - slow_at <= ns(limits.recent))
      out.push_back({"slow-handler", m.id, who(m),
                     fmt::format("{} message(s) took over {} ms in its handler (the longest {} ms; the last {} "
                                 "ago), holding a shared worker thread",
                                 slow, limits.slow_handler.count(), m.handling_max_ns.load() / 1000000,
                                 seconds(wall - slow_at)),
                     slow_at});
    int64_t in_state = now - m.state_since_ns.load();
    auto state = m.state();
    if (state == ActorState::waiting_for_space && in_state >= ns(limits.backpressure))
      out.push_back({"backpressure", m.id, who(m),
                     fmt::format("waiting for space for {}: the buffer is at its limit or the pending "
                                 "budget is used up",
                                 seconds(in_state)),
                     since_wall(m.state_since_ns.load())});
    if ((state == ActorState::offline || state == ActorState::backing_off) &&
        in_state >= ns(limits.link_offline)) {
      auto [error, at] = m.last_error();
      out.push_back({"link-offline", m.id, who(m),
                     fmt::format("not delivering for {}{}", seconds(in_state),
                                 error.empty() ? std::string{} : "; last error: " + error),
                     since_wall(m.state_since_ns.load())});
    }
    int64_t dropped_at = m.dropped_last_wall_ns.load();
    if (uint64_t dropped = m.dropped.load(); dropped && wall - dropped_at <= ns(limits.recent))
      out.push_back({"events-dropped", m.id, who(m),
                     fmt::format("{} event(s) lost because a subscriber's queue was full (the last {} ago)",
                                 dropped, seconds(wall - dropped_at)),
                     dropped_at});
  }
  // Failures in the window, per kind and name (a restarted query is a new actor).
  std::map<std::string, std::pair<unsigned, const ActorRegistry::Exit*>> failures;
  for (auto& x : exits)
    if (!x.reason.empty() && wall - x.wall_ns <= ns(limits.restart_window)) {
      auto& f = failures[x.kind + " " + x.name];
      ++f.first;
      f.second = &x;
    }
  for (auto& [name, f] : failures)
    if (f.first >= limits.restarts)
      out.push_back({"restarting", f.second->id, name,
                     fmt::format("failed {} times in the last {} (last: {})", f.first,
                                 seconds(ns(limits.restart_window)), f.second->reason),
                     f.second->wall_ns});
  return out;
}

}  // namespace outpost
