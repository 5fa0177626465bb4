#pragma once
// The agent's side of the wire: a thread running a kj event loop that keeps
// one Cap'n Proto RPC session with the collector (TLS unless insecure),
// reconnecting with backoff, and carries uploads: the link actor's
// Transport. It knows nothing of CAF: the link actor hands it work with
// upload(), and hears back through the callbacks in ClientEvents, which run on
// the network thread and must only post (caf::anon_send) and return.

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "actors/control.hpp"
#include "actors/messages.hpp"
#include "net/agent/backoff.hpp"
#include "net/tls_config.hpp"
#include "net/agent/transport.hpp"
#include "schemas/inspector.capnp.h"

namespace outpost::net {

struct ClientConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 4750;
  // More collectors, tried in turn (after host:port) when an attempt fails
  // or a session ends, with the backoff between attempts as for one.
  std::vector<std::pair<std::string, uint16_t>> alternates;
  std::string server_name;  // expected in the collector's certificate; default: the host tried
  TlsFiles tls;
  std::string claimed_id;   // sent only in insecure mode
  std::string hostname;     // informational
  BackoffPolicy backoff;
  // Nothing on the network may wait forever: a collector that vanished
  // without a reset (power loss, a NAT dropping the flow) must still be noticed.
  std::chrono::milliseconds upload_timeout{60000};  // one upload's answer
  // The link actor's, not the transport's: fresh rows wait up to this long to
  // go in one upload with the next (net_link_state::max_delay).
  std::chrono::milliseconds max_delay{0};
  // Makes the inspector the collector may ask for (on the network thread's
  // loop; read-only); empty: the agent offers none.
  std::function<kj::Own<inspector::Inspector::Server>(kj::Timer&)> inspector;
};

class NetClient final : public Transport {
 public:
  NetClient(ClientConfig config, ClientEvents events);  // starts connecting at once
  ~NetClient();  // ends the session and joins the thread
  NetClient(const NetClient&) = delete;
  NetClient& operator=(const NetClient&) = delete;

  // As Transport::upload: hands the work to the network thread.
  void upload(uint64_t session, Lane lane, uint64_t after, BufferedRecords records, size_t begin,
              size_t end) override;
  // As Transport::reconnect: the network thread does it.
  void reconnect() override;

 private:
  class Loop;
  struct Work {
    uint64_t session;
    Lane lane;
    uint64_t after;
    BufferedRecords records;
    size_t begin, end;
  };

  std::mutex mutex_;
  std::vector<Work> pending_;  // handed over, not yet taken by the loop
  bool stopping_ = false;
  bool reconnect_ = false;  // the operator asked for a new connection
  std::function<void()> wake_;  // rings the loop's doorbell; set by the loop, under mutex_
  ClientConfig config_;
  ClientEvents events_;
  std::thread thread_;
};

}  // namespace outpost::net
