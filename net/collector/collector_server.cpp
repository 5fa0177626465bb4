#include "net/collector/collector_server.hpp"

#include <arpa/inet.h>
#include <capnp/rpc-twoparty.h>
#include <capnp/serialize.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <random>

#include "schemas/protocol.capnp.h"

#include "net/collector/flat_message.hpp"
#include "net/kj_util.hpp"
#include "net/upload_size.hpp"
#include "net/watched_stream.hpp"

namespace outpost::net {
namespace {

// Big enough for one maximal upload and its framing; a bigger message is a
// protocol violation that Cap'n Proto refuses before we see it.
capnp::ReaderOptions wire_limits() {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = (protocol::MAX_UPLOAD_BYTES + (1 << 20)) / sizeof(capnp::word);
  options.nestingLimit = 64;
  return options;
}

std::string peer_of(kj::AsyncIoStream& stream) {
  sockaddr_storage addr{};
  uint len = sizeof addr;
  try {
    stream.getpeername(reinterpret_cast<sockaddr*>(&addr), &len);
  } catch (const kj::Exception&) {
    return "unknown peer";
  }
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (addr.ss_family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
  } else if (addr.ss_family == AF_INET6) {
    auto* in = reinterpret_cast<sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &in->sin6_addr, host, sizeof host);
    port = ntohs(in->sin6_port);
  }
  return std::string(host) + ":" + std::to_string(port);
}

// A connection's stream whose reads wait while the collector is over its
// memory budget (StorageWorker::room), so that the agent's TCP window
// fills, and whose bytes read are charged to the budget until an upload
// takes them over (take_charge). Reads at most kReadChunk at once, so that
// each connection can pass the budget by at most that. Loop thread only.
class GatedStream final : public kj::AsyncIoStream {
 public:
  GatedStream(kj::Own<kj::AsyncIoStream> inner, StorageWorker& worker)
      : inner_(kj::mv(inner)), worker_(worker), charge_(worker) {}

  MemoryCharge take_charge() {
    MemoryCharge taken = kj::mv(charge_);
    charge_ = MemoryCharge(worker_);
    return taken;
  }

  kj::Promise<size_t> tryRead(void* buffer, size_t minBytes, size_t maxBytes) override {
    return read_from(static_cast<kj::byte*>(buffer), minBytes, maxBytes, 0);
  }
  kj::Promise<void> write(const void* buffer, size_t size) override { return inner_->write(buffer, size); }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    return inner_->write(pieces);
  }
  kj::Promise<void> whenWriteDisconnected() override { return inner_->whenWriteDisconnected(); }
  void shutdownWrite() override { inner_->shutdownWrite(); }
  void abortRead() override { inner_->abortRead(); }
  void getsockopt(int level, int option, void* value, uint* length) override {
    inner_->getsockopt(level, option, value, length);
  }
  void setsockopt(int level, int option, const void* value, uint length) override {
    inner_->setsockopt(level, option, value, length);
  }
  void getsockname(struct sockaddr* addr, uint* length) override { inner_->getsockname(addr, length); }
  void getpeername(struct sockaddr* addr, uint* length) override { inner_->getpeername(addr, length); }

 private:
  kj::Promise<size_t> read_from(kj::byte* buffer, size_t min, size_t max, size_t done) {
    return worker_.room().then([this, buffer, max, done] {
      return inner_->tryRead(buffer + done, 1, std::min(max - done, kReadChunk));
    }).then([this, buffer, min, max, done](size_t n) -> kj::Promise<size_t> {
      charge_.add(n);
      if (n == 0 || done + n >= min) return done + n;
      return read_from(buffer, min, max, done + n);
    });
  }

  kj::Own<kj::AsyncIoStream> inner_;
  StorageWorker& worker_;
  MemoryCharge charge_;  // read, not yet taken by an upload
};

}  // namespace

