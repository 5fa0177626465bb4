#pragma once
// The agent's actors as the inspector sees them: each one's counters
// (actors/metrics.hpp), its parent, a weak handle to ask it for its status,
// the last ones that exited, and the switches an inspector turns on while it
// watches (histograms, a bounded trace).
//
// Threads: every member function may be called from any thread. enroll and
// exited lock (once per actor's life); watching() and the trace's active()
// are one relaxed load each, which every handled message pays.

#include <caf/weak_intrusive_ptr.hpp>
#include <caf/actor_control_block.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/settings.hpp>

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "actors/metrics.hpp"

namespace outpost {

// One handled message, while tracing: steady nanoseconds.
struct TraceEvent {
  uint64_t actor = 0;
  uint64_t sender = 0;  // 0: sent from outside any actor
  uint64_t flow = 0;    // links the send to its handling; 0: sent before the trace began
  std::string type;     // the leading atom ("tick (internal)" after internal_atom; else CAF's type name);
                        // "response" for answers
  int64_t enqueued_ns = 0;  // 0 when unknown (flow 0)
  int64_t start_ns = 0;
  int64_t duration_ns = 0;
  uint64_t bytes = 0;    // of the records the message carries (an append, a read, a notification)
  std::string payload;   // those records as JSON lines, cut at kTracePayloadBytes; only when asked for
};

// How much of a message's records a trace keeps, when it keeps payloads.
inline constexpr size_t kTracePayloadBytes = 4096;

// A trace is bounded by construction: it stops by itself at max_events, at
// its deadline, or in the second it sees more than max_per_second messages.
struct TraceLimits {
  uint64_t max_events = 10000;
  uint64_t max_per_second = 20000;
  int64_t duration_ns = 10'000'000'000;
  std::set<uint64_t> actors;  // empty: every actor
  bool payloads = false;      // keep the rows the messages carry (TraceEvent::payload)
};

class TraceRecorder {
 public:
  // Starts a trace, dropping what an earlier one recorded.
  void start(const TraceLimits& limits);
  bool active() const { return active_.load(std::memory_order_relaxed); }
  bool wants(uint64_t actor) const;  // active, and actor is traced
  bool payloads() const { return payloads_.load(std::memory_order_relaxed); }
  void record(TraceEvent event);
  // Ends the trace (if it still runs) and hands over its events and why it ended.
  struct Result {
    std::vector<TraceEvent> events;
    std::string ended_by;  // "count", "rate", "deadline" or "taken"
  };
  Result take();
  bool ended() const;  // it stopped by itself (or was never started)

 private:
  void stop_locked(const char* why);
  std::atomic<bool> active_{false};
  std::atomic<bool> payloads_{false};
  mutable std::mutex mutex_;
  TraceLimits limits_;
  std::vector<TraceEvent> events_;
  std::string ended_by_;
  int64_t deadline_ns_ = 0, second_start_ns_ = 0;
  uint64_t in_second_ = 0;
};

class LogRoute;

class ActorRegistry {
 public:
  // `counters` false: actors keep no counters (the benchmark's baseline).
  explicit ActorRegistry(bool counters = true) : counters_(counters) {}

  const int64_t started_wall_ns = wall_ns();  // made with its actor system

  // The registry of the system's AgentSystemConfig; null for other systems.
  static ActorRegistry* of(const caf::actor_system& sys);

  // A new actor (its constructor); null when counters are off.
  std::shared_ptr<ActorMetrics> enroll(caf::weak_actor_ptr actor, uint64_t id, const char* kind, uint64_t parent,
                                       bool detached);
  // An actor ended (its cleanup): it leaves, and is kept among the last exits.
  void exited(const std::shared_ptr<ActorMetrics>& m, std::string reason);

  struct Entry {
    std::shared_ptr<ActorMetrics> metrics;
    caf::weak_actor_ptr actor;  // to ask it for its status
  };
  std::vector<Entry> live() const;  // in id order
  std::shared_ptr<ActorMetrics> find(uint64_t id) const;  // a live actor's; null when none
  struct Exit {
    uint64_t id = 0, parent = 0, handled = 0;
    std::string kind, name, reason;  // reason empty: it ended normally
    int64_t wall_ns = 0;
  };
  std::vector<Exit> exits() const;  // the last kExits, oldest first
  // Messages handled by every actor that has exited (the live ones count their own).
  uint64_t handled_by_exited() const { return handled_by_exited_.load(std::memory_order_relaxed); }
  static constexpr size_t kExits = 64;

  // Histograms and mailbox times: on while an inspector watches.
  bool watching() const { return watching_.load(std::memory_order_relaxed); }
  void set_watching(bool on);
  // An inspector's watch begins or ends: watched while any lasts.
  void add_watcher();
  void remove_watcher();
  // Where the agent's log lines go (actors/log_route.hpp): set before the
  // actor system is made, read by its threads; null: the default logger's.
  LogRoute* log_route() const { return log_route_; }
  void set_log_route(LogRoute* route) { log_route_ = route; }

  // A handling longer than this counts as slow (WarningThresholds::slow_handler).
  uint64_t slow_ns() const { return slow_ns_.load(std::memory_order_relaxed); }
  void set_slow_ns(uint64_t ns) { slow_ns_.store(ns, std::memory_order_relaxed); }
  uint64_t next_flow() { return flows_.fetch_add(1, std::memory_order_relaxed) + 1; }
  TraceRecorder& trace() { return trace_; }
  // Starts a trace (TraceRecorder::start) with every actor ready to be traced.
  void start_trace(const TraceLimits& limits);
  // Ends it (TraceRecorder::take), dropping the stamps of messages still in mailboxes.
  TraceRecorder::Result take_trace();

 private:
  const bool counters_;
  std::atomic<bool> watching_{false};
  std::atomic<uint64_t> flows_{0};
  std::atomic<uint64_t> slow_ns_{500'000'000};
  LogRoute* log_route_ = nullptr;
  std::atomic<uint64_t> handled_by_exited_{0};
  std::mutex watchers_mutex_;
  unsigned watchers_ = 0;
  TraceRecorder trace_;
  mutable std::mutex mutex_;
  std::map<uint64_t, Entry> live_;
  std::deque<Exit> exits_;
};

// Every given actor's own status (its `status` answer, interfaces.hpp), asked
// of all at once by a helper actor. Threads: any; `done` runs once, on a CAF
// worker, when each has answered or failed to within `timeout` (those that
// failed have no entry). Blocks on nothing.
using Statuses = std::map<uint64_t, caf::settings>;
void ask_statuses(caf::actor_system& sys, std::vector<ActorRegistry::Entry> actors, std::chrono::milliseconds timeout,
                  std::function<void(Statuses)> done);

// The actor system configuration of an agent: CAF's settings (system_config.hpp)
// and the registry its actors enroll in.
struct AgentSystemConfig : caf::actor_system_config {
  explicit AgentSystemConfig(bool counters = true) : registry(std::make_shared<ActorRegistry>(counters)) {}
  std::shared_ptr<ActorRegistry> registry;
};

}  // namespace outpost
