#pragma once
// How the collector (and `export`) reach NATS: the servers, and the
// credentials NATS asks for — TLS with a pinned CA and a client certificate
// (mutual TLS, as the agents' link), and/or a NATS credentials file (a user
// JWT and its NKey seed). Used by jetstream_store and jetstream_export.

#include <nats/nats.h>

#include <chrono>
#include <memory>
#include <string>
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

// "nats://a:4222,nats://b:4222" as a list (empty items dropped; pure).
std::vector<std::string> nats_servers(const std::string& comma_separated);

// "NATS at <servers>", for errors.
std::string nats_where(const NatsLink& link);

// A libnats status as text, with the library's last error when it is this one's.
std::string nats_status_text(natsStatus s);

}  // namespace outpost::net