// One agent connection: its RPC system, and a way to cut it on a protocol
// violation. Destroying it closes the socket.
class CollectorServer::Connection {
 public:
  Connection(CollectorServer& server, kj::Own<kj::AsyncIoStream> stream, SocketStream& socket, std::string peer,
             std::string cert_name)
      : server(server), socket(socket), peer(std::move(peer)), cert_name(std::move(cert_name)),
        stream_(kj::heap<GatedStream>(kj::mv(stream), server.worker_)), messages_(*stream_),
        network_(messages_, capnp::rpc::twoparty::Side::SERVER, wire_limits()) {}
  ~Connection() { *alive = false; }

  // Runs the connection until the peer leaves or violates the protocol.
  kj::Promise<void> run(capnp::Capability::Client bootstrap) {
    rpc_ = kj::heap<capnp::RpcSystem<capnp::rpc::twoparty::VatId>>(
        capnp::makeRpcServer(network_, kj::mv(bootstrap)));
    // A peer that never waits for answers gets at most this much held here.
    rpc_->setFlowLimit(4 * protocol::MAX_UPLOAD_BYTES / sizeof(capnp::word));
    auto abort = kj::newPromiseAndFulfiller<void>();
    abort_ = kj::mv(abort.fulfiller);
    return network_.onDisconnect().exclusiveJoin(kj::mv(abort.promise));
  }

  // Logs why and ends the connection shortly, so that the failed call's
  // answer, which says why, reaches the peer first.
  kj::Exception violation(const std::string& why) {
    violated_ = true;
    spdlog::warn("collector: closing {} ({}): protocol violation: {}", peer, who(), why);
    closing_ = server.io_.provider->getTimer()
                   .afterDelay(100 * kj::MILLISECONDS)
                   .then([this] {
                     if (abort_->isWaiting()) abort_->fulfill();
                   })
                   .eagerlyEvaluate(nullptr);
    return KJ_EXCEPTION(FAILED, "protocol violation", why);
  }

  std::string who() const { return agent.empty() ? "no hello yet" : "agent " + agent; }
  // Why the connection failed (a malformed message, a TLS or stream error),
  // unless a logged protocol violation closed it; empty if it did not.
  std::string failure() const { return violated_ ? std::string() : messages_.failure(); }

  // What was read so far, for an upload to hold until it is answered.
  MemoryCharge take_charge() { return stream_->take_charge(); }

  CollectorServer& server;
  SocketStream& socket;  // at the bottom of stream_
  // False once it is gone: a call's continuation may run after that (capnp
  // keeps a call's promise alive for pipelined calls) and must not touch it.
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);
  std::string peer;
  std::string cert_name;  // empty without TLS
  std::string agent;      // set by hello
  bool held = false;      // hello asked the relay to hold it: released when the connection ends

 private:
  kj::Own<GatedStream> stream_;
  WatchedMessageStream messages_;
  capnp::TwoPartyVatNetwork network_;
  kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> rpc_;
  kj::Own<kj::PromiseFulfiller<void>> abort_;
  kj::Promise<void> closing_ = nullptr;  // the delayed close; cancelled if we go first
  bool violated_ = false;
};

class CollectorServer::SessionImpl final : public protocol::Session::Server {
 public:
  explicit SessionImpl(Connection& conn) : conn_(conn) {}

  kj::Promise<void> upload(UploadContext context) override {
    conn_.server.run_admin_work();
    Upload up;
    if (auto broken = take_upload(context.getParams(), conn_.agent, up); !broken.empty())
      throw conn_.violation(broken);
    // The params, which the records point into, live until the call returns;
    // the bytes read for them stay charged to the memory budget until then.
    return conn_.server.worker_.submit(std::move(up), conn_.take_charge())
        // The connection may be gone when storage answers: capture its name only.
        .then([context, who = conn_.who()](UploadResult result) mutable {
          if (!result.error.empty()) {
            spdlog::warn("collector: refused an upload from {}: {}", who, result.error);
            throw error_text(result.error);
          }
          context.getResults(kUploadResultsSize).setStoredThrough(result.mark);
        });
  }

