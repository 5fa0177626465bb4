#pragma once
// What the network link actor (net/net_link.hpp) needs from the network, and
// what the network tells it back: NetClient (net/net_client.hpp) is the real
// one; tests use a fake under CAF's deterministic scheduler.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "actors/control.hpp"
#include "actors/messages.hpp"

namespace outpost::net {

// The transport's reports. Each callback runs on the transport's own thread
// and must only post (caf::anon_send) and return.
struct ClientEvents {
  // A session is up: `marks[lane]` is what the collector has stored.
  std::function<void(uint64_t session, std::vector<uint64_t> marks)> connected;
  // The session ended (or a connect attempt failed) for `reason`; the next try is in `retry_in`.
  std::function<void(uint64_t session, std::string reason, std::chrono::milliseconds retry_in)>
      disconnected;
  // An upload was durably stored: ack the buffer through `through`.
  std::function<void(uint64_t session, Lane lane, uint64_t through)> stored;
  // The collector asks something of this agent; answer through call.answer, from any thread.
  std::function<void(ControlCall call)> control;
  // The transport's thread ended with an error it could not recover from: no
  // session will ever come. Called at most once, as the thread's last act.
  std::function<void(std::string why)> failed;
};

class Transport {
 public:
  virtual ~Transport() = default;  // ends the session; no event is reported afterwards

  // Any thread; never blocks beyond a short lock. Sends records[begin, end)
  // (ascending seqs, all above `after`) on the given session; ignored if that
  // session has ended meanwhile. The records are shared, not copied.
  virtual void upload(uint64_t session, Lane lane, uint64_t after, BufferedRecords records,
                      size_t begin, size_t end) = 0;
  // Any thread; never blocks beyond a short lock. Ends the session, if one is
  // up, and connects again at once rather than after the backoff's delay.
  virtual void reconnect() = 0;
};

// Makes the link's transport, which reports through `events` from the start.
using TransportFactory = std::function<std::unique_ptr<Transport>(ClientEvents events)>;

}  // namespace outpost::net
