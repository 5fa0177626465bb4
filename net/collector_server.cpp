#include "net/collector_server.hpp"

#include <arpa/inet.h>
#include <capnp/rpc-twoparty.h>
#include <spdlog/spdlog.h>

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

}  // namespace

// One agent connection: its RPC system, and a way to cut it on a protocol
// violation. Destroying it closes the socket.
class CollectorServer::Connection {
 public:
  Connection(CollectorServer& server, kj::Own<kj::AsyncIoStream> stream, std::string peer,
             std::string cert_name)
      : server(server), peer(std::move(peer)), cert_name(std::move(cert_name)),
        stream_(kj::mv(stream)), network_(*stream_, capnp::rpc::twoparty::Side::SERVER, wire_limits()) {}

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

  CollectorServer& server;
  std::string peer;
  std::string cert_name;  // empty without TLS
  std::string agent;      // set by hello

 private:
  kj::Own<kj::AsyncIoStream> stream_;
  capnp::TwoPartyVatNetwork network_;
  kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> rpc_;
  kj::Own<kj::PromiseFulfiller<void>> abort_;
  kj::Promise<void> closing_ = nullptr;  // the delayed close; cancelled if we go first
};

class CollectorServer::SessionImpl final : public protocol::Session::Server {
 public:
  explicit SessionImpl(Connection& conn) : conn_(conn) {}

  kj::Promise<void> upload(UploadContext context) override {
    auto params = context.getParams();
    auto records = params.getRecords();
    auto lane = static_cast<uint16_t>(params.getLane());
    if (lane >= schemas::kLaneCount) throw conn_.violation("unknown lane " + std::to_string(lane));
    if (records.size() > protocol::MAX_RECORDS_PER_UPLOAD)
      throw conn_.violation(std::to_string(records.size()) + " records in one upload (at most " +
                            std::to_string(protocol::MAX_RECORDS_PER_UPLOAD) + ")");
    Upload up;
    up.agent = conn_.agent;
    up.lane = static_cast<Lane>(lane);
    up.after = params.getAfter();
    uint64_t bytes = 0;
    for (auto r : records) {
      auto data = r.getData();
      bytes += data.size();
      up.records.push_back({r.getSeq(), kj::ArrayPtr<const kj::byte>(data.begin(), data.size())});
    }
    if (bytes > protocol::MAX_UPLOAD_BYTES)
      throw conn_.violation(std::to_string(bytes) + " bytes in one upload");
    // The params, which the records point into, live until the call returns.
    return conn_.server.worker_.submit(std::move(up))
        // The connection may be gone when storage answers: capture its name only.
        .then([context, who = conn_.who()](UploadResult result) mutable {
          if (!result.error.empty()) {
            spdlog::warn("collector: refused an upload from {}: {}", who, result.error);
            throw KJ_EXCEPTION(FAILED, result.error);
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
    server.agents_.erase(id);  // a reconnecting agent replaces its old session
    server.agents_.emplace(id, AgentSession{conn_.peer, schemas::now_ns(), params.getController()});
    spdlog::info("collector: agent {} connected from {} ({})", id, conn_.peer,
                 info.getSoftware().cStr());

    auto marks = server.store_.marks(id);
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
    return kj::READY_NOW;
  }

 private:
  Connection& conn_;
};

CollectorServer::CollectorServer(kj::AsyncIoContext& io, CollectorConfig config,
                                 CollectorStore& store, StorageWorker& worker)
    : io_(io), config_(std::move(config)), store_(store), worker_(worker), tasks_(*this) {
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
        uint16_t port = static_cast<uint16_t>(listener_->getPort());
        tasks_.add(accept_loop());
        spdlog::info("collector: listening on {}:{} ({})", config_.host, port,
                     tls_ ? "TLS, client certificates required" : "plaintext");
        return port;
      });
}

kj::Promise<void> CollectorServer::accept_loop() {
  return listener_->accept().then(
      [this](kj::Own<kj::AsyncIoStream> stream) {
        std::string peer = peer_of(*stream);
        if (tls_)
          tasks_.add(handshake(kj::mv(stream), peer));
        else
          serve(kj::mv(stream), peer, {});
        return accept_loop();
      },
      [this](kj::Exception&& e) {
        // Out of descriptors, say: keep the collector listening, and breathe.
        spdlog::error("collector: accept failed: {}; retrying in 100 ms", e.getDescription().cStr());
        return io_.provider->getTimer().afterDelay(100 * kj::MILLISECONDS).then([this] {
          return accept_loop();
        });
      });
}

// A failed handshake (wrong CA, no or expired client certificate, not TLS
// at all) is logged with the peer's address and ends that connection only.
kj::Promise<void> CollectorServer::handshake(kj::Own<kj::AsyncIoStream> stream, std::string peer) {
  auto timeout = io_.provider->getTimer().afterDelay(config_.handshake_timeout.count() * kj::SECONDS)
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
              spdlog::warn("collector: refused {}: no client certificate", peer);
              return;
            }
            serve(kj::mv(auth.stream), peer, identity.getCommonName().cStr());
          },
          [peer](kj::Exception&& e) {
            spdlog::warn("collector: refused {}: TLS handshake failed: {}", peer,
                         e.getDescription().cStr());
          });
}

void CollectorServer::serve(kj::Own<kj::AsyncIoStream> stream, std::string peer,
                            std::string cert_name) {
  auto conn = kj::heap<Connection>(*this, kj::mv(stream), peer, kj::mv(cert_name));
  auto& c = *conn;
  ++connections_;
  tasks_.add(c.run(kj::heap<CollectorImpl>(c))
                 .then([] {}, [&c](kj::Exception&& e) {
                   if (e.getType() != kj::Exception::Type::DISCONNECTED)
                     spdlog::warn("collector: connection {} ({}) failed: {}", c.peer, c.who(),
                                  e.getDescription().cStr());
                 })
                 .then([this, &c] {
                   --connections_;
                   auto it = agents_.find(c.agent);
                   if (it != agents_.end() && it->second.peer == c.peer) agents_.erase(it);
                   if (!c.agent.empty()) spdlog::info("collector: agent {} disconnected", c.agent);
                 })
                 .attach(kj::mv(conn)));
}

}  // namespace outpost::net
