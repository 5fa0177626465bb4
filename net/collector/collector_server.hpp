#pragma once
// The collector's network side: accepts agents over TLS (mutual: an agent's
// identity is its certificate's common name), serves Collector and Session
// (protocol.capnp), and keeps each connected agent's AgentController for the
// admin commands. The agents are served on one kj event loop (the caller's);
// storage runs on StorageWorker (into its backend, worker.rows()), the admin
// side's reads and writes (of `state`: admin_state.hpp) on AdminWriter. The
// admin socket is served on a thread and event loop of its own (admin_socket.cpp),
// so that a loop behind with thousands of agents' uploads does not hold up
// `agents`; what needs an agent's connection goes to the agents' loop
// (LoopMailbox). With a relay (admin_relay.hpp), an admin command about an
// agent connected to another collector is sent to that one.

#include <kj/async-io.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "net/log_limiter.hpp"
#include "net/collector/admin_relay.hpp"
#include "net/collector/admin_state.hpp"
#include "net/collector/admin_writer.hpp"
#include "net/collector/loop_mailbox.hpp"
#include "net/collector/socket_stream.hpp"
#include "net/collector/storage_worker.hpp"
#include "net/tls_config.hpp"
#include "schemas/protocol.capnp.h"

namespace outpost::net {

struct CollectorConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 4750;  // 0: any free port (tests)
  std::string admin_socket;  // unix socket for `outpost-collector <command>`; empty: none
  TlsFiles tls;
  std::chrono::milliseconds handshake_timeout{10000};  // a peer that connects but never speaks TLS
  // Admission: at most this many TLS handshakes at once, so that in a
  // reconnect storm each finishes within its timeout instead of all of them
  // sharing the CPU until every one times out. Accepted connections beyond
  // wait, the newest first: in a storm the oldest are the likeliest to have
  // been given up by their agent (whose attempt has its own time limit).
  // One that waited handshake_wait, or the oldest when
  // max_waiting_handshakes wait, is closed unanswered; its agent tries again
  // after its backoff.
  unsigned max_handshakes = 256;
  size_t max_waiting_handshakes = 100000;
  std::chrono::milliseconds handshake_wait{10000};
  // How often the admin state forgets agents silent for its keep days
  // (AdminState::forget_silent_agents: a fleet's shared state).
  std::chrono::milliseconds forget_period{3600 * 1000};
};

class CollectorServer final : private kj::TaskSet::ErrorHandler {
 public:
  // `relay`, when given, outlives the server.
  CollectorServer(kj::AsyncIoContext& io, CollectorConfig config, AdminState& state, StorageWorker& worker,
                  AdminRelay* relay = nullptr);
  ~CollectorServer();

  // Binds and starts accepting (agents, and admin commands on the unix
  // socket, on the admin thread); resolves to the bound port. Throws
  // std::runtime_error naming the admin socket when it cannot listen there.
  kj::Promise<uint16_t> start();

  struct AgentSession {
    // capnp's Client copies only from a non-const reference, which the map's
    // pair cannot take as its copy (clang refuses it): moved, never copied.
    AgentSession(const AgentSession&) = delete;
    AgentSession(AgentSession&&) = default;
    AgentSession& operator=(AgentSession&&) = default;
    std::string peer;  // remote address
    int64_t connected_ns = 0;
    protocol::AgentController::Client controller;
    uint16_t minor_version = 0;  // of the protocol it speaks
    // Its inspector for relayed calls that name no client (a collector
    // from before inspectors per client; taken at the first).
    kj::Maybe<capnp::Capability::Client> inspector = nullptr;
    SocketStream* socket = nullptr;  // its connection's: lives as long as this entry
  };
  // Connected agents by id (the newest connection of each). The loop's.
  const std::map<std::string, AgentSession>& agents() const { return agents_; }
  size_t connections() const { return connections_; }  // the loop's

  // What threads other than the loop see of agents(): a copy. Any thread.
  struct Connected {
    std::string peer;
    int64_t connected_ns = 0;
  };
  std::map<std::string, Connected> connected() const;
  bool connected_here(const std::string& agent) const;  // any thread