 private:
  Connection& conn_;
};

class CollectorServer::CollectorImpl final : public protocol::Collector::Server {
 public:
  explicit CollectorImpl(Connection& conn) : conn_(conn) {}

  kj::Promise<void> hello(HelloContext context) override {
    auto params = context.getParams();
    auto info = params.getAgent();
    auto& server = conn_.server;
    if (!conn_.agent.empty()) throw conn_.violation("a second hello on one connection");
    if (info.getMajorVersion() != protocol::MAJOR_VERSION)
      throw conn_.violation("agent speaks protocol " + std::to_string(info.getMajorVersion()) + "." +
                            std::to_string(info.getMinorVersion()) + "; this collector speaks " +
                            std::to_string(protocol::MAJOR_VERSION) + ".x");
    std::string id = conn_.cert_name.empty() ? std::string(info.getClaimedId().cStr()) : conn_.cert_name;
    if (!valid_agent_id(id))
      throw conn_.violation("agent id \"" + id +
                            "\" is not usable (1-128 of A-Z a-z 0-9 _ . @ -, not starting with '.')");
    conn_.agent = id;
    // So that requests for it need no --new-agent once it left (once per
    // agent and run: a reconnect storm does not queue a write per hello
    // ahead of the admin commands).
    if (server.remembered_.insert(id).second)
      server.tasks_.add(server.writer_.run([&state = server.state_, id] {
        if (!state.known_agent(id)) state.remember_agent(id);
      }));
    // A reconnecting agent replaces its old session.
    AgentSession session{conn_.peer, schemas::now_ns(), params.getController(), info.getMinorVersion()};
    session.socket = &conn_.socket;
    server.set_session(id, kj::mv(session));
    spdlog::info("collector: agent {} connected from {} ({})", id, conn_.peer,
                 info.getSoftware().cStr());

    // The marks come from the backend, which may be a round trip away (or
    // unreachable: the hello then fails and the agent tries again later).
    // With a relay, calls for it reach this collector before its queued
    // requests are read (push_requests): none falls in between.
    conn_.held = server.relay_ != nullptr;
    return server.lookups_
        .run([&rows = server.worker_.rows(), relay = server.relay_, id] {
          if (relay) relay->hold(id);
          return rows.resume_marks(id);
        })
        .then([this, alive = conn_.alive, context, id](LaneMarks marks) mutable {
          if (!*alive) throw KJ_EXCEPTION(DISCONNECTED, "the agent's connection ended during its hello");
          auto results = context.getResults();
          results.setSession(kj::heap<SessionImpl>(conn_));
          auto resume = results.initResumeFrom(marks.size());
          for (size_t i = 0; i < marks.size(); ++i) {
            resume[i].setLane(static_cast<schemas::Lane>(i));
            resume[i].setSeq(marks[i]);
          }
          results.setMajorVersion(protocol::MAJOR_VERSION);
          results.setMinorVersion(protocol::MINOR_VERSION);
          results.setAgentId(id);
          conn_.server.push_requests_now(id);
        });
  }

 private:
  Connection& conn_;
};

CollectorServer::CollectorServer(kj::AsyncIoContext& io, CollectorConfig config, AdminState& state,
                                 StorageWorker& worker, AdminRelay* relay)
    : io_(io), config_(std::move(config)), state_(state), worker_(worker), relay_(relay), tasks_(*this) {
  std::random_device random;
  instance_ = fmt::format("{:08x}{:08x}", random(), random());
  if (config_.tls.insecure)
    spdlog::warn("collector: --insecure: TLS is OFF, agents are not authenticated and anyone on "
                 "the network can read and forge their data");
  else
    tls_ = std::make_unique<TlsSetup>(config_.tls, true);
}

CollectorServer::~CollectorServer() {
  if (relay_) relay_->stop();  // its `where` calls use connected_ and address_
}

void CollectorServer::taskFailed(kj::Exception&& exception) {
  spdlog::warn("collector: {}", exception.getDescription().cStr());
}

