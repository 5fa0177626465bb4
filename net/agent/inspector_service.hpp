#pragma once
// schemas/inspector.capnp served on the calling thread's kj event loop. The
// agent's inspector socket (inspector_server.hpp) makes one per connection,
// and so does the agent's connection to its collector (read-only there).
//
// Threads: make and use it on one kj event loop's thread. It reads the
// registry and the log ring (thread-safe), and asks actors for their status
// and the supervisor for control through short-lived helper actors whose
// answers come back through kj cross-thread fulfillers: it never blocks.

#include <caf/actor_system.hpp>
#include <kj/timer.h>

#include <memory>
#include <string>

#include "actors/agent_config.hpp"
#include "actors/interfaces.hpp"
#include "actors/registry.hpp"
#include "net/agent/log_ring.hpp"
#include "schemas/inspector.capnp.h"

namespace outpost::net {

struct InspectorContext {
  caf::actor_system& sys;
  ActorRegistry& registry;
  std::shared_ptr<LogRing> logs;  // may be null: no log lines
  supervisor_actor supervisor;    // carries out suspend, resume, restart
  InspectorSpec spec;             // spec.control false: control is refused
  std::string agent;              // the agent's name, for hello
};

kj::Own<inspector::Inspector::Server> make_inspector_service(const InspectorContext& context, kj::Timer& timer);

// ask_statuses (actors/registry.hpp) as a promise for the calling kj thread:
// each actor's status, those that did not answer within 3 s left out.
kj::Promise<Statuses> statuses_of(caf::actor_system& sys, std::vector<ActorRegistry::Entry> actors);

}  // namespace outpost::net