 private:
  class Connection;
  class CollectorImpl;
  class SessionImpl;
  class AdminImpl;
  class AdminCalls;
  class AdminLoop;
  class ForwardedInspector;

  // Accepts forever, handing each connection to `take`; an accept error is
  // logged and retried after 100 ms on `timer`. On the listener's loop.
  static kj::Promise<void> accept_loop(kj::ConnectionReceiver& listener, kj::Timer& timer, const char* what,
                                       std::function<void(kj::Own<kj::AsyncIoStream>)> take);
  void take_agent(kj::Own<kj::AsyncIoStream> stream);
  // Admission (CollectorConfig::max_handshakes): starts the handshakes the
  // limit allows, newest waiting first.
  void admit();
  kj::Promise<void> handshake(kj::Own<SocketStream> stream, std::string peer);
  // `socket`: the agent's socket, at the bottom of `stream` (which owns it).
  void serve(kj::Own<kj::AsyncIoStream> stream, SocketStream& socket, std::string peer, std::string cert_name);
  // Logs a refused or failed connection, rate-limited (refusal_log_).
  void log_refusal(const std::string& text);
  void log_refusal_summary(uint64_t more);
  void taskFailed(kj::Exception&& exception) override;
  // Whether the connected `agent` runs artifact definitions sent to it
  // (protocol 1.1): one of 1.0 would ignore them and run its own artifacts.
  bool takes_definitions(const std::string& agent) const;
  // What waits for an agent: its event table, then its queued requests in order.
  kj::Promise<void> push_requests(std::string agent, protocol::AgentController::Client controller);
  // Runs again once more if asked while it runs (a request queued meanwhile).
  void push_requests_now(const std::string& agent);
  kj::Promise<void> push_queued(std::string agent, protocol::AgentController::Client controller,
                                std::vector<AdminState::Queued> queued, size_t next);
  // A call another collector sent through the relay.
  void take_call(AdminRelay::Call call);
  // A `where` call's answer: `agent`'s AgentSummary if it is connected here.
  // Any thread once started (the relay's libnats threads).
  AdminRelay::Answer where_here(const std::string& agent) const;
  // Each upload: starts the admin thread's and the relay's work queued for
  // the loop, which would otherwise wait for every connection ready before
  // their wake-up (loop_mailbox.hpp).
  // Admin calls waiting for an agent's answer have its socket read then too
  // (SocketStream::read_now, at most once a millisecond), since its turn in
  // epoll may be seconds away.
  void run_admin_work() {
    mailbox_.run_queued(tasks_);
    if (relay_) relay_->run_queued();
    if (!awaited_.empty()) read_awaited_now();
  }
  void read_awaited_now();
  // `answer`, an admin call's answer from `agent`, with the agent counted as
  // awaited until it settles (or is dropped).
  template <typename T>
  kj::Promise<T> awaiting_answer(const std::string& agent, kj::Promise<T> answer) {
    ++awaited_[agent];
    return answer.attach(kj::defer([this, agent] {
      if (--awaited_[agent] == 0) awaited_.erase(agent);
    }));
  }
  // The loop's side of the admin thread's calls (LoopMailbox). An admin call
  // by name (collect, cancel, setEventTable, agentStatus: the relay's names)
  // with its params encoded: run here, or at the collector holding the agent;
  // resolves to its results, encoded. With `route` false (a relayed call),
  // always here.
  kj::Promise<std::string> admin_call(const std::string& name, const std::string& body, bool route);
  // Inspector method `method` of `agent`'s inspector for admin connection
  // inspector `client` (an id of ForwardedInspector's): an inspector of its
  // own on the agent (as the agent would give a client connected to it: a
  // watch it asks for ends when it goes, forget_inspector), here or, through
  // the relay, at the collector holding the agent (keyed there by
  // relay_key(client)).
  kj::Promise<std::string> inspector_call(uint64_t client, const std::string& agent, uint16_t method,
                                          const std::string& body);
  void forget_inspector(uint64_t client);
  std::string relay_key(uint64_t client) const { return instance_ + "-" + std::to_string(client); }
  // Method `method` on the inspector `key` has on `session`'s agent (made at
  // its first call, and again for a new session); a relayed call of a
  // collector that gives no key (an older one) on the session's own.
  kj::Promise<std::string> session_inspector_call(const std::string& agent, AgentSession& session,
                                                  const std::string& key, uint16_t method, const std::string& body);
  // With a relay, per id not connected here: its holder's AgentSummary
  // (encoded), or "" (connected nowhere, or here). Asked all at once.
  kj::Promise<std::vector<std::string>> where(std::vector<std::string> ids);
  // An admin call's agent id, or an error saying it is none. Any thread.
  static std::string checked_agent(kj::StringPtr id);
  // Binds the admin socket and starts the admin thread (admin_socket.cpp).
  void start_admin();
  // Every forget_period, for ever: AdminState::forget_silent_agents on the writer.
  kj::Promise<void> forget_silent_agents();
  // agents_ and connected_ together.
  void set_session(const std::string& agent, AgentSession session);
  void end_session(std::map<std::string, AgentSession>::iterator it);

