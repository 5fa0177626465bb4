#pragma once
// The agent's counters for Prometheus: OpenMetrics text (actors/openmetrics.hpp)
// served over HTTP at GET /metrics on an address of the configuration's
// (inspector.metrics; none by default, loopback only unless allowed).
//
// Threads: construct and destroy on one thread (the agent's main). The
// server's own thread answers requests: it reads the registry and asks the
// buffer and the link for their status through a short-lived helper actor;
// it never blocks on an actor.

#include <caf/actor_system.hpp>

#include <memory>
#include <string>

#include "actors/registry.hpp"
#include "net/agent/server_thread.hpp"

namespace outpost::net {

class MetricsServer {
 public:
  // Listens on `address` (host:port; port 0 takes any free one) before it
  // returns; throws std::runtime_error naming the address when it cannot.
  MetricsServer(caf::actor_system& sys, ActorRegistry& registry, const std::string& address);
  ~MetricsServer();  // stops serving; a scrape under way is cut off
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  uint16_t port() const { return port_; }  // the one listened on

  class Loop;  // the server's thread (metrics_server.cpp)

 private:
  caf::actor_system& sys_;
  ActorRegistry& registry_;
  uint16_t port_ = 0;
  std::unique_ptr<ServerThread> thread_;  // made last: its loop uses the above
};

}  // namespace outpost::net