kj::Promise<uint16_t> CollectorServer::start() {
  return io_.provider->getNetwork()
      .parseAddress(config_.host, config_.port)
      .then([this](kj::Own<kj::NetworkAddress> addr) {
        listener_ = addr->listen();
        uint16_t port = static_cast<uint16_t>(listener_->getPort());
        address_ = config_.host + ":" + std::to_string(port);
        if (relay_)
          relay_->start(io_.provider->getTimer(), tasks_, [this](AdminRelay::Call call) { take_call(kj::mv(call)); },
                        [this](const std::string& agent) { return where_here(agent); });
        tasks_.add(accept_loop(
            *listener_, io_.provider->getTimer(), "an agent", [this](kj::Own<kj::AsyncIoStream> s) { take_agent(kj::mv(s)); }));
        // The admin thread's calls may use the relay: after it started.
        tasks_.add(mailbox_.serve(tasks_));
        tasks_.add(forget_silent_agents());
        if (!config_.admin_socket.empty()) start_admin();
        spdlog::info("collector: listening on {}:{} ({}){}", config_.host, port,
                     tls_ ? "TLS, client certificates required" : "plaintext",
                     config_.admin_socket.empty() ? "" : ", admin commands on " + config_.admin_socket);
        return port;
      });
}

kj::Promise<void> CollectorServer::forget_silent_agents() {
  return io_.provider->getTimer()
      .afterDelay(config_.forget_period.count() * kj::MILLISECONDS)
      .then([this] {
        std::vector<std::string> ids;
        for (auto& [id, session] : agents_) ids.push_back(id);
        return writer_
            .run([&state = state_, ids = std::move(ids)] { return state.forget_silent_agents(ids, schemas::now_ns()); })
            .then(
                [](AdminState::Forgotten f) {
                  if (f.agents || f.queues || f.markers)
                    spdlog::info("collector: forgot {} agents no collector saw for their keep days and {} emptied "
                                 "request queues; purged {} delete markers of earlier passes",
                                 f.agents, f.queues, f.markers);
                },
                [](kj::Exception&& e) {
                  spdlog::warn("collector: forgetting silent agents failed (tried again at the next pass): {}",
                               e.getDescription().cStr());
                });
      })
      .then([this] { return forget_silent_agents(); });
}

kj::Promise<void> CollectorServer::accept_loop(kj::ConnectionReceiver& listener, kj::Timer& timer, const char* what,
                                               std::function<void(kj::Own<kj::AsyncIoStream>)> take) {
  // evalNow: kj may throw from accept() itself (EMFILE), not only through its promise.
  return kj::evalNow([&listener] { return listener.accept(); })
      .then(
          [take](kj::Own<kj::AsyncIoStream> stream) -> kj::Promise<void> {
            take(kj::mv(stream));
            return kj::READY_NOW;
          },
          [&timer, what](kj::Exception&& e) {
            // Out of descriptors, say: keep listening, and breathe.
            spdlog::error("collector: accepting {} failed: {}; retrying in 100 ms", what,
                          e.getDescription().cStr());
            return timer.afterDelay(100 * kj::MILLISECONDS);
          })
      .then([&listener, &timer, what, take] { return accept_loop(listener, timer, what, take); });
}

void CollectorServer::admit() {
  auto limit = config_.handshake_wait.count() * kj::MILLISECONDS;
  auto now = io_.provider->getTimer().now();
  auto close_oldest = [&](const char* why) {
    log_refusal("closed " + waiting_.front().peer + " unanswered: " + why);
    waiting_.pop_front();
  };
  while (!waiting_.empty() && now - waiting_.front().since >= limit)
    close_oldest("it waited too long for a TLS handshake slot");
  while (waiting_.size() > config_.max_waiting_handshakes)
    close_oldest("too many connections waiting for a TLS handshake");
  while (handshaking_ < config_.max_handshakes && !waiting_.empty()) {
    Waiting next = kj::mv(waiting_.back());
    waiting_.pop_back();
    ++handshaking_;
    // The slot comes back however the handshake ends, even if it throws.
    auto done = [this] {
      --handshaking_;
      admit();
    };
    std::string peer = next.peer;
    tasks_.add(kj::evalNow([&] { return handshake(kj::mv(next.stream), kj::mv(next.peer)); })
                   .then(kj::cp(done), [this, done, peer](kj::Exception&& e) {  // then() keeps a reference to an lvalue
                     log_refusal("closed " + peer + ": " + e.getDescription().cStr());
                     done();
                   }));
  }
}

