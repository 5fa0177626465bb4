#pragma once
// AdminState (admin_state.hpp) in a JetStream key-value bucket shared by
// every collector of a fleet, so that any collector serves any agent: a
// request queued through one is sent by the one the agent connects to.
// Keys (agent ids as subject_token()s):
//   flows          "<u64>"  every flow id given out is below it
//   met.<agent>    "<ns>"   when a collector last saw it: first met, then
//                           once a day while connected (forget_silent_agents)
//   table.<agent>  EventTable (protocol.capnp), encoded
//   queue.<agent>  RequestQueue (protocol.capnp), encoded
// `flows` and `queue.*` change by compare-and-set, so that two collectors
// never give out one flow id nor lose each other's requests; a `met.*` or
// an emptied `queue.*` is deleted only if unchanged since read (a delete
// marker published with the revision it expects). The hourly pass purges
// the delete markers the pass before it found, each up to its own
// sequence, so that a put after it stays.
//
// Threads: every function from any thread; each blocks on NATS round trips
// (each bounded by request_timeout, asked again while a leader is elected).

#include <nats/nats.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "net/collector/admin_state.hpp"
#include "net/collector/nats_link.hpp"

namespace outpost::net {

struct JetStreamAdminOptions {
  NatsLink nats;
  std::string bucket = "outpost-admin";
  int replicas = 1;  // when this collector creates the bucket
  std::chrono::milliseconds request_timeout{5000};
  std::chrono::milliseconds retry_after{1000};
  std::chrono::milliseconds connect_timeout{30000};
  int agents_keep_days = 365;  // agents no collector saw this long are forgotten
  // Tests: called with a key between the pass reading its delete marker and purging it.
  std::function<void(const std::string& key)> before_purge = nullptr;
};

class JetStreamAdminState final : public AdminState {
 public:
  // Connects and opens (or creates) the bucket; throws StoreError naming
  // NATS and what failed. Blocks: any thread, before the others start.
  explicit JetStreamAdminState(JetStreamAdminOptions options);
  ~JetStreamAdminState() override;
  JetStreamAdminState(const JetStreamAdminState&) = delete;
  JetStreamAdminState& operator=(const JetStreamAdminState&) = delete;

  uint64_t next_flow_ids(uint64_t count = 1) override;
  uint64_t flows_given_below() const override;
  bool known_agent(const std::string& agent) const override;
  void remember_agent(const std::string& agent) override;
  std::vector<std::string> agents_met() const override;
  void set_event_table(const std::string& agent, const std::string& encoded) override;
  std::string event_table(const std::string& agent) const override;
  void queue_request(const std::string& agent, const std::string& encoded) override;
  std::vector<Queued> queued_requests(const std::string& agent) const override;
  void remove_request(const std::string& agent, uint64_t key) override;
  std::vector<std::string> agents_with_requests() const override;
  // One pass over the bucket (a watch): forgets silent agents and emptied
  // queues, each leaving its delete marker (a small message), and purges
  // the markers already there. One call at a time.
  Forgotten forget_silent_agents(const std::vector<std::string>& connected, int64_t now_ns) override;

 private:
  struct Value {
    bool found = false;
    std::string bytes;
    uint64_t revision = 0;
  };
  Value get(const std::string& key) const;  // throws StoreError
  // Writes `key` as `change` makes it of its current value (never empty), by
  // compare-and-set, reading it again after another collector's write.
  // Throws StoreError.
  void update(const std::string& key, const std::function<std::string(const Value&)>& change);
  void put(const std::string& key, const std::string& bytes);  // "" deletes; throws StoreError
  // The agents under any of `prefixes`, sorted, once each (one scan of the keys).
  std::vector<std::string> keys(const std::vector<std::string>& prefixes) const;
  [[noreturn]] void fail(const std::string& what, natsStatus s) const;
  struct Entry {
    std::string key, bytes;
    uint64_t revision = 0;
    bool deleted = false;  // a delete (or purge) marker
  };
  // Every key of the bucket with its value, or its delete marker (one watch).
  std::vector<Entry> entries() const;
  // Deletes `key` if its revision is still `revision`; false if it changed.
  bool delete_unchanged(const std::string& key, uint64_t revision);
  // Removes `key`'s messages up to its marker at `revision`; a later put stays.
  void purge_marker(const std::string& key, uint64_t revision);

  JetStreamAdminOptions options_;
  NatsConnection nc_;
  jsCtx* js_ = nullptr;
  kvStore* kv_ = nullptr;
  std::map<std::string, int64_t> seen_;  // connected agents: when their met.* was last written (forget_silent_agents)
};

}  // namespace outpost::net
