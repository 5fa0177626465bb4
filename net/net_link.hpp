#pragma once
// The network link actor: reads committed records from the buffer, hands
// them to the network thread as uploads, and acks the buffer once the
// collector has stored them. A lane that has sent all it had sends a small
// commit's records as they come with its notification, without a read. Lanes are served by priority (control, events,
// results, uploads); the bulk lanes never hold the last upload slot, and no
// lane takes the last one free while another waits without any, so fresh
// rows never wait for a slot behind a backlog. One buffer read fills every
// slot the lane may use.

#include <caf/typed_event_based_actor.hpp>

#include <array>
#include <memory>

#include "actors/interfaces.hpp"
#include "net/net_client.hpp"

namespace outpost::net {

struct net_link_state {
  static inline const char* name = "net-link";

  struct LaneState {
    uint64_t acked = 0;      // the collector stored through here; the buffer was told
    uint64_t sent = 0;       // last seq handed to the network in this session
    uint64_t committed = 0;  // last seq the buffer reported committed
    unsigned in_flight = 0;  // uploads not yet answered
    unsigned reserved = 0;   // slots held for the uploads of the read outstanding
    bool reading = false;    // a read from the buffer is outstanding
    bool unread = true;      // the buffer may hold records past `sent` that no commit announced
  };

  buffer_actor buffer;           // acks
  buffer_reader_actor reader;    // reads, which must not wait behind the buffer's commits
  supervisor_actor supervisor;  // carries out the collector's requests
  std::unique_ptr<NetClient> client;
  std::string target;       // host:port, for status
  bool enabled = true;      // online_atom switches delivery on and off
  uint64_t session = 0;     // 0 while not connected
  std::array<LaneState, schemas::kLaneCount> lanes;
  unsigned in_flight = 0;
  unsigned reserved = 0;  // over all lanes
  uint64_t uploads = 0, records_sent = 0, bytes_sent = 0, connects = 0, disconnects = 0;
  uint64_t reads = 0, fresh_sends = 0;  // sends after a buffer read, and of a commit's records
  std::string last_error;
  int64_t retry_in_ms = 0;
};

// Uploads in flight over all lanes: bounds memory (each at most 1000 records
// or kUploadBytes) while hiding the round trip.
inline constexpr unsigned kUploadWindow = 8;
// Small enough that a live row queued behind a backlog upload at the
// collector waits milliseconds, big enough to amortise a round trip.
inline constexpr uint64_t kUploadBytes = 1 << 20;

net_link_actor::behavior_type net_link(net_link_actor::stateful_pointer<net_link_state> self,
                                       buffer_actor buffer, buffer_reader_actor reader,
                                       ClientConfig config);

}  // namespace outpost::net
