#pragma once
// The inspector's warnings: conditions worth a person's attention, each
// with the actor and the evidence, computed from the registry's counters
// when asked (nothing runs while nobody asks).

#include <string>
#include <vector>

#include "actors/agent_config.hpp"
#include "actors/registry.hpp"

namespace outpost {

struct Warning {
  std::string kind;  // mailbox-backlog, slow-handler, busy-handler, backpressure, link-offline,
                     // events-dropped, restarting
  uint64_t actor = 0;
  std::string actor_name;  // kind and name: "query Linux.Sys.Pslist"
  std::string evidence;    // what was seen, with numbers
  int64_t since_wall_ns = 0;  // when the condition began (or was last seen); 0: unknown
};

// Any thread. `now` is steady_ns(); `wall` is wall_ns() at the same time.
std::vector<Warning> compute_warnings(const std::vector<ActorRegistry::Entry>& live,
                                      const std::vector<ActorRegistry::Exit>& exits,
                                      const WarningThresholds& limits, int64_t now, int64_t wall);

}  // namespace outpost