void CollectorServer::take_agent(kj::Own<kj::AsyncIoStream> accepted) {
  std::string peer = peer_of(*accepted);
  try {
    keep_alive(*accepted);
  } catch (const kj::Exception& e) {  // the peer may already be gone
    spdlog::warn("collector: {}: keepalive not set: {}", peer, e.getDescription().cStr());
  }
  auto stream = SocketStream::take(io_.unixEventPort, kj::mv(accepted));
  if (tls_) {
    waiting_.push_back({kj::mv(stream), kj::mv(peer), io_.provider->getTimer().now()});
    admit();
  } else {
    auto& socket = *stream;
    serve(kj::mv(stream), socket, peer, {});
  }
}

// A failed handshake (wrong CA, no or expired client certificate, not TLS
// at all) is logged with the peer's address and ends that connection only.
kj::Promise<void> CollectorServer::handshake(kj::Own<SocketStream> stream, std::string peer) {
  auto& socket = *stream;  // owned by the TLS stream below, then by its connection
  auto timeout = io_.provider->getTimer().afterDelay(config_.handshake_timeout.count() * kj::MILLISECONDS)
                     .then([]() -> kj::AuthenticatedStream {
                       throw KJ_EXCEPTION(DISCONNECTED, "no TLS handshake within the timeout");
                     });
  return tls_->context()
      .wrapServer(kj::AuthenticatedStream{kj::mv(stream), kj::UnknownPeerIdentity::newInstance()})
      .exclusiveJoin(kj::mv(timeout))
      .then(
          [this, peer, &socket](kj::AuthenticatedStream auth) {
            auto& identity = kj::downcast<kj::TlsPeerIdentity>(*auth.peerIdentity);
            if (!identity.hasCertificate()) {
              log_refusal("refused " + peer + ": no client certificate");
              return;
            }
            std::string name;
            try {
              name = identity.getCommonName().cStr();  // kj asserts there is one
            } catch (const kj::Exception&) {
            }
            if (name.empty()) {
              log_refusal("refused " + peer + ": its certificate names no agent (no common name)");
              return;
            }
            serve(kj::mv(auth.stream), socket, peer, name);
          },
          [this, peer](kj::Exception&& e) {
            log_refusal("refused " + peer + ": TLS handshake failed: " + e.getDescription().cStr());
          });
}

// A peer can open thousands of failing connections a second: the first of
// each window is logged in full, then one summary of how many more.
void CollectorServer::log_refusal(const std::string& text) {
  auto now = LogLimiter::Clock::now();
  if (auto more = refusal_log_.close_if_over(now)) log_refusal_summary(more);
  if (refusal_log_.allow(now)) {
    spdlog::warn("collector: {}", text);
    return;
  }
  if (refusal_log_.suppressed() == 1)  // the first not logged: count until the window ends
    tasks_.add(io_.provider->getTimer()
                   .afterDelay(refusal_log_.window().count() * kj::MILLISECONDS)
                   .then([this] {
                     if (auto more = refusal_log_.close()) log_refusal_summary(more);
                   }));
}

void CollectorServer::log_refusal_summary(uint64_t more) {
  spdlog::warn("collector: {} more connections refused or failed in the last {} s", more,
               std::chrono::duration_cast<std::chrono::seconds>(refusal_log_.window()).count());
}

