#pragma once
#include <caf/typed_event_based_actor.hpp>
#include <caf/weak_intrusive_ptr.hpp>

#include <vector>

#include "actors/instrumented.hpp"
#include "actors/interfaces.hpp"

namespace outpost {

// Wakes sleeping queries. A CAF delayed message costs ~200 bytes while it
// waits; a sleeper here costs 16, and the waker keeps one CAF timer in all.
struct waker_state {
  static inline const char* name = "waker";
  using time_point = caf::actor_clock::time_point;

  struct Sleeper {
    time_point due;
    caf::weak_actor_ptr who;  // weak: a stopped query is freed at once
    bool operator<(const Sleeper& other) const { return due > other.due; }  // min-heap
  };

  std::vector<Sleeper> sleepers;  // a heap, earliest on top
  time_point armed = time_point::max();  // due time of the newest CAF timer
  uint64_t wakeups = 0;
};

waker_self_actor::behavior_type waker(instrumented<waker_self_actor, waker_state> self);

}  // namespace outpost
