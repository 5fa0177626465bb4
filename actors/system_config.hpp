#pragma once
// The CAF settings every agent process runs with.

#include <caf/actor_system_config.hpp>
#include <caf/timespan.hpp>

#include <algorithm>
#include <chrono>
#include <thread>

namespace outpost {

// A CAF 0.17 worker that runs dry spins 100 polls, sleeps 50 us between up to
// 500 more, then waits on a condition variable 10 ms at a time, stealing at
// each timeout. Jobs from outside the workers (timers, the detached buffer,
// other threads) wake a worker in that wait but not one in a poll's sleep.
// No polls and 100 ms waits, measured with 2 workers: the idle agent wakes
// 66 times/s, not 294; its workers 90, not 798, with a 10 rows/s query; a
// round trip from another thread to an actor takes 10-24 us, not 85-108;
// outpost-bench pipeline and e2e are unchanged within noise. The price: a job
// one actor sends another while the other worker waits (behind a long
// handler, a fan-out) is stolen within 100 ms, not 10.
inline caf::actor_system_config& configure_scheduler(caf::actor_system_config& cfg) {
  cfg.set("scheduler.max-threads", std::max(2u, std::thread::hardware_concurrency()));
  cfg.set("work-stealing.moderate-poll-attempts", 0);
  cfg.set("work-stealing.relaxed-sleep-duration", caf::timespan{std::chrono::milliseconds(100)});
  return cfg;
}

}  // namespace outpost
