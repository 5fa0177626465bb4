#pragma once
// The CAF settings every agent process runs with.

#include <caf/actor_system_config.hpp>

#include <algorithm>
#include <thread>

namespace outpost {

// CAF 0.17's idle workers poll 500 times, 50 us apart, before they sleep on
// a condition variable: 25 ms of wakeups each time a worker runs dry, which
// an endpoint agent (and the collector beside it in benchmarks) pays in CPU.
// 20 polls keep the hand-off fast under load; a sleeping worker is woken by
// the next message from outside anyway.
inline caf::actor_system_config& configure_scheduler(caf::actor_system_config& cfg) {
  cfg.set("scheduler.max-threads", std::max(2u, std::thread::hardware_concurrency()));
  cfg.set("work-stealing.moderate-poll-attempts", 20);
  return cfg;
}

}  // namespace outpost
