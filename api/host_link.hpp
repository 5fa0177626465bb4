#pragma once
// The link when the host is it (`link: host`): hands batches of buffered
// records to the host's outpost::Sink and acks them in the buffer once the
// host acknowledged them, lane by lane in seq order. Nothing is deleted
// before the host's word; what it did not acknowledge comes again at the
// next start.
//
// Threads: the sink may block, so the link runs on a thread of its own
// (spawn_host_link). SinkAck sends to it from any thread through an
// AckChannel, which the agent closes before its actor system ends.

#include <caf/typed_event_based_actor.hpp>

#include <array>
#include <deque>
#include <memory>
#include <mutex>
#include <string>

#include "actors/instrumented.hpp"
#include "actors/interfaces.hpp"
#include "outpost/outpost.hpp"

namespace outpost {

// Where the host's acknowledgements go: the running link, until the agent
// closes the channel. Any thread; send() and close() take its lock and
// block on nothing else.
class AckChannel {
 public:
  // The link, as it starts (its behavior's setup): before it hands over any batch.
  void open(host_link_actor link);
  void send(Lane lane, uint64_t batch);
  void close();

 private:
  std::mutex mutex_;
  host_link_actor link_;  // null until opened and once closed
  bool closed_ = false;
};

struct SinkAck::State {
  std::shared_ptr<AckChannel> channel;
  Lane lane;
  uint64_t batch;
  std::once_flag sent;
};

struct host_link_state {
  static inline const char* name = "link";

  struct Handed {      // a batch the host holds and has not acknowledged, or has
    uint64_t id;       //   (out of order: an earlier one of its lane is still out)
    uint64_t last_seq;
    size_t records;
    bool acked;
  };
  struct LaneState {
    uint64_t handed_through = 0;  // the last seq handed to the sink
    uint64_t acked_through = 0;   // the last seq acknowledged with every one before it
    uint64_t sent_through = 0;    // the last seq the buffer was asked to delete through
    uint64_t deleted_through = 0; // the last seq the buffer deleted through
    std::deque<Handed> out;
    bool reading = false;
    bool retrying = false;
  };

  buffer_actor buffer;
  Sink sink;
  unsigned max_unacked = 4;
  std::shared_ptr<AckChannel> channel;
  bool online = true;
  std::array<LaneState, schemas::kLaneCount> lanes{};
  uint64_t next_batch = 1;
  uint64_t batches_handed = 0;
  uint64_t records_handed = 0;
  uint64_t records_acked = 0;   // in batches acknowledged with every earlier one of their lane
  uint64_t acks_received = 0;
  uint64_t errors = 0;
  std::string last_error;

  ActorState shown_state() const { return online ? ActorState::running : ActorState::offline; }
};

host_link_self_actor::behavior_type host_link(instrumented<host_link_self_actor, host_link_state> self,
                                              buffer_actor buffer, Sink sink, unsigned max_unacked,
                                              std::shared_ptr<AckChannel> channel);

// The link on its own thread, and the channel its SinkAcks use. Any thread.
std::pair<host_link_actor, std::shared_ptr<AckChannel>> spawn_host_link(caf::actor_system& sys, buffer_actor buffer,
                                                                       Sink sink, unsigned max_unacked);

}  // namespace outpost
