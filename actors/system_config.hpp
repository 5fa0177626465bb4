#pragma once
// The CAF settings every agent process runs with.

#include <caf/actor_system_config.hpp>
#include <caf/timespan.hpp>

#include <algorithm>
#include <chrono>
#include <thread>

#include "actors/scheduler_policy.hpp"

namespace outpost {

// Workers as SleepingWorkStealing schedules them: a worker that runs dry
// spins 100 polls (no moderate polls: a round trip from another thread to an
// actor took 10-24 us, not 85-108 with CAF's default ones), then sleeps until
// a job comes for it or it is poked for one, at most 1 s at a time (a
// backstop steal). CAF's own policy, stealing every 100 ms, woke the idle
// agent's two workers 25 times a second, 7 with this one (BENCHMARKS.md,
// footprint). The price: a job one actor sends another behind a long handler
// on the same worker, with no other job queued, waits for the handler's end
// or the backstop.
inline caf::actor_system_config& configure_scheduler(caf::actor_system_config& cfg) {
  cfg.load<SleepingScheduler>();
  cfg.set("scheduler.max-threads", std::max(2u, std::thread::hardware_concurrency()));
  cfg.set("work-stealing.moderate-poll-attempts", 0);
  cfg.set("work-stealing.relaxed-sleep-duration", caf::timespan{std::chrono::seconds(1)});
  return cfg;
}

}  // namespace outpost
