#pragma once
// The wall clock that now_ns() (schemas/codec.hpp) reads, which rows and
// records are stamped with: the system's, moved by an offset that tests set
// to show that the agent decides nothing by it. Its timers, batch delays,
// backoffs, periods and the process tracker's syncs go by the steady clock or
// by counts.

#include <chrono>

namespace outpost::schemas {

// From now on now_ns() is the system clock plus `offset` (which replaces the
// last one). Any thread; later now_ns() calls on every thread see it.
void set_wall_clock_offset(std::chrono::nanoseconds offset);

}  // namespace outpost::schemas