void CollectorServer::serve(kj::Own<kj::AsyncIoStream> stream, SocketStream& socket, std::string peer,
                            std::string cert_name) {
  auto conn = kj::heap<Connection>(*this, kj::mv(stream), socket, peer, kj::mv(cert_name));
  auto& c = *conn;
  ++connections_;
  tasks_.add(c.run(kj::heap<CollectorImpl>(c))
                 .then(
                     [this, &c] {
                       // The RPC system ends a connection that sent garbage without a word.
                       if (auto why = c.failure(); !why.empty())
                         log_refusal("closed " + c.peer + " (" + c.who() + "): " + why);
                     },
                     [this, &c](kj::Exception&& e) {
                       if (e.getType() != kj::Exception::Type::DISCONNECTED)
                         log_refusal("connection " + c.peer + " (" + c.who() + ") failed: " +
                                     e.getDescription().cStr());
                     })
                 .then([this, &c] {
                   --connections_;
                   auto it = agents_.find(c.agent);
                   if (it != agents_.end() && it->second.peer == c.peer) end_session(it);
                   // After its hold, on the same thread.
                   if (c.held) tasks_.add(lookups_.run([relay = relay_, agent = c.agent] { relay->release(agent); }));
                   if (!c.agent.empty()) spdlog::info("collector: agent {} disconnected", c.agent);
                 })
                 .attach(kj::mv(conn)));
}

void CollectorServer::read_awaited_now() {
  auto now = io_.provider->getTimer().now();
  if (now - awaited_read_at_ < 1 * kj::MILLISECONDS) return;
  awaited_read_at_ = now;
  for (auto& [agent, calls] : awaited_)
    if (auto it = agents_.find(agent); it != agents_.end() && it->second.socket != nullptr) it->second.socket->read_now();
}

void CollectorServer::set_session(const std::string& agent, AgentSession session) {
  {
    std::lock_guard<std::mutex> lock(connected_mutex_);
    connected_[agent] = Connected{session.peer, session.connected_ns};
  }
  agents_.erase(agent);
  agents_.emplace(agent, kj::mv(session));
}

void CollectorServer::end_session(std::map<std::string, AgentSession>::iterator it) {
  {
    std::lock_guard<std::mutex> lock(connected_mutex_);
    connected_.erase(it->first);
  }
  agents_.erase(it);
}

std::map<std::string, CollectorServer::Connected> CollectorServer::connected() const {
  std::lock_guard<std::mutex> lock(connected_mutex_);
  return connected_;
}

bool CollectorServer::connected_here(const std::string& agent) const {
  std::lock_guard<std::mutex> lock(connected_mutex_);
  return connected_.count(agent) > 0;
}

// --- Requests for agents

bool CollectorServer::takes_definitions(const std::string& agent) const {
  auto it = agents_.find(agent);
  return it != agents_.end() && it->second.minor_version >= 1;
}

void CollectorServer::push_requests_now(const std::string& agent) {
  auto [running, fresh] = push_running_.emplace(agent, false);
  if (!fresh) {
    running->second = true;  // once more when this round ends
    return;
  }
  auto it = agents_.find(agent);
  if (it == agents_.end()) {
    push_running_.erase(running);
    return;
  }
  tasks_.add(push_requests(agent, it->second.controller).then([this, agent] {
    bool again = push_running_[agent];
    push_running_.erase(agent);
    if (again) push_requests_now(agent);
  }));
}

