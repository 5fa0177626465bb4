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

#include "schemas/inspector.capnp.h"
#include "schemas/protocol.capnp.h"

#include "net/kj_util.hpp"
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

// Requests and tables are kept in LMDB as flat messages.
template <typename T>
std::string encode(typename T::Reader value) {
  capnp::MallocMessageBuilder message;
  message.setRoot(value);
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

// Any message's root (an interface's params or results) as a flat message.
std::string encode_any(capnp::AnyPointer::Reader value) {
  capnp::MallocMessageBuilder message;
  message.getRoot<capnp::AnyPointer>().set(value);
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

// An owned, aligned copy of a stored message, read as T.
template <typename T>
class Decoded {
 public:
  explicit Decoded(const std::string& bytes)
      : words_(kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word))) {
    std::memcpy(words_.begin(), bytes.data(), words_.size() * sizeof(capnp::word));
    reader_ = kj::heap<capnp::FlatArrayMessageReader>(words_);
  }
  typename T::Reader get() { return reader_->getRoot<T>(); }

 private:
  kj::Array<capnp::word> words_;
  kj::Own<capnp::FlatArrayMessageReader> reader_;
};

// A type as a value, to pick a template's types from an argument.
template <typename T>
struct template_type {
  using type = T;
};

bool disconnected(const kj::Exception& e) { return e.getType() == kj::Exception::Type::DISCONNECTED; }

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
  Connection(CollectorServer& server, kj::Own<kj::AsyncIoStream> stream, std::string peer,
             std::string cert_name)
      : server(server), peer(std::move(peer)), cert_name(std::move(cert_name)),
        stream_(kj::heap<GatedStream>(kj::mv(stream), server.worker_)), messages_(*stream_),
        network_(messages_, capnp::rpc::twoparty::Side::SERVER, wire_limits()) {}

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
          context.getResults().setStoredThrough(result.mark);
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
    // So that requests for it need no --new-agent once it left.
    server.tasks_.add(server.writer_.run([&state = server.state_, id] {
      if (!state.known_agent(id)) state.remember_agent(id);
    }));
    server.agents_.erase(id);  // a reconnecting agent replaces its old session
    server.agents_.emplace(id, AgentSession{conn_.peer, schemas::now_ns(), params.getController(),
                                            info.getMinorVersion()});
    spdlog::info("collector: agent {} connected from {} ({})", id, conn_.peer,
                 info.getSoftware().cStr());

    // The marks come from the backend, which may be a round trip away (or
    // unreachable: the hello then fails and the agent tries again later).
    // With a relay, calls for it reach this collector before its queued
    // requests are read (push_requests): none falls in between.
    auto controller = params.getController();
    conn_.held = server.relay_ != nullptr;
    return server.lookups_
        .run([&rows = server.worker_.rows(), relay = server.relay_, id] {
          if (relay) relay->hold(id);
          return rows.marks(id);
        })
        .then([this, context, id, controller](LaneMarks marks) mutable {
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
    : io_(io), config_(std::move(config)), state_(state), worker_(worker), relay_(relay),
      calls_(std::make_unique<AdminCalls>(*this)), tasks_(*this) {
  if (config_.tls.insecure)
    spdlog::warn("collector: --insecure: TLS is OFF, agents are not authenticated and anyone on "
                 "the network can read and forge their data");
  else
    tls_ = std::make_unique<TlsSetup>(config_.tls, true);
}

CollectorServer::~CollectorServer() = default;

void CollectorServer::taskFailed(kj::Exception&& exception) {
  spdlog::warn("collector: {}", exception.getDescription().cStr());
}

kj::Promise<uint16_t> CollectorServer::start() {
  return io_.provider->getNetwork()
      .parseAddress(config_.host, config_.port)
      .then([this](kj::Own<kj::NetworkAddress> addr) {
        listener_ = addr->listen();
        return config_.admin_socket.empty() ? kj::Promise<void>(kj::READY_NOW) : start_admin();
      })
      .then([this] {
        uint16_t port = static_cast<uint16_t>(listener_->getPort());
        address_ = config_.host + ":" + std::to_string(port);
        if (relay_)
          relay_->start(io_.provider->getTimer(), tasks_, [this](AdminRelay::Call call) { take_call(kj::mv(call)); });
        tasks_.add(accept_loop(
            *listener_, "an agent", [this](kj::Own<kj::AsyncIoStream> s) { take_agent(kj::mv(s)); }));
        spdlog::info("collector: listening on {}:{} ({}){}", config_.host, port,
                     tls_ ? "TLS, client certificates required" : "plaintext",
                     config_.admin_socket.empty() ? "" : ", admin commands on " + config_.admin_socket);
        return port;
      });
}

kj::Promise<void> CollectorServer::accept_loop(kj::ConnectionReceiver& listener, const char* what,
                                               std::function<void(kj::Own<kj::AsyncIoStream>)> take) {
  // evalNow: kj may throw from accept() itself (EMFILE), not only through its promise.
  return kj::evalNow([&listener] { return listener.accept(); })
      .then(
          [take](kj::Own<kj::AsyncIoStream> stream) -> kj::Promise<void> {
            take(kj::mv(stream));
            return kj::READY_NOW;
          },
          [this, what](kj::Exception&& e) {
            // Out of descriptors, say: keep listening, and breathe.
            spdlog::error("collector: accepting {} failed: {}; retrying in 100 ms", what,
                          e.getDescription().cStr());
            return io_.provider->getTimer().afterDelay(100 * kj::MILLISECONDS);
          })
      .then([this, &listener, what, take] { return accept_loop(listener, what, take); });
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

void CollectorServer::take_agent(kj::Own<kj::AsyncIoStream> stream) {
  std::string peer = peer_of(*stream);
  try {
    keep_alive(*stream);
  } catch (const kj::Exception& e) {  // the peer may already be gone
    spdlog::warn("collector: {}: keepalive not set: {}", peer, e.getDescription().cStr());
  }
  if (tls_) {
    waiting_.push_back({kj::mv(stream), kj::mv(peer), io_.provider->getTimer().now()});
    admit();
  } else {
    serve(kj::mv(stream), peer, {});
  }
}

// A failed handshake (wrong CA, no or expired client certificate, not TLS
// at all) is logged with the peer's address and ends that connection only.
kj::Promise<void> CollectorServer::handshake(kj::Own<kj::AsyncIoStream> stream, std::string peer) {
  auto timeout = io_.provider->getTimer().afterDelay(config_.handshake_timeout.count() * kj::MILLISECONDS)
                     .then([]() -> kj::AuthenticatedStream {
                       throw KJ_EXCEPTION(DISCONNECTED, "no TLS handshake within the timeout");
                     });
  return tls_->context()
      .wrapServer(kj::AuthenticatedStream{kj::mv(stream), kj::UnknownPeerIdentity::newInstance()})
      .exclusiveJoin(kj::mv(timeout))
      .then(
          [this, peer](kj::AuthenticatedStream auth) {
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
            serve(kj::mv(auth.stream), peer, name);
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

void CollectorServer::serve(kj::Own<kj::AsyncIoStream> stream, std::string peer,
                            std::string cert_name) {
  auto conn = kj::heap<Connection>(*this, kj::mv(stream), peer, kj::mv(cert_name));
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
                   if (it != agents_.end() && it->second.peer == c.peer) agents_.erase(it);
                   // After its hold, on the same thread.
                   if (c.held) tasks_.add(lookups_.run([relay = relay_, agent = c.agent] { relay->release(agent); }));
                   if (!c.agent.empty()) spdlog::info("collector: agent {} disconnected", c.agent);
                 })
                 .attach(kj::mv(conn)));
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

// --- The admin calls, for the admin interface (outpost-collector <command>,
// over a unix socket) and for calls another collector sent through the relay

class CollectorServer::AdminCalls {
 public:
  using Admin = protocol::Admin;
  explicit AdminCalls(CollectorServer& server) : server_(server) {}

  kj::Promise<void> collect(Admin::CollectParams::Reader params, Admin::CollectResults::Builder results) {
    std::string agent = checked_agent(params.getAgent());
    check_takes(agent, params.getRequest().getDefinition().size() > 0);
    return check_met(agent, params.getNewAgent())
        .then([this] { return server_.writer_.run([&state = server_.state_] { return state.next_flow_ids(1); }); })
        .then([this, params, results, agent](uint64_t flow) mutable -> kj::Promise<void> {
          auto given = params.getRequest();
          capnp::MallocMessageBuilder message;
          auto request = message.initRoot<protocol::CollectRequest>();
          request.setArtifact(given.getArtifact());
          request.setVql(given.getVql());
          request.setDefinition(given.getDefinition());
          request.setParameters(given.getParameters());
          request.setFlowId(flow);
          set_request_id(request);
          auto queue = [this, agent, flow, stored = encode_pending(request.asReader())] {
            return queue_request(agent, stored).then([agent, flow] {
              spdlog::info("collector: collection {} queued for agent {}", flow, agent);
            });
          };
          results.setFlowId(flow);
          auto it = server_.agents_.find(agent);
          if (it == server_.agents_.end()) {
            results.setQueued(true);
            return queue();
          }
          auto req = it->second.controller.collectRequest();
          req.setRequest(request.asReader());
          return req.send().then(
              [agent, flow](auto) -> kj::Promise<void> {
                spdlog::info("collector: agent {} started collection {}", agent, flow);
                return kj::READY_NOW;
              },
              [results, queue](kj::Exception&& e) mutable -> kj::Promise<void> {
                if (!disconnected(e)) throw kj::mv(e);  // the agent's own refusal, for the caller
                results.setQueued(true);
                return queue();  // the same request id: the agent runs it once
              });
        });
  }

  kj::Promise<void> cancel(Admin::CancelParams::Reader params, Admin::CancelResults::Builder results) {
    std::string agent = checked_agent(params.getAgent());
    uint64_t flow = params.getFlowId();
    struct Known {
      std::vector<AdminState::Queued> queued;
      uint64_t given_below;
    };
    return check_met(agent, std::nullopt)
        .then([this, agent] {
          return server_.writer_.run([&state = server_.state_, agent] {
            return Known{state.queued_requests(agent), state.flows_given_below()};
          });
        })
        .then([this, agent, flow, results](Known known) mutable -> kj::Promise<void> {
          // Not sent yet: dropping it from the queue is the whole cancel. One
          // being handed to the agent right now may run: the cancel goes to the
          // agent (after it, on the same connection).
          auto pushing = server_.pushing_.find(agent);
          for (auto& q : known.queued) {
            Decoded<protocol::PendingRequest> pending(q.encoded);
            if (pending.get().isCollect() && pending.get().getCollect().getFlowId() == flow) {
              if (pushing != server_.pushing_.end() && pushing->second == q.key) break;
              results.setOutcome(protocol::CancelOutcome::NOT_SENT);
              return server_.writer_.run(
                  [&state = server_.state_, agent, key = q.key] { state.remove_request(agent, key); });
            }
          }
          capnp::MallocMessageBuilder message;
          message.initRoot<protocol::PendingRequest>().setCancel(flow);
          auto queue = [this, agent,
                        stored = encode<protocol::PendingRequest>(message.getRoot<protocol::PendingRequest>().asReader())] {
            return queue_request(agent, stored);
          };
          auto it = server_.agents_.find(agent);
          if (it == server_.agents_.end()) {
            // The agent would refuse it when it connects: say so now. (A connected
            // agent says why itself: a configured query, say.)
            if (flow < protocol::FIRST_FLOW_ID || (known.given_below != 0 && flow >= known.given_below))
              throw error_text("no such flow " + std::to_string(flow) + ": this collector never gave it out");
            results.setQueued(true);
            return queue();
          }
          auto req = it->second.controller.cancelRequest();
          req.setFlowId(flow);
          return req.send().then(
              [results](auto resp) mutable -> kj::Promise<void> {
                results.setPurgedRecords(resp.getPurgedRecords());
                results.setOutcome(resp.getOutcome());
                return kj::READY_NOW;
              },
              [results, queue](kj::Exception&& e) mutable -> kj::Promise<void> {
                if (!disconnected(e)) throw kj::mv(e);
                results.setQueued(true);
                return queue();
              });
        });
  }

  kj::Promise<void> setEventTable(Admin::SetEventTableParams::Reader params,
                                  Admin::SetEventTableResults::Builder results) {
    std::string agent = checked_agent(params.getAgent());
    auto entries = params.getArtifacts();
    bool definitions = false;
    for (auto e : entries) definitions = definitions || e.getDefinition().size() > 0;
    check_takes(agent, definitions);
    uint64_t count = entries.size();
    return check_met(agent, params.getNewAgent())
        .then([this, count] {
          return server_.writer_.run([&state = server_.state_, count] { return state.next_flow_ids(count); });
        })
        .then([this, params, results, agent](uint64_t first) mutable -> kj::Promise<void> {
          capnp::MallocMessageBuilder message;
          auto entries = message.initRoot<protocol::EventTable>().initEntries(params.getArtifacts().size());
          size_t i = 0;
          for (auto a : params.getArtifacts()) {
            entries[i].setArtifact(a.getArtifact());
            entries[i].setVql(a.getVql());
            entries[i].setDefinition(a.getDefinition());
            entries[i].setParameters(a.getParameters());
            set_request_id(entries[i]);
            entries[i].setFlowId(first + i);
            ++i;
          }
          auto table = message.getRoot<protocol::EventTable>().asReader();
          std::string stored = table.getEntries().size() ? encode<protocol::EventTable>(table) : "";
          auto keep = [this, agent, stored](bool announce) {
            return server_.writer_.run([&state = server_.state_, agent, stored] { state.set_event_table(agent, stored); })
                .then([this, agent, announce] {
                  if (announce && server_.relay_) server_.relay_->poke(agent);
                });
          };
          auto it = server_.agents_.find(agent);
          if (it == server_.agents_.end()) {
            results.setQueued(true);
            return keep(true);
          }
          auto req = it->second.controller.setEventTableRequest();
          req.setArtifacts(table.getEntries());
          // Stored only once the agent took it: a table it refuses would be refused at every connection.
          return req.send().then([keep](auto) { return keep(false); },
                                 [results, keep](kj::Exception&& e) mutable {
                                   if (!disconnected(e)) throw kj::mv(e);
                                   results.setQueued(true);
                                   return keep(true);
                                 });
        });
  }

  kj::Promise<void> agentStatus(Admin::AgentStatusParams::Reader params, Admin::AgentStatusResults::Builder results) {
    std::string agent = checked_agent(params.getAgent());
    auto it = server_.agents_.find(agent);
    if (it == server_.agents_.end())
      throw error_text("agent " + agent + " is not connected" + (server_.relay_ ? " to any collector" : ""));
    return it->second.controller.statusRequest().send().then(
        [results](auto resp) mutable { results.setJson(resp.getJson()); });
  }

  static std::string checked_agent(kj::StringPtr id) {
    std::string agent = id.cStr();
    if (!valid_agent_id(agent))
      throw error_text("\"" + agent + "\" is not an agent id (1-128 of A-Z a-z 0-9 _ . @ -)");
    return agent;
  }

 private:
  // A mistyped name must not queue requests for nobody.
  // `new_agent`: the caller may queue for an agent yet to connect (nullopt: it may not).
  kj::Promise<void> check_met(const std::string& agent, std::optional<bool> new_agent) {
    if (new_agent.value_or(false) || server_.agents_.count(agent)) return kj::READY_NOW;
    return server_.writer_.run([&state = server_.state_, agent] { return state.known_agent(agent); })
        .then([this, agent, new_agent](bool known) {
          if (known) return;
          throw error_text("no agent " + agent + " has ever connected to this collector" +
                           (server_.relay_ ? " or the others sharing its state" : "") +
                           " (`outpost-collector agents` lists those that have)" +
                           (new_agent ? "; to queue for an agent yet to connect, pass --new-agent" : ""));
        });
  }
  // A connected agent of protocol 1.0 would ignore an artifact definition and
  // run its own artifact of that name.
  void check_takes(const std::string& agent, bool definitions) const {
    if (definitions && server_.agents_.count(agent) && !server_.takes_definitions(agent))
      throw error_text("agent " + agent + " speaks protocol 1.0, which takes no artifact definitions (an agent "
                       "of 1.1 or later does)");
  }
  // Kept for when it connects; a collector of the fleet that holds it now sends it at once.
  kj::Promise<void> queue_request(const std::string& agent, const std::string& stored) {
    return server_.writer_.run([&state = server_.state_, agent, stored] { state.queue_request(agent, stored); })
        .then([this, agent] {
          if (server_.relay_) server_.relay_->poke(agent);
        });
  }
  // 16 bytes the agent tells a request sent again by (protocol.capnp).
  static void set_request_id(protocol::CollectRequest::Builder request) {
    std::random_device random;
    auto id = request.initRequestId(16);
    for (size_t i = 0; i < id.size(); i += 4) {
      uint32_t r = random();
      std::memcpy(id.begin() + i, &r, sizeof r);
    }
  }
  static std::string encode_pending(protocol::CollectRequest::Reader request) {
    capnp::MallocMessageBuilder message;
    message.initRoot<protocol::PendingRequest>().setCollect(request);
    return encode<protocol::PendingRequest>(message.getRoot<protocol::PendingRequest>().asReader());
  }

  CollectorServer& server_;
};

// An agent's inspector through the collector it is connected to: each call
// relayed (its params and results as they are, whatever the method).
class CollectorServer::RelayedInspector final : public capnp::Capability::Server {
 public:
  RelayedInspector(CollectorServer& server, std::string agent) : server_(server), agent_(std::move(agent)) {}

  DispatchCallResult dispatchCall(uint64_t interface, uint16_t method,
                                  capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context) override {
    if (interface != capnp::typeId<inspector::Inspector>())
      return {KJ_EXCEPTION(UNIMPLEMENTED, "not an inspector call"), false};
    auto params = context.getParams();
    std::chrono::milliseconds extra{};
    if (method == 5)  // trace: as long as it was asked to run
      extra = std::chrono::seconds(params.getAs<inspector::Inspector::TraceParams>().getSeconds());
    auto body = encode_any(params);
    auto agent = agent_;
    return {server_.relay_->ask(agent_, "inspector." + std::to_string(method), body, extra)
                .then([context, agent](AdminRelay::Answer answer) mutable {
                  if (answer.kind == AdminRelay::Answer::failed) throw error_text(answer.error);
                  if (answer.kind == AdminRelay::Answer::not_here)
                    throw error_text("agent " + agent + " is not connected to any collector");
                  context.initResults().set(Decoded<capnp::AnyPointer>(answer.body).get());
                }),
            false};
  }

 private:
  CollectorServer& server_;
  std::string agent_;
};

class CollectorServer::AdminImpl final : public protocol::Admin::Server {
 public:
  explicit AdminImpl(CollectorServer& server) : server_(server) {}

  struct Known {
    std::vector<std::string> ids;
    std::vector<std::string> tables;
    std::vector<uint32_t> pending;
  };
  struct Listed {
    Known known;
    std::vector<AgentProgress> progress;
    std::vector<std::string> elsewhere;  // per id: its collector's answer to "where" (an AgentSummary), or ""
  };

  // With a relay, where each agent not connected here is connected: asked
  // all at once (an agent connected nowhere is answered at once by NATS).
  kj::Promise<Listed> where(std::pair<Known, std::vector<AgentProgress>> got) {
    Listed listed{kj::mv(got.first), kj::mv(got.second), {}};
    listed.elsewhere.resize(listed.known.ids.size());
    if (!server_.relay_) return kj::mv(listed);
    auto asks = kj::heapArrayBuilder<kj::Promise<void>>(listed.known.ids.size());
    auto shared = kj::heap<Listed>(kj::mv(listed));
    for (size_t i = 0; i < shared->known.ids.size(); ++i) {
      if (server_.agents_.count(shared->known.ids[i])) {
        asks.add(kj::READY_NOW);
        continue;
      }
      asks.add(server_.relay_->ask(shared->known.ids[i], "where", "")
                   .then([&out = shared->elsewhere[i]](AdminRelay::Answer answer) {
                     if (answer.kind == AdminRelay::Answer::answered) out = kj::mv(answer.body);
                   }));
    }
    auto& result = *shared;
    return kj::joinPromises(asks.finish()).then([&result] { return kj::mv(result); }).attach(kj::mv(shared));
  }

  kj::Promise<void> listAgents(ListAgentsContext context) override {
    std::vector<std::string> connected;
    for (auto& [id, session] : server_.agents_) connected.push_back(id);
    return server_.writer_
        .run([&state = server_.state_, connected] {
          Known k;
          k.ids = state.agents_met();
          auto with = state.agents_with_requests();
          k.ids.insert(k.ids.end(), connected.begin(), connected.end());
          k.ids.insert(k.ids.end(), with.begin(), with.end());
          std::sort(k.ids.begin(), k.ids.end());
          k.ids.erase(std::unique(k.ids.begin(), k.ids.end()), k.ids.end());
          for (auto& id : k.ids) {
            k.tables.push_back(state.event_table(id));
            k.pending.push_back(static_cast<uint32_t>(state.queued_requests(id).size()));
          }
          return k;
        })
        .then([this](Known known) {
          // The marks and last uploads are the backend's (a round trip each with jetstream).
          return server_.lookups_
              .run([&rows = server_.worker_.rows(), ids = known.ids] {
                std::vector<AgentProgress> progress;
                progress.reserve(ids.size());
                for (auto& id : ids) progress.push_back(rows.progress(id));
                return progress;
              })
              .then([known = kj::mv(known)](std::vector<AgentProgress> progress) mutable {
                return std::make_pair(kj::mv(known), kj::mv(progress));
              });
        })
        .then([this](std::pair<Known, std::vector<AgentProgress>> got) { return where(kj::mv(got)); })
        .then([this, context](Listed got) mutable {
          list(context, got.known.ids, got.known.tables, got.known.pending, got.progress, got.elsewhere);
        });
  }

  kj::Promise<void> collect(CollectContext context) override {
    return route<protocol::Admin::CollectParams, protocol::Admin::CollectResults>("collect", context,
                                                                                  &AdminCalls::collect);
  }
  kj::Promise<void> cancel(CancelContext context) override {
    return route<protocol::Admin::CancelParams, protocol::Admin::CancelResults>("cancel", context,
                                                                                &AdminCalls::cancel);
  }
  kj::Promise<void> setEventTable(SetEventTableContext context) override {
    return route<protocol::Admin::SetEventTableParams, protocol::Admin::SetEventTableResults>(
        "setEventTable", context, &AdminCalls::setEventTable);
  }
  kj::Promise<void> agentStatus(AgentStatusContext context) override {
    return route<protocol::Admin::AgentStatusParams, protocol::Admin::AgentStatusResults>("agentStatus", context,
                                                                                          &AdminCalls::agentStatus);
  }

  kj::Promise<void> inspect(InspectContext context) override {
    std::string agent = AdminCalls::checked_agent(context.getParams().getAgent());
    auto it = server_.agents_.find(agent);
    if (it == server_.agents_.end() && server_.relay_) {
      // Each call goes to the collector holding the agent when it is made.
      context.getResults().setInspector(
          capnp::Capability::Client(kj::heap<RelayedInspector>(server_, agent)).castAs<inspector::Inspector>());
      return kj::READY_NOW;
    }
    if (it == server_.agents_.end()) throw error_text("agent " + agent + " is not connected");
    // Pipelined: the caller's calls go to the agent through this collector.
    context.getResults().setInspector(it->second.controller.inspectorRequest().send().getInspector());
    return kj::READY_NOW;
  }

 private:
  // Runs `local` here when the agent is connected here or this collector is
  // alone; else sends it to the collector holding the agent, and runs it
  // here (which queues) when no collector does.
  template <typename P, typename R, typename Context>
  kj::Promise<void> route(const char* name, Context context,
                          kj::Promise<void> (AdminCalls::*local)(typename P::Reader, typename R::Builder)) {
    auto& calls = *server_.calls_;
    std::string agent = AdminCalls::checked_agent(context.getParams().getAgent());
    if (!server_.relay_ || server_.agents_.count(agent))
      return (calls.*local)(context.getParams(), context.getResults());
    return server_.relay_->ask(agent, name, encode<P>(context.getParams()))
        .then([&calls, context, local](AdminRelay::Answer answer) mutable -> kj::Promise<void> {
          switch (answer.kind) {
            case AdminRelay::Answer::answered:
              context.setResults(Decoded<R>(answer.body).get());
              return kj::READY_NOW;
            case AdminRelay::Answer::failed:
              throw error_text(answer.error);
            case AdminRelay::Answer::not_here:
              break;
          }
          return (calls.*local)(context.getParams(), context.getResults());
        });
  }

  void list(ListAgentsContext& context, const std::vector<std::string>& ids, const std::vector<std::string>& tables,
            const std::vector<uint32_t>& pending, const std::vector<AgentProgress>& progress,
            const std::vector<std::string>& elsewhere) {
    auto list = context.getResults().initAgents(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      auto& id = ids[i];
      auto& entry = progress[i];
      auto a = list[i];
      a.setId(id);
      a.setLastUploadNs(entry.last_upload_ns);
      auto marks = a.initMarks(entry.marks.size());
      for (size_t l = 0; l < entry.marks.size(); ++l) {
        marks[l].setLane(static_cast<Lane>(l));
        marks[l].setSeq(entry.marks[l]);
      }
      if (auto it = server_.agents_.find(id); it != server_.agents_.end()) {
        a.setConnected(true);
        a.setPeer(it->second.peer);
        a.setConnectedNs(it->second.connected_ns);
      } else if (!elsewhere[i].empty()) {
        auto there = Decoded<protocol::AgentSummary>(elsewhere[i]);
        a.setConnected(true);
        a.setPeer(there.get().getPeer());
        a.setConnectedNs(there.get().getConnectedNs());
        a.setCollector(there.get().getCollector());
      }
      if (!tables[i].empty()) a.setEventTable(Decoded<protocol::EventTable>(tables[i]).get().getEntries());
      a.setPendingRequests(pending[i]);
    }
  }

  CollectorServer& server_;
};

kj::Promise<std::string> CollectorServer::relayed_inspector_call(AgentSession& session, const AdminRelay::Call& call) {
  uint16_t method = 0;
  try {
    method = static_cast<uint16_t>(std::stoul(call.name.substr(std::strlen("inspector."))));
  } catch (const std::exception&) {
    throw error_text("no inspector call \"" + call.name + "\"");
  }
  if (session.inspector == nullptr)
    session.inspector = capnp::Capability::Client(session.controller.inspectorRequest().send().getInspector());
  auto request = KJ_ASSERT_NONNULL(session.inspector).typelessRequest(capnp::typeId<inspector::Inspector>(), method,
                                                                        nullptr);
  Decoded<capnp::AnyPointer> params(call.body);
  request.set(params.get());
  return request.send().then([](capnp::Response<capnp::AnyPointer> response) { return encode_any(response); });
}

void CollectorServer::take_call(AdminRelay::Call call) {
  auto it = agents_.find(call.agent);
  if (call.name == "push") {
    if (it != agents_.end()) push_requests_now(call.agent);
    return;
  }
  if (it == agents_.end()) {
    relay_->answer(call, {AdminRelay::Answer::not_here, {}, {}});
    return;
  }
  if (call.name == "where") {
    capnp::MallocMessageBuilder message;
    auto here = message.initRoot<protocol::AgentSummary>();
    here.setId(call.agent);
    here.setConnected(true);
    here.setPeer(it->second.peer);
    here.setConnectedNs(it->second.connected_ns);
    here.setCollector(address_);
    relay_->answer(call, {AdminRelay::Answer::answered, encode<protocol::AgentSummary>(here.asReader()), {}});
    return;
  }
  using Admin = protocol::Admin;
  // The call's params and results live until it is answered.
  auto run = [&](auto params_type, auto results_type, auto local) -> kj::Promise<std::string> {
    using P = typename decltype(params_type)::type;
    using R = typename decltype(results_type)::type;
    auto params = kj::heap<Decoded<P>>(call.body);
    auto results = kj::heap<capnp::MallocMessageBuilder>();
    auto& built = *results;
    return ((*calls_).*local)(params->get(), results->initRoot<R>())
        .then([&built] { return encode<R>(built.getRoot<R>().asReader()); })
        .attach(kj::mv(params), kj::mv(results));
  };
  kj::Promise<std::string> answer = nullptr;
  try {
    if (call.name == "collect")
      answer = run(template_type<Admin::CollectParams>{}, template_type<Admin::CollectResults>{}, &AdminCalls::collect);
    else if (call.name == "cancel")
      answer = run(template_type<Admin::CancelParams>{}, template_type<Admin::CancelResults>{}, &AdminCalls::cancel);
    else if (call.name == "setEventTable")
      answer = run(template_type<Admin::SetEventTableParams>{}, template_type<Admin::SetEventTableResults>{},
                   &AdminCalls::setEventTable);
    else if (call.name == "agentStatus")
      answer = run(template_type<Admin::AgentStatusParams>{}, template_type<Admin::AgentStatusResults>{},
                   &AdminCalls::agentStatus);
    else if (call.name.rfind("inspector.", 0) == 0)
      answer = relayed_inspector_call(it->second, call);
    else
      throw error_text("no admin call \"" + call.name + "\"");
  } catch (const kj::Exception& e) {  // a malformed call
    answer = kj::cp(e);
  }
  tasks_.add(answer.then(
      [this, call](std::string body) { relay_->answer(call, {AdminRelay::Answer::answered, std::move(body), {}}); },
      [this, call](kj::Exception&& e) {
        relay_->answer(call, {AdminRelay::Answer::failed, {}, e.getDescription().cStr()});
      }));
}

kj::Promise<void> CollectorServer::start_admin() {
  auto& path = config_.admin_socket;
  if (path.size() >= sizeof(sockaddr_un{}.sun_path))
    throw std::runtime_error("admin socket path " + path + " is longer than " +
                             std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) +
                             " bytes; choose a shorter one with --admin-socket");
  ::unlink(path.c_str());  // a socket left by a collector that died (the datadir lock is ours)
  return io_.provider->getNetwork().parseAddress("unix:" + path).then([this](kj::Own<kj::NetworkAddress> addr) {
    admin_listener_ = addr->listen();
    ::chmod(config_.admin_socket.c_str(), 0600);
    tasks_.add(accept_loop(
        *admin_listener_, "an admin command", [this](kj::Own<kj::AsyncIoStream> s) { take_admin(kj::mv(s)); }));
  });
}

void CollectorServer::take_admin(kj::Own<kj::AsyncIoStream> stream) {
  auto network = kj::heap<capnp::TwoPartyVatNetwork>(*stream, capnp::rpc::twoparty::Side::SERVER);
  auto rpc = kj::heap<capnp::RpcSystem<capnp::rpc::twoparty::VatId>>(
      capnp::makeRpcServer(*network, kj::heap<AdminImpl>(*this)));
  auto done = network->onDisconnect();
  // Attachments are destroyed last first: the RPC system before the network it
  // uses, the network before its stream (a connection still open when the
  // loop ends is torn down in that order).
  tasks_.add(done.attach(kj::mv(stream), kj::mv(network), kj::mv(rpc)));
}

}  // namespace outpost::net
