#pragma once
// A TCP relay that network tests put between a client and its server to inject faults: cuts,
// resets, latency, throttling, partitions and refused connections, all on real sockets.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace outpost::testing {

// Listens on an ephemeral port of 127.0.0.1 and relays every connection to the upstream server.
// The relaying runs on one background thread around poll().
//
// The controls can be called from any thread at any time and act on existing and new
// connections alike. Each returns only once the relay thread has applied it, so a test can count
// on the new behaviour right away: after cut(), every connection whose connect() had returned
// (even one the proxy hadn't accepted yet) is already closing.
class FaultProxy {
 public:
  // Throws std::runtime_error if the upstream host doesn't resolve or the proxy can't listen.
  explicit FaultProxy(uint16_t upstream_port, std::string upstream_host = "127.0.0.1");
  ~FaultProxy();  // Closes every connection and joins the relay thread.

  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  uint16_t port() const;

  // Closes every current connection on both sides with FIN. Bytes held in the proxy are lost.
  void cut();
  // Closes every current connection on both sides with RST: peers see ECONNRESET.
  void reset();
  // Holds every chunk, in both directions, this long before forwarding it. FIN waits its turn.
  void set_delay(std::chrono::milliseconds delay);
  // Caps each direction of each connection; 0 lifts the cap.
  void set_rate(uint64_t bytes_per_second);
  // A network partition: nothing moves and connections stay open. Bytes are held, not dropped,
  // because TCP would retransmit them after a real partition heals; streams resume intact.
  void blackhole(bool on);
  // New connections are accepted and reset at once: the client's connect() has already
  // succeeded by then, so RST is the nearest thing to a refusal.
  void refuse(bool on);
  // Cuts every connection once per period, for flapping tests; 0 stops it.
  void cut_every(std::chrono::milliseconds period);

  uint64_t connections_accepted() const;  // Including refused ones and upstream failures.
  uint64_t upstream_failures() const;     // Accepted, then upstream couldn't be reached.
  uint64_t bytes_upstream() const;        // Delivered to the upstream server.
  uint64_t bytes_downstream() const;      // Delivered to clients.
  uint64_t active_connections() const;

 private:
  class Relay;
  std::unique_ptr<Relay> relay_;
};

}  // namespace outpost::testing
