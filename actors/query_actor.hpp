#pragma once
#include <caf/typed_event_based_actor.hpp>

#include <chrono>
#include <functional>
#include <memory>

#include "actors/agent_config.hpp"
#include "actors/instrumented.hpp"
#include "actors/interfaces.hpp"
#include "actors/source.hpp"

namespace outpost {

// Makes each query's source. `check`, when set, refuses a spec before
// anything starts (a collector's request for an unknown artifact): it throws
// std::exception with the reason.
struct SourceFactory {
  using Make = std::function<std::unique_ptr<Source>(const QuerySpec&)>;
  using Check = std::function<void(const QuerySpec&)>;
  SourceFactory(Make make = {}, Check check = {}) : make(std::move(make)), check(std::move(check)) {}
  Make make;
  Check check;
  std::unique_ptr<Source> operator()(const QuerySpec& q) const { return make(q); }
};

struct query_state {
  static inline const char* name = "query";
  using Clock = std::chrono::steady_clock;

  // Members are few and small: an agent runs thousands of queries.
  std::shared_ptr<const QuerySpec> spec;  // shared with the supervisor
  buffer_actor buffer;
  PendingBudgetPtr budget;  // the buffer's, asked for before the first pull
  struct Held {
    Lane lane;
    RecordRef record;
    uint64_t rows;
  };
  std::unique_ptr<Held> held;  // a finished batch waiting for room in the budget
  uint64_t budget_wait = 0;  // a wake from the budget is due (its token): no pulls meanwhile
  uint64_t reserved = 0;         // budget bytes of this query's unanswered appends
  waker_actor waker;  // a sleeping source's next pull
  std::unique_ptr<Source> source;
  std::unique_ptr<schemas::RowBatchWriter> batch;  // rows not yet sent
  int64_t batch_created_ns = 0;
  unsigned next_batch_words = 64;  // first segment of the next batch, from the last one's size
  uint64_t generation = 0;  // of `batch`, so a stale batch_due timer is ignored
  bool timer_armed = false;
  bool batch_due = false;   // the timer fired while paused
  bool pull_scheduled = false;
  bool source_done = false;
  bool stopping = false;
  bool paused = false;
  bool asleep = false;     // the waker sends the next pull
  bool suspended = false;  // by the operator: no pulls until resumed
  unsigned in_flight = 0;   // appends the buffer has not answered yet
  uint64_t rows_produced = 0;
  uint64_t rows_committed = 0;
  uint64_t batches_sent = 0;
  uint64_t pauses = 0;
  uint64_t dropped_at_source = 0;
  uint64_t rows_refused = 0;  // each alone bigger than schemas::kMaxRecordBytes
  uint64_t budget_waits = 0;
  Clock::time_point paused_since;
  Clock::duration paused_total{};

  ActorState shown_state() const {
    if (stopping) return ActorState::handing_over;
    if (suspended) return ActorState::suspended;
    if (paused || budget_wait || held) return ActorState::waiting_for_space;
    if (asleep || (!pull_scheduled && !source_done)) return ActorState::sleeping;
    return ActorState::running;
  }

  // A query that ends with appends unanswered gives their budget back, and
  // one that ends waiting for the budget leaves the queue.
  ~query_state() {
    if (budget && reserved) budget->release(reserved);
    if (budget && budget_wait) budget->forget(budget_wait);
  }
};

query_self_actor::behavior_type query(instrumented<query_self_actor, query_state> self,
                                      std::shared_ptr<const QuerySpec> spec, buffer_actor buffer,
                                      waker_actor waker, const SourceFactory& make_source);

}  // namespace outpost
