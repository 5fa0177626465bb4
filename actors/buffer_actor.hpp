#pragma once
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include <array>
#include <chrono>
#include <deque>
#include <memory>
#include <optional>

#include "actors/instrumented.hpp"
#include "actors/interfaces.hpp"
#include "persistence/buffer_store.hpp"

namespace outpost {

// Waiting appends worth a commit of their own under a commit interval: a
// busy stream is committed as fast as without one, a trickle in groups.
constexpr uint64_t kGroupCommitBytes = 256 << 10;

struct BufferOptions {
  // Bytes of appends that may wait (handed over, not yet committed): the
  // queries' PendingBudget.
  uint64_t pending_budget = kDefaultPendingBudget;
  // The top of the store's limit kept for shutdown: commits use it only when
  // the buffer settles, so that the appends waiting then are stored, not
  // refused. They are at most the budget, plus the last batch of each query
  // that was building one when it stopped (those are refused if they do not
  // fit too). The store must be opened with the configured limit plus this;
  // the agent makes it the budget.
  uint64_t shutdown_reserve = 0;
  // Group commit: while appends trickle in, at most one commit (and its
  // fsync) per this interval. An append that comes sooner after the last
  // commit waits for the next one, with every other that comes meanwhile; it
  // is answered then (an answered append is stored as before). Committed at
  // once: the first append after a quiet interval, enough waiting to be worth
  // a commit of its own (kGroupCommitBytes, a quarter of the budget or
  // kMaxRecordsPerCommit records), a retry, everything at shutdown, and
  // whatever waits when a producer sends commit_atom (it waits for answers:
  // paused, stopping, or out of budget). Zero: every append at once.
  std::chrono::milliseconds commit_interval{0};
};

struct buffer_state {
  static inline const char* name = "buffer";

  struct Waiting {
    Lane lane;
    RecordRef record;
    uint64_t bytes;  // as the store accounts them
    caf::typed_response_promise<uint64_t> promise;
  };

  // An ack waiting to be applied: acks are gathered for up to kAckDelay and
  // applied per lane in one transaction. They need no fsync of their own
  // (a lost ack only means a resend, which the collector recognises), and
  // one per upload took half the buffer's fsyncs.
  struct PendingAck {
    Lane lane;
    caf::typed_response_promise<uint64_t> promise;
  };

  // A purge under way: one slice per message, so reads, acks and appends
  // never wait for a whole store's scan.
  struct Purge {
    uint64_t query_id;
    persistence::PurgeCursor at;
    uint64_t count;  // records purged and waiting appends refused so far
    caf::typed_response_promise<uint64_t> promise;
  };

  std::shared_ptr<persistence::BufferStore> store;
  std::deque<Purge> purges;  // FIFO; the front one is under way
  BufferOptions options;
  PendingBudgetPtr budget;
  std::deque<Waiting> waiting;  // FIFO: appends not yet committed
  uint64_t waiting_bytes = 0;   // their bytes
  std::array<uint64_t, schemas::kLaneCount> ack_through{};  // 0: nothing pending on that lane
  std::vector<PendingAck> pending_acks;
  bool acks_scheduled = false;
  link_actor link;
  // commit_atoms (commit the waiting appends) on their way, and the time the
  // earliest one asked for is due; none due once the last has arrived.
  unsigned commits_in_flight = 0;
  std::optional<std::chrono::steady_clock::time_point> commit_at;
  std::chrono::steady_clock::time_point last_commit;  // of appends
  bool hurried = false;  // a producer waits for the waiting appends: commit them now
  // Stalled: the head of `waiting` could not be committed: it does not fit
  // under the limit (`full`), or the store refused it (disk full). Acks, a
  // purge that frees space, a cancel that refuses it, or the retry timer let
  // it in; never true with nothing waiting.
  bool stalled = false;
  // A full episode: since the head last did not fit under the limit, appends
  // have waited; it ends when none waits. Logged once at each end.
  bool full = false;
  std::chrono::steady_clock::time_point full_since;
  uint64_t appends = 0;  // append requests received
  uint64_t commits = 0;  // write transactions that stored them
  uint64_t acks = 0;
  uint64_t full_episodes = 0;
  std::string last_error;

  ActorState shown_state() const { return stalled ? ActorState::waiting_for_space : ActorState::running; }
};

// Spawn detached: its fsyncs must not stall CAF's worker threads.
buffer_self_actor::behavior_type buffer_with(instrumented<buffer_self_actor, buffer_state> self,
                                             std::shared_ptr<persistence::BufferStore> store,
                                             BufferOptions options);
// With the default options: the default budget and no shutdown reserve.
buffer_self_actor::behavior_type buffer(instrumented<buffer_self_actor, buffer_state> self,
                                        std::shared_ptr<persistence::BufferStore> store);

}  // namespace outpost
