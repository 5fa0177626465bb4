#pragma once
#include <caf/typed_event_based_actor.hpp>

#include <memory>

#include "actors/instrumented.hpp"
#include "actors/interfaces.hpp"
#include "persistence/buffer_store.hpp"

namespace outpost {

// Serves the link's reads on a thread of its own: LMDB readers never wait
// for the writer, whereas a read in the buffer's mailbox waits for the
// commit in progress and its fsync. Ends when the buffer does.
struct buffer_reader_state {
  static inline const char* name = "buffer-reader";
  std::shared_ptr<const persistence::BufferStore> store;
  buffer_actor buffer;  // quarantines what we find corrupt; serves reads we cannot
  uint64_t reads = 0, records = 0, handed_to_buffer = 0, corrupt = 0;
};

// Spawn detached.
buffer_reader_actor::behavior_type buffer_reader(
    instrumented<buffer_reader_actor, buffer_reader_state> self,
    std::shared_ptr<const persistence::BufferStore> store, buffer_actor buffer);

}  // namespace outpost
