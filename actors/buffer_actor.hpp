#pragma once
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include <array>
#include <deque>
#include <memory>

#include "actors/interfaces.hpp"
#include "persistence/buffer_store.hpp"

namespace outpost {

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
  std::deque<Waiting> waiting;  // FIFO: appends not yet committed
  std::array<uint64_t, schemas::kLaneCount> ack_through{};  // 0: nothing pending on that lane
  std::vector<PendingAck> pending_acks;
  bool acks_scheduled = false;
  link_actor link;
  bool flush_scheduled = false;
  bool blocked = false;  // the head of `waiting` does not fit: only acks can help
  uint64_t appends = 0;  // append requests received
  uint64_t commits = 0;  // write transactions that stored them
  uint64_t acks = 0;
  uint64_t blocked_episodes = 0;
  std::string last_error;
};

// Spawn detached: its fsyncs must not stall CAF's worker threads.
buffer_actor::behavior_type buffer(buffer_actor::stateful_pointer<buffer_state> self,
                                   std::shared_ptr<persistence::BufferStore> store);

}  // namespace outpost
