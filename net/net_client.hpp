#pragma once
// The agent's side of the wire: a thread running a kj event loop that keeps
// one Cap'n Proto RPC session with the collector (TLS unless insecure),
// reconnecting with backoff, and carries uploads. It knows nothing of CAF:
// the link actor hands it work with upload(), and hears back through the
// callbacks in ClientEvents, which run on the network thread and must only
// post (caf::anon_send) and return.

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "actors/control.hpp"
#include "actors/messages.hpp"
#include "net/backoff.hpp"
#include "net/tls_config.hpp"

namespace outpost::net {

struct ClientConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 4750;
  std::string server_name;  // expected in the collector's certificate; default: host
  TlsFiles tls;
  std::string claimed_id;   // sent only in insecure mode
  std::string hostname;     // informational
  BackoffPolicy backoff;
};

struct ClientEvents {
  // A session is up: `marks[lane]` is what the collector has stored.
  std::function<void(uint64_t session, std::vector<uint64_t> marks)> connected;
  // The session ended (or a connect attempt failed); the next try is in `retry_in`.
  std::function<void(uint64_t session, std::string reason, std::chrono::milliseconds retry_in)>
      disconnected;
  // An upload was durably stored: ack the buffer through `through`.
  std::function<void(uint64_t session, Lane lane, uint64_t through)> stored;
  // The collector asks something of this agent; answer through call.answer, from any thread.
  std::function<void(ControlCall call)> control;
};

class NetClient {
 public:
  NetClient(ClientConfig config, ClientEvents events);  // starts connecting at once
  ~NetClient();  // ends the session and joins the thread
  NetClient(const NetClient&) = delete;
  NetClient& operator=(const NetClient&) = delete;

  // Thread-safe. Sends records[begin, end) (ascending seqs, all above
  // `after`) on the given session; ignored if that session has ended meanwhile.
  void upload(uint64_t session, Lane lane, uint64_t after, StoredRecords records, size_t begin,
              size_t end);

 private:
  class Loop;
  struct Work {
    uint64_t session;
    Lane lane;
    uint64_t after;
    StoredRecords records;
    size_t begin, end;
  };

  std::mutex mutex_;
  std::vector<Work> pending_;  // handed over, not yet taken by the loop
  bool stopping_ = false;
  Loop* loop_ = nullptr;  // lives on the network thread while it runs
  std::function<void()> wake_;  // rings the loop's doorbell; set by the loop, under mutex_
  ClientConfig config_;
  ClientEvents events_;
  std::thread thread_;
};

}  // namespace outpost::net
