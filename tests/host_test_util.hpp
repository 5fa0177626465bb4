#pragma once
// Shared pieces of the host tests (host_sink_test.cpp, host_push_test.cpp):
// a sink that holds what it is handed, and the agent's actors' status read
// through the public API.

#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "outpost/outpost.hpp"
#include "schemas/json_reader.hpp"

namespace outpost::testing {

// What a sink was handed, held for the test to acknowledge (or acknowledged
// at once, when `auto_ack`).
struct Held {
  std::mutex mutex;
  std::vector<std::pair<SinkBatch, SinkAck>> batches;
  bool auto_ack = false;

  Sink sink() {
    return [this](const SinkBatch& b, SinkAck ack) {
      std::lock_guard<std::mutex> lock(mutex);
      batches.emplace_back(b, ack);
      if (auto_ack) ack();
    };
  }
  // The lane's batches so far.
  std::vector<std::pair<SinkBatch, SinkAck>> of(const std::string& lane) {
    std::lock_guard<std::mutex> lock(mutex);
    std::vector<std::pair<SinkBatch, SinkAck>> out;
    for (auto& b : batches)
      if (b.first.lane == lane) out.push_back(b);
    return out;
  }
  // Acknowledges what it holds, and from now on everything at once.
  void ack_all() {
    std::lock_guard<std::mutex> lock(mutex);
    auto_ack = true;
    for (auto& b : batches) b.second();
  }
};

// An actor's status, by kind, from status_json(); null when it is not listed.
inline schemas::Json status_of(const Agent& agent, const std::string& kind) {
  for (auto& a : schemas::Json::parse(agent.status_json()).a)
    if (a["Kind"].s == kind) return a["Status"];
  return {};
}
// A count in it; 0 when missing.
inline uint64_t count_of(const Agent& agent, const std::string& kind, const std::string& key) {
  auto s = status_of(agent, kind);
  return s.has(key) ? s[key].u() : 0;
}
// A count of the events lane in it; 0 when missing.
inline uint64_t events_count(const Agent& agent, const std::string& kind, const std::string& key) {
  auto s = status_of(agent, kind);
  return s.has("lanes") ? s["lanes"]["events"][key].u() : 0;
}

}  // namespace outpost::testing
