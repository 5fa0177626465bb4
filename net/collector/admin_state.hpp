#pragma once
// What the collector keeps for the admin commands and the agents' requests:
// the flow ids it gave out, the agents it met, each agent's event table and
// the requests waiting for it to connect. Two implementations:
// CollectorStore (LMDB, this collector's own) and JetStreamAdminState (a
// JetStream key-value bucket shared by every collector of a fleet, so that
// any of them serves any agent).
//
// Threads: every function may be called from any thread and may block, on
// LMDB's writer lock or a NATS round trip: the collector calls them on its
// admin writer thread (admin_writer.hpp), in order, never on its event
// loop. Expected conditions (nothing stored) are results; a failure to
// reach the store throws persistence::StoreError naming it.

#include <cstdint>
#include <string>
#include <vector>

namespace outpost::net {

class AdminState {
 public:
  virtual ~AdminState() noexcept(false) = default;  // as RowStore, which CollectorStore also is

  // `count` consecutive flow ids never given out before (protocol.capnp's
  // CollectRequest.flowId): the first is at least protocol::FIRST_FLOW_ID
  // plus the wall clock in microseconds, so that a reset store does not reuse ids.
  virtual uint64_t next_flow_ids(uint64_t count = 1) = 0;
  virtual uint64_t flows_given_below() const = 0;  // 0: none given out yet

  // An agent met: connected, uploaded, or has a table or queued requests.
  virtual bool known_agent(const std::string& agent) const = 0;
  virtual void remember_agent(const std::string& agent) = 0;  // at each hello; met again changes nothing
  // Every agent met (for the agents command), sorted.
  virtual std::vector<std::string> agents_met() const = 0;

  virtual void set_event_table(const std::string& agent, const std::string& encoded) = 0;  // "" removes it
  virtual std::string event_table(const std::string& agent) const = 0;                     // "" if none

  struct Queued {
    uint64_t key;  // unique among the agent's queued requests, ascending in queue order
    std::string encoded;  // protocol.capnp's PendingRequest
  };
  virtual void queue_request(const std::string& agent, const std::string& encoded) = 0;
  virtual std::vector<Queued> queued_requests(const std::string& agent) const = 0;  // oldest first
  virtual void remove_request(const std::string& agent, uint64_t key) = 0;  // gone already: nothing
  virtual std::vector<std::string> agents_with_requests() const = 0;  // an event table or queued requests

  // Hourly, with the agents connected to this collector: a state shared by
  // a fleet's collectors forgets the agents none of them has seen for its
  // keep days, and drops emptied queues (JetStreamAdminState). A collector's
  // own LMDB state prunes silent agents with its files instead
  // (RowStore::prune): nothing here. Throws StoreError.
  struct Forgotten {
    uint64_t agents = 0, queues = 0;
    uint64_t markers = 0;  // deleted keys' markers purged
  };
  virtual Forgotten forget_silent_agents(const std::vector<std::string>& connected, int64_t now_ns) {
    (void)connected;
    (void)now_ns;
    return {};
  }
};

}  // namespace outpost::net
