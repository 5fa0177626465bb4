#pragma once
// Which agent's log a thread writes to (actors/log_route.hpp): without
// spdlog's headers, for the code every actor includes.

namespace outpost {

class LogRoute;

// The route of the agent this thread works for; null for other threads.
inline thread_local const LogRoute* t_log_route = nullptr;

// Routes this thread's lines for a scope, then restores the route before.
class ScopedLogRoute {
 public:
  explicit ScopedLogRoute(const LogRoute* route) : before_(t_log_route) { t_log_route = route; }
  ~ScopedLogRoute() { t_log_route = before_; }
  ScopedLogRoute(const ScopedLogRoute&) = delete;
  ScopedLogRoute& operator=(const ScopedLogRoute&) = delete;

 private:
  const LogRoute* before_;
};

}  // namespace outpost