kj::Promise<void> CollectorServer::push_requests(std::string agent,
                                                 protocol::AgentController::Client controller) {
  struct Waiting {
    std::string table;
    std::vector<AdminState::Queued> queued;
  };
  return writer_.run([&state = state_, agent] { return Waiting{state.event_table(agent), state.queued_requests(agent)}; })
      .then([this, agent, controller](Waiting waiting) mutable -> kj::Promise<void> {
        kj::Promise<void> table = kj::READY_NOW;
        if (!waiting.table.empty()) {
          Decoded<protocol::EventTable> decoded(waiting.table);
          for (auto e : decoded.get().getEntries())
            if (e.getDefinition().size() && !takes_definitions(agent)) {
              spdlog::warn("collector: agent {} speaks protocol 1.0, which would ignore the artifact definitions "
                           "its event table holds: the table is not sent",
                           agent);
              return push_queued(agent, controller, kj::mv(waiting.queued), 0);
            }
          auto req = controller.setEventTableRequest();
          req.setArtifacts(decoded.get().getEntries());
          table = req.send().ignoreResult().catch_([agent](kj::Exception&& e) {
            if (disconnected(e)) throw kj::mv(e);
            spdlog::warn("collector: agent {} refused its event table: {}", agent, e.getDescription().cStr());
          });
        }
        return table.then([this, agent, controller, queued = kj::mv(waiting.queued)]() mutable {
          return push_queued(agent, controller, kj::mv(queued), 0);
        });
      })
      .catch_([agent](kj::Exception&& e) {
        spdlog::info("collector: agent {} left before taking its requests: {}", agent, e.getDescription().cStr());
      });
}

// One at a time, in order; a request the agent refuses is dropped (logged),
// one it never answered (disconnected) stays for its next connection.
kj::Promise<void> CollectorServer::push_queued(std::string agent,
                                               protocol::AgentController::Client controller,
                                               std::vector<AdminState::Queued> queued, size_t next) {
  if (next >= queued.size()) return kj::READY_NOW;
  uint64_t key = queued[next].key;
  // Cancelled since the list was read (the admin removed it): not sent.
  // Marked as being handed over first, so that a cancel arriving meanwhile goes to the agent.
  pushing_[agent] = key;
  return writer_.run([&state = state_, agent] { return state.queued_requests(agent); })
      .then([this, agent, controller, queued = kj::mv(queued), next, key](
                std::vector<AdminState::Queued> still) mutable -> kj::Promise<void> {
        if (std::none_of(still.begin(), still.end(), [&](const AdminState::Queued& q) { return q.key == key; })) {
          pushing_.erase(agent);
          return push_queued(agent, controller, kj::mv(queued), next + 1);
        }
        Decoded<protocol::PendingRequest> decoded(queued[next].encoded);
        auto request = decoded.get();
        kj::Promise<void> sent = nullptr;
        std::string what;
        if (request.isCollect() && request.getCollect().getDefinition().size() && !takes_definitions(agent)) {
          what = "collection " + std::to_string(request.getCollect().getFlowId());
          sent = kj::Promise<void>(KJ_EXCEPTION(
              FAILED, "it speaks protocol 1.0, which would ignore the artifact definition sent with it"));
        } else if (request.isCollect()) {
          auto req = controller.collectRequest();
          req.setRequest(request.getCollect());
          what = "collection " + std::to_string(request.getCollect().getFlowId()) + " (" +
                 request.getCollect().getArtifact().cStr() + ")";
          sent = req.send().ignoreResult();
        } else {
          auto req = controller.cancelRequest();
          req.setFlowId(request.getCancel());
          what = "cancel of flow " + std::to_string(request.getCancel());
          sent = req.send().ignoreResult();
        }
        sent = sent.attach(kj::defer([this, agent] { pushing_.erase(agent); }));
        return sent
            .then([agent, what] { spdlog::info("collector: agent {} took the queued {}", agent, what); },
                  [agent, what](kj::Exception&& e) {
                    if (disconnected(e)) throw kj::mv(e);
                    spdlog::warn("collector: agent {} refused the queued {}: {}", agent, what,
                                 e.getDescription().cStr());
                  })
            .then([this, agent, key] {
              return writer_.run([&state = state_, agent, key] { state.remove_request(agent, key); });
            })
            .then([this, agent, controller, queued = kj::mv(queued), next]() mutable {
              return push_queued(agent, controller, kj::mv(queued), next + 1);
            });
      });
}

}  // namespace outpost::net
