#pragma once
// Shared pieces of the actor tests: records of a given size, and waiting for
// a condition on an actor's status with a generous deadline (behaviour, not
// timing, is what these tests assert).

#include <caf/all.hpp>

#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "actors/interfaces.hpp"
#include "actors/status.hpp"
#include "schemas/codec.hpp"

namespace outpost::testing {

inline RecordRef make_record(size_t text_size, uint64_t query_id = 1) {
  auto encoded = schemas::encode_log(query_id, schema::LogMessage::Level::INFO,
                                     std::string(text_size, 'x').c_str());
  return {std::make_shared<const schemas::Encoded>(std::move(encoded)), query_id,
          schemas::now_ns()};
}

template <class Handle>
caf::settings status_of(caf::scoped_actor& self, const Handle& actor) {
  return request_status(self, actor, std::chrono::seconds(60));  // generous: CI machines are busy
}

// Polls `done` every 10 ms for up to `limit`; true once it holds.
inline bool eventually(const std::function<bool()>& done,
                       std::chrono::milliseconds limit = std::chrono::seconds(30)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

}  // namespace outpost::testing