  kj::AsyncIoContext& io_;
  CollectorConfig config_;
  AdminState& state_;
  StorageWorker& worker_;
  AdminRelay* relay_;  // null: this collector alone
  AdminWriter writer_;  // the admin side's reads and writes (state_), off the loop, in order
  // Reads of the storage backend's marks (a round trip to NATS with
  // jetstream) and the relay's subscriptions, off the loop and off the
  // writer: one thread, in order.
  AdminWriter lookups_;
  std::string address_;  // host:port agents reach this collector at (once started)
  std::unique_ptr<TlsSetup> tls_;
  kj::Own<kj::ConnectionReceiver> listener_;
  std::map<std::string, AgentSession> agents_;
  mutable std::mutex connected_mutex_;
  std::map<std::string, Connected> connected_;  // agents_ for other threads
  LoopMailbox mailbox_;  // the admin thread's work for the loop
  struct ClientInspector {
    ClientInspector(int64_t session_ns, capnp::Capability::Client inspector)
        : session_ns(session_ns), inspector(kj::mv(inspector)) {}
    ClientInspector(const ClientInspector&) = delete;  // as AgentSession: moved, never copied
    ClientInspector(ClientInspector&&) = default;
    ClientInspector& operator=(ClientInspector&&) = default;
    int64_t session_ns;  // the agent's session it belongs to (its connected_ns)
    capnp::Capability::Client inspector;
  };
  // By ForwardedInspector's id here, by "<relay_key>/<agent>" for another collector's.
  std::map<std::string, ClientInspector> client_inspectors_;
  std::string instance_;  // this collector's run (random): relay keys of its clients
  std::map<uint64_t, std::string> relayed_inspects_;  // client -> the agent it inspects through the relay
  // Per agent, the queued request push_queued() is handing over right now
  // (its key): a cancel of that one must go to the agent, as it may run it.
  std::map<std::string, uint64_t> pushing_;
  std::set<std::string> remembered_;  // agents this run has asked state_ to remember
  // Agents whose requests push_requests_now() is sending; true: asked again meanwhile.
  std::map<std::string, bool> push_running_;
  size_t connections_ = 0;
  std::map<std::string, unsigned> awaited_;  // agents whose answers admin calls wait for: how many
  kj::TimePoint awaited_read_at_ = kj::origin<kj::TimePoint>();
  struct Waiting {
    kj::Own<SocketStream> stream;
    std::string peer;
    kj::TimePoint since;
  };
  std::deque<Waiting> waiting_;  // accepted, waiting for a handshake slot; newest at the back
  unsigned handshaking_ = 0;
  LogLimiter refusal_log_;
  kj::TaskSet tasks_;
  // Last: destroyed first (its thread uses the members above).
  struct EndAdminLoop {
    void operator()(AdminLoop* loop) const;  // admin_socket.cpp
  };
  std::unique_ptr<AdminLoop, EndAdminLoop> admin_loop_;
};

}  // namespace outpost::net
