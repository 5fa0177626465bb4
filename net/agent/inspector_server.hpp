#pragma once
// The agent's inspector endpoint: schemas/inspector.capnp served on a unix
// socket, on a thread of its own, for `outpostctl`.
//
// The socket is created with mode 0600 (bound under a temporary name,
// chmod'ed, then renamed into place, so it never exists with a wider mode),
// and a connecting process must also run as the agent's user or as root
// (SO_PEERCRED). A socket file left by an agent that died is replaced; one a
// live agent still serves is refused.
//
// Threads: construct and destroy on one thread (the agent's main). The
// server's own thread reads the registry and the log ring, and asks actors
// through short-lived helper actors; it never blocks on an actor.

#include <caf/actor_system.hpp>

#include <memory>
#include <string>

#include "actors/agent_config.hpp"
#include "actors/interfaces.hpp"
#include "actors/registry.hpp"
#include "net/agent/inspector_service.hpp"
#include "net/agent/server_thread.hpp"

namespace outpost::net {


class InspectorServer {
 public:
  // Listens on spec.socket before it returns; throws std::runtime_error
  // naming the path when it cannot (a live agent serves it, a directory is
  // missing, no permission).
  explicit InspectorServer(InspectorContext context);
  // Stops serving and removes the socket (if it is still this server's).
  ~InspectorServer();
  InspectorServer(const InspectorServer&) = delete;
  InspectorServer& operator=(const InspectorServer&) = delete;

  class Loop;  // the server's thread (inspector_server.cpp)

 private:
  InspectorContext context_;
  std::unique_ptr<ServerThread> thread_;  // made last: its loop uses the context
};

}  // namespace outpost::net
