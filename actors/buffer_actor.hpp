#pragma once
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

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

  std::shared_ptr<persistence::BufferStore> store;
  std::deque<Waiting> waiting;  // FIFO: appends not yet committed
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
