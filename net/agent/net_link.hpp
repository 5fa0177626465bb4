#pragma once
// The network link actor: reads committed records from the buffer, hands
// them to its transport (net/transport.hpp; NetClient in the agent) as
// uploads, and acks the buffer once the collector has stored them. A lane
// that has sent all it had sends a small commit's records as they come with
// its notification, without a read. Lanes are served by priority (control,
// events, results, uploads); the bulk lanes never hold the last upload slot,
// and no lane takes the last one free while another waits without any, so
// fresh rows never wait for a slot behind a backlog. One buffer read fills
// every slot the lane may use. A failed read or ack of a lane is tried again
// after a backoff (Retry); a transport whose thread ended makes the link fail.

#include <caf/actor_clock.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <array>
#include <chrono>
#include <memory>
#include <optional>

#include "actors/instrumented.hpp"
#include "actors/interfaces.hpp"
#include "net/log_limiter.hpp"
#include "net/agent/net_client.hpp"
#include "net/agent/retry.hpp"
#include "net/agent/transport.hpp"

namespace outpost::net {

// A failed buffer read or ack of a lane is tried again after this backoff.
inline constexpr BackoffPolicy kBufferRetry{std::chrono::milliseconds(100), std::chrono::seconds(30)};

struct net_link_state {
  static inline const char* name = "net-link";

  struct LaneState {
    uint64_t stored = 0;     // the collector stored through here (this session or an earlier one)
    uint64_t acked = 0;      // the buffer confirmed deleting through here (<= stored)
    uint64_t acking = 0;     // the highest ack asked of the buffer and not yet answered, or acked
    uint64_t sent = 0;       // last seq handed to the network in this session
    uint64_t committed = 0;  // last seq the buffer reported committed
    unsigned in_flight = 0;  // uploads not yet answered
    unsigned reserved = 0;   // slots held for the uploads of the read outstanding
    bool reading = false;    // a read from the buffer is outstanding
    bool unread = true;      // the buffer may hold records past `sent` that no commit announced
    Retry read_retry{kBufferRetry};  // after a failed read: no read before it is due
    Retry ack_retry{kBufferRetry};   // after a failed ack: no ack before it is due
    // Fresh records held back to go in one upload (max_delay): not sent
    // before this, unless an upload's worth is held.
    std::optional<caf::actor_clock::time_point> hold_until;  // the actor system's clock
    uint64_t held_records = 0, held_bytes = 0;
  };

  buffer_actor buffer;           // acks
  buffer_reader_actor reader;    // reads, which must not wait behind the buffer's commits
  supervisor_actor supervisor;  // carries out the collector's requests
  // Owned here: destroying it (when this actor ends) ends its session and thread.
  std::unique_ptr<Transport> transport;
  std::string target;       // host:port, for status
  // Fresh records of the events and results lanes wait up to this long for
  // more to go with them (0: each commit's records are sent at once).
  std::chrono::milliseconds max_delay{0};
  bool enabled = true;      // online_atom switches delivery on and off
  uint64_t session = 0;     // 0 while not connected
  std::array<LaneState, schemas::kLaneCount> lanes;
  unsigned in_flight = 0;
  unsigned reserved = 0;  // over all lanes
  uint64_t uploads = 0, records_sent = 0, bytes_sent = 0, connects = 0, disconnects = 0;
  uint64_t reads = 0, fresh_sends = 0;  // sends after a buffer read, and of a commit's records
  uint64_t read_failures = 0, ack_failures = 0;
  std::string last_error;
  int64_t retry_in_ms = 0;
  // Failed connection attempts: each is logged, the first of each minute as a
  // warning and the rest at debug level, then a warning with their count.
  LogLimiter attempt_log;
  std::string last_attempt_error;
  uint64_t failed_attempts = 0;  // since the last session (or start)

  ActorState shown_state() const {
    return !enabled ? ActorState::offline : session == 0 ? ActorState::backing_off : ActorState::running;
  }
};

// Uploads in flight over all lanes: bounds memory (each at most 1000 records
// or kUploadBytes) while hiding the round trip.
inline constexpr unsigned kUploadWindow = 8;
// Small enough that a live row queued behind a backlog upload at the
// collector waits milliseconds, big enough to amortise a round trip.
inline constexpr uint64_t kUploadBytes = 1 << 20;

// The link over a NetClient to the collector in `config` (whose max_delay
// is the link's).
net_link_self_actor::behavior_type net_link(instrumented<net_link_self_actor, net_link_state> self,
                                            buffer_actor buffer, buffer_reader_actor reader,
                                            ClientConfig config);

// The link over the transport `make` returns; `target` names it in status.
net_link_self_actor::behavior_type net_link_over(instrumented<net_link_self_actor, net_link_state> self,
                                                 buffer_actor buffer, buffer_reader_actor reader,
                                                 std::string target, TransportFactory make);

}  // namespace outpost::net
