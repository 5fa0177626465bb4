#pragma once
// How the collector (and `export`) reach NATS: the servers, and the
// credentials NATS asks for — TLS with a pinned CA and a client certificate
// (mutual TLS, as the agents' link), and/or a NATS credentials file (a user
// JWT and its NKey seed). Used by jetstream_store and jetstream_export.

#include <nats/nats.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace outpost::net {

struct NatsLink {
  std::vector<std::string> servers{"nats://127.0.0.1:4222"};
  std::string ca;     // trust only this CA's server certificates (turns TLS on)
  std::string cert, key;  // this collector's certificate and key, when NATS verifies clients
  std::string creds;  // a NATS .creds file
};

struct NatsOptionsDeleter {
  void operator()(natsOptions* o) const { natsOptions_Destroy(o); }
};
using NatsOptions = std::unique_ptr<natsOptions, NatsOptionsDeleter>;

// The options for `link` (servers, TLS, credentials), with `timeout` for
// connecting and requests and reconnecting for ever; throws
// persistence::StoreError naming the file or setting that failed. Any thread.
NatsOptions nats_options(const NatsLink& link, std::chrono::milliseconds timeout);

// libnats objects owned: NatsOwned<natsMsg>, NatsOwned<kvEntry>, NatsOwned<jsStreamInfo>.
struct NatsDeleter {
  void operator()(natsMsg* m) const { natsMsg_Destroy(m); }
  void operator()(kvEntry* e) const { kvEntry_Destroy(e); }
  void operator()(jsStreamInfo* i) const { jsStreamInfo_Destroy(i); }
};
template <typename T>
using NatsOwned = std::unique_ptr<T, NatsDeleter>;

struct NatsConnectionDeleter {
  void operator()(natsConnection* c) const {
    natsConnection_Close(c);
    natsConnection_Destroy(c);
  }
};
using NatsConnection = std::unique_ptr<natsConnection, NatsConnectionDeleter>;

// Connects with `opts`, trying again every 250 ms while NATS is unreachable,
// for `patience` at most; throws persistence::StoreError naming `who` and
// the servers. Blocks: any thread but an event loop.
NatsConnection nats_connect(const NatsLink& link, natsOptions* opts, std::chrono::milliseconds patience,
                            const std::string& who);

// Opens key-value bucket `name`, made (history 1, `replicas`) if missing.
// One round trip or two: any thread but an event loop.
natsStatus open_bucket(kvStore** kv, jsCtx* js, const std::string& name, int replicas);

// "nats://a:4222,nats://b:4222" as a list (empty items dropped; pure).
std::vector<std::string> nats_servers(const std::string& comma_separated);

// An agent id or artifact folder as one subject token (and key-value key):
// bytes outside [A-Za-z0-9_-] as =XX (pure).
std::string subject_token(const std::string& text);
// The text subject_token() made `token` of; "" if it is not one (pure).
std::string subject_untoken(const std::string& token);

// Options for an ordered consumer of `stream` (which must outlive them)
// starting at the records stored since since_ns (wall clock) less 10 s for
// the clocks of the nodes, or at the first (since_ns 0). Pure.
jsSubOptions ordered_since(const std::string& stream, int64_t since_ns);

// Headers of the jetstream backend's messages (jetstream_store.hpp), read
// by `export` and the commands that read rows: the file a record's lines
// belong to, and an upload chunk's offset in its file.
constexpr const char* kFileHeader = "Outpost-File";
constexpr const char* kOffsetHeader = "Outpost-Offset";

// A key-value bucket's stream, and the subject of one of its keys (what
// libnats' kvStore calls publish to, for the writes it has no call for). Pure.
inline std::string kv_stream(const std::string& bucket) { return "KV_" + bucket; }
inline std::string kv_subject(const std::string& bucket, const std::string& key) {
  return "$KV." + bucket + "." + key;
}

// How long to wait before asking again when NATS found no responder.
constexpr std::chrono::milliseconds kNatsRetryPause{100};

// Runs `op` again while NATS finds no responder or has no answer (a stream
// electing its leader after a node was lost, for a second or two), up to
// `limit`. Blocks (sleeps): any thread but an event loop.
template <typename Op>
natsStatus retrying(std::chrono::milliseconds limit, Op op) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    natsStatus s = op();
    if ((s != NATS_NO_RESPONDERS && s != NATS_TIMEOUT) || std::chrono::steady_clock::now() + kNatsRetryPause >= deadline)
      return s;
    if (s == NATS_NO_RESPONDERS) std::this_thread::sleep_for(kNatsRetryPause);
  }
}

// "NATS at <servers>", for errors.
std::string nats_where(const NatsLink& link);

// A libnats status as text, with the library's last error when it is this one's.
std::string nats_status_text(natsStatus s);

}  // namespace outpost::net
