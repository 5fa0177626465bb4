#pragma once
// Small helpers for the caf::settings every actor answers `status` with.

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/settings.hpp>

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "actors/interfaces.hpp"

namespace outpost {

inline void put_count(caf::settings& s, const std::string& key, uint64_t value) {
  caf::put(s, key, static_cast<int64_t>(value));
}

// A count from a status, or -1 when it is missing.
inline int64_t count(const caf::settings& s, const std::string& key) {
  return caf::get_or(s, key, int64_t{-1});
}

// An actor's error as a person reads it: the text it was made with (a
// failed query's exception), else CAF's rendering.
inline std::string readable_error(caf::actor_system& sys, const caf::error& e) {
  auto& context = e.context();
  if (context.match_elements<std::string>()) return context.get_as<std::string>(0);
  return sys.render(e);
}

// Asks an actor for its status and waits; throws with CAF's rendering of the
// error when the actor is gone or does not answer in time.
template <class Handle>
caf::settings request_status(caf::scoped_actor& self, const Handle& actor,
                             std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  caf::settings result;
  self->request(actor, timeout, status_atom::value)
      .receive([&](caf::settings& s) { result = std::move(s); },
               [&](caf::error& e) { throw std::runtime_error(self->system().render(e)); });
  return result;
}

}  // namespace outpost
