#include "actors/log_thread.hpp"
#include "net/agent/net_client.hpp"

#include <future>

#include <arpa/inet.h>
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <spdlog/spdlog.h>

#include "net/agent/control_requests.hpp"
#include "net/kj_util.hpp"
#include "net/upload_size.hpp"
#include "net/watched_stream.hpp"
#include "schemas/protocol.capnp.h"

namespace outpost::net {
namespace {

// kj matches the name against the certificate's DNS names only, never its IP
// addresses: a collector reached by IP is expected to be "outpost-collector",
// the name outpost-certs puts in its certificate.
std::string expected_server_name(const ClientConfig& cfg, const std::string& host) {
  if (!cfg.server_name.empty()) return cfg.server_name;
  in6_addr ignored;
  bool ip = inet_pton(AF_INET, host.c_str(), &ignored) == 1 || inet_pton(AF_INET6, host.c_str(), &ignored) == 1;
  return ip ? "outpost-collector" : host;
}

// Nothing on the network may wait forever: a collector that vanished
// without a reset (power loss, a NAT dropping the flow) must still be noticed.
constexpr auto kSessionTimeout = 30 * kj::SECONDS;  // connect, TLS handshake, hello
constexpr auto kControlTimeout = 30 * kj::SECONDS;  // the supervisor's answer to the collector
// A session that lasted this long without storing anything still proves the
// collector healthy: the next reconnect after it starts with a short delay.
constexpr std::chrono::seconds kHealthyAfter{30};

// `e`, its description prefixed with what failed.
kj::Exception failed_at(const char* what, const kj::Exception& e) {
  return error_text(std::string(what) + ": " + e.getDescription().cStr(), e.getType());
}

}  // namespace

// Everything that lives on the network thread.
class NetClient::Loop : private kj::TaskSet::ErrorHandler {
 public:
  explicit Loop(NetClient& owner)
      : owner_(owner), io_(setup_async_io()), backoff_(owner.config_.backoff, kHealthyAfter),
        tasks_(*this) {
    auto& tls = owner_.config_.tls;
    if (tls.insecure)
      spdlog::warn("link: insecure: TLS is OFF; the collector is not verified and anyone on the "
                   "network can read this agent's data");
    else
      tls_ = std::make_unique<TlsSetup>(tls, false);
  }

  void run() {
    auto stop = kj::newPromiseAndFulfiller<void>();
    stop_ = kj::mv(stop.fulfiller);
    arm_doorbell();
    tasks_.add(connect_loop());
    stop.promise.wait(io_.waitScope);
    end_connection();
  }

 private:
  // One connection: the stream, the RPC system on it, and a way to drop it
  // saying why.
  struct Connection {
    kj::Own<kj::AsyncIoStream> stream;
    kj::Own<WatchedMessageStream> messages;
    kj::Own<capnp::TwoPartyVatNetwork> network;
    kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> rpc;
    kj::Own<kj::PromiseFulfiller<std::string>> drop;
  };

  void taskFailed(kj::Exception&& e) override {
    spdlog::error("link: {}", e.getDescription().cStr());
  }

  // The owner rings when it hands over work or wants the loop to stop.
  void arm_doorbell() {
    auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
    auto fulfiller =
        std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<void>>>(kj::mv(paf.fulfiller));
    bool ring_now;
    {
      std::lock_guard<std::mutex> lock(owner_.mutex_);
      owner_.wake_ = [fulfiller] { (*fulfiller)->fulfill(); };
      ring_now = owner_.stopping_ || owner_.reconnect_ || !owner_.pending_.empty();
      if (ring_now) owner_.wake_ = nullptr;
    }
    if (ring_now) (*fulfiller)->fulfill();
    tasks_.add(paf.promise.then([this] { drain(); }));
  }

  void drain() {
    std::vector<Work> work;
    bool stopping, reconnect;
    {
      std::lock_guard<std::mutex> lock(owner_.mutex_);
      work.swap(owner_.pending_);
      stopping = owner_.stopping_;
      reconnect = std::exchange(owner_.reconnect_, false);
    }
    if (stopping) {
      stop_->fulfill();
      return;
    }
    KJ_DEFER(arm_doorbell());  // even if a send throws: later work must still wake us
    if (reconnect) reconnect_now();
    for (auto& w : work) send(w);
  }

  // The operator's reconnect: the session (if one is up) ends, and the next
  // attempt is made at once instead of after the backoff's delay. While an
  // attempt is under way, it goes on; if it fails, the next one is at once.
  void reconnect_now() {
    reconnect_asked_ = true;
    if (retry_now_ && retry_now_->isWaiting()) return retry_now_->fulfill();
    if (conn_ && conn_->drop->isWaiting()) conn_->drop->fulfill("the operator asked for a new connection");
  }

  // Each attempt's or session's end is reported with its reason: the
  // collector closed the connection, an upload's answer timed out, the
  // collector refused an upload (could not store it), the TLS handshake or
  // the stream failed, a protocol error, or the connection could not be made.
  kj::Promise<void> connect_loop() {
    return connect_once()
        .catch_([](kj::Exception&& e) -> std::string { return e.getDescription().cStr(); })
        .then([this](std::string reason) {
          uint64_t ended = session_cap_ != nullptr ? session_ : 0;  // 0: no session came up
          end_connection();
          // The next attempt goes to the next collector, if there are several.
          target_ = (target_ + 1) % (1 + owner_.config_.alternates.size());
          auto delay = std::exchange(reconnect_asked_, false) ? std::chrono::milliseconds(0)
                                                              : backoff_.next(std::chrono::steady_clock::now());
          owner_.events_.disconnected(ended, reason, delay);
          auto retry_now = kj::newPromiseAndFulfiller<void>();
          retry_now_ = kj::mv(retry_now.fulfiller);
          return io_.provider->getTimer()
              .afterDelay(delay.count() * kj::MILLISECONDS)
              .exclusiveJoin(kj::mv(retry_now.promise))
              .then([this] {
                retry_now_ = nullptr;
                reconnect_asked_ = false;  // this attempt is the one asked for
                return connect_loop();
              });
        });
  }

  kj::Timer& timer() { return io_.provider->getTimer(); }

  // The collector this attempt goes to.
  std::pair<std::string, uint16_t> target() const {
    auto& cfg = owner_.config_;
    if (target_ == 0) return {cfg.host, cfg.port};
    return cfg.alternates[target_ - 1];
  }

  // Resolves to why the session ended; throws why it could not start.
  kj::Promise<std::string> connect_once() {
    return within(timer(), connect_stream(), kSessionTimeout, "connect and TLS handshake")
        .then([this](kj::Own<kj::AsyncIoStream> stream) { return hello(kj::mv(stream)); });
  }

  kj::Promise<kj::Own<kj::AsyncIoStream>> connect_stream() {
    auto& cfg = owner_.config_;
    return io_.provider->getNetwork()
        .parseAddress(target().first, target().second)
        .then([](kj::Own<kj::NetworkAddress> addr) { return addr->connect(); })
        .catch_([where = target().first + ":" + std::to_string(target().second)](
                    kj::Exception&& e) -> kj::Own<kj::AsyncIoStream> {
          throw failed_at(("cannot connect to " + where).c_str(), e);
        })
        .then([this, &cfg](kj::Own<kj::AsyncIoStream> stream) -> kj::Promise<kj::Own<kj::AsyncIoStream>> {
          keep_alive(*stream);
          if (!tls_) return kj::mv(stream);
          return tls_->context()
              .wrapClient(kj::mv(stream), expected_server_name(cfg, target().first))
              .catch_([](kj::Exception&& e) -> kj::Own<kj::AsyncIoStream> {
                throw failed_at("TLS handshake failed", e);
              });
        });
  }

  kj::Promise<std::string> hello(kj::Own<kj::AsyncIoStream> stream) {
    auto conn = kj::heap<Connection>();
    conn->stream = kj::mv(stream);
    conn->messages = kj::heap<WatchedMessageStream>(*conn->stream);
    conn->network = kj::heap<capnp::TwoPartyVatNetwork>(*conn->messages,
                                                        capnp::rpc::twoparty::Side::CLIENT);
    conn->rpc = kj::heap<capnp::RpcSystem<capnp::rpc::twoparty::VatId>>(
        capnp::makeRpcClient(*conn->network));
    auto drop = kj::newPromiseAndFulfiller<std::string>();
    conn->drop = kj::mv(drop.fulfiller);
    capnp::word scratch[4] = {};
    capnp::MallocMessageBuilder vat(scratch);
    auto server_id = vat.getRoot<capnp::rpc::twoparty::VatId>();
    server_id.setSide(capnp::rpc::twoparty::Side::SERVER);
    auto collector = conn->rpc->bootstrap(server_id).castAs<protocol::Collector>();
    auto& messages = *conn->messages;
    auto disconnected = conn->network->onDisconnect()
                            .then([&messages]() -> std::string {
                              auto failure = messages.failure();
                              if (!failure.empty()) return "the connection failed: " + failure;
                              return "the collector closed the connection";
                            })
                            .exclusiveJoin(kj::mv(drop.promise));
    conn_ = kj::mv(conn);

    auto req = collector.helloRequest();
    auto info = req.initAgent();
    info.setMajorVersion(protocol::MAJOR_VERSION);
    info.setMinorVersion(protocol::MINOR_VERSION);
    info.setHostname(owner_.config_.hostname);
    info.setSoftware("outpost-agent 0.1");
    info.setClaimedId(owner_.config_.claimed_id);
    req.setController(kj::heap<ControllerImpl>(*this));
    auto answer = req.send().then([](auto resp) { return kj::mv(resp); },
                                  [](kj::Exception&& e) -> capnp::Response<protocol::Collector::HelloResults> {
                                    if (e.getType() == kj::Exception::Type::DISCONNECTED)
                                      throw failed_at("the collector closed the connection during the hello", e);
                                    throw failed_at("the collector refused the hello", e);
                                  });
    return within(timer(), kj::mv(answer), kSessionTimeout, "hello")
        .then([this](capnp::Response<protocol::Collector::HelloResults> resp) {
          if (resp.getMajorVersion() != protocol::MAJOR_VERSION)
            throw error_text("protocol error: the collector speaks protocol " +
                             std::to_string(resp.getMajorVersion()) + "." +
                             std::to_string(resp.getMinorVersion()) + "; this agent speaks " +
                             std::to_string(protocol::MAJOR_VERSION) + ".x");
          std::vector<uint64_t> marks(schemas::kLaneCount);
          for (auto m : resp.getResumeFrom())
            if (static_cast<size_t>(m.getLane()) < marks.size())
              marks[static_cast<size_t>(m.getLane())] = m.getSeq();
          session_cap_ = resp.getSession();
          ++session_;
          reconnect_asked_ = false;
          backoff_.connected(std::chrono::steady_clock::now());
          spdlog::info("link: connected to {}:{} as {}", target().first, target().second,
                       resp.getAgentId().cStr());
          owner_.events_.connected(session_, std::move(marks));
        })
        .then([d = kj::mv(disconnected)]() mutable { return kj::mv(d); });
  }

  void send(Work& w) {
    if (w.session != session_ || session_cap_ == nullptr) return;  // that session is gone
    uint64_t bytes = 0;
    for (size_t i = w.begin; i < w.end; ++i) bytes += (*w.records)[i].payload().size();
    auto req = KJ_ASSERT_NONNULL(session_cap_).uploadRequest(upload_request_size(w.end - w.begin, bytes));
    req.setLane(w.lane);
    req.setAfter(w.after);
    auto list = req.initRecords(w.end - w.begin);
    for (size_t i = w.begin; i < w.end; ++i) {
      auto& r = (*w.records)[i];
      list[i - w.begin].setSeq(r.seq);
      list[i - w.begin].setData(r.payload());
    }
    uint64_t session = w.session;
    Lane lane = w.lane;
    auto answer = req.send().then([](auto resp) { return kj::mv(resp); },
                                  [](kj::Exception&& e) -> Response {
                                    if (e.getType() == kj::Exception::Type::DISCONNECTED)
                                      throw failed_at("the connection ended before an upload's answer", e);
                                    // The collector answered with an error: it could not store it.
                                    throw failed_at("the collector refused an upload", e);
                                  });
    answered_.clear();  // their Finish messages follow this upload's call
    auto wait = owner_.config_.upload_timeout;
    auto limit = timer().afterDelay(wait.count() * kj::MILLISECONDS).then([wait]() -> Response {
      throw error_text("upload timeout: no answer to an upload within " + std::to_string(wait.count()) +
                       " ms");
    });
    tasks_.add(answer.exclusiveJoin(kj::mv(limit))
                   .then(
        [this, session, lane](Response resp) {
          if (session == session_) backoff_.stored();
          owner_.events_.stored(session, lane, resp.getStoredThrough());
          if (session == session_) answered_.push_back(kj::mv(resp));
        },
        [this, session](kj::Exception&& e) {
          // Start over from the collector's marks; the first failure names the reason.
          drop(session, e.getDescription().cStr());
        }));
  }

  // Ends session `session`, if it is the current one, for `reason`.
  void drop(uint64_t session, std::string reason) {
    if (session == session_ && conn_ && conn_->drop->isWaiting()) conn_->drop->fulfill(kj::mv(reason));
  }

  void end_connection() {
    answered_.clear();
    session_cap_ = nullptr;
    // Destroyed later: we may be inside one of its own callbacks.
    if (conn_) tasks_.add(kj::evalLater([c = kj::mv(conn_)] {}));
  }

  // The collector's calls into this agent: carried to the supervisor through
  // the link actor, answered across threads.
  class ControllerImpl final : public protocol::AgentController::Server {
   public:
    explicit ControllerImpl(Loop& loop) : loop_(loop) {}

    kj::Promise<void> collect(CollectContext context) override {
      ControlCall call;
      call.kind = ControlCall::Kind::collect;
      call.specs.push_back(collect_spec(context.getParams().getRequest()));
      return ask(std::move(call)).then([context](ControlReply r) mutable {
        context.getResults().setFlowId(r.value);
      });
    }
    kj::Promise<void> cancel(CancelContext context) override {
      ControlCall call;
      call.kind = ControlCall::Kind::cancel;
      call.flow_id = context.getParams().getFlowId();
      return ask(std::move(call)).then([context](ControlReply r) mutable {
        context.getResults().setPurgedRecords(r.value);
        context.getResults().setOutcome(outcome_of(r.cancelled));
      });
    }
    kj::Promise<void> setEventTable(SetEventTableContext context) override {
      ControlCall call;
      call.kind = ControlCall::Kind::set_event_table;
      call.specs = event_table_specs(context.getParams().getArtifacts());
      return ask(std::move(call)).ignoreResult();
    }
    kj::Promise<void> status(StatusContext context) override {
      ControlCall call;
      call.kind = ControlCall::Kind::status;
      return ask(std::move(call)).then([context](ControlReply r) mutable {
        context.getResults().setJson(r.json);
      });
    }

    kj::Promise<void> inspector(InspectorContext context) override {
      auto& make = loop_.owner_.config_.inspector;
      if (!make) throw error_text("this agent offers no inspector");
      context.getResults().setInspector(make(loop_.io_.provider->getTimer()));
      return kj::READY_NOW;
    }

   private:
    static protocol::CancelOutcome outcome_of(CancelOutcome outcome) {
      switch (outcome) {
        case CancelOutcome::stopped: return protocol::CancelOutcome::STOPPED;
        case CancelOutcome::already_finished: return protocol::CancelOutcome::ALREADY_FINISHED;
        case CancelOutcome::not_running: return protocol::CancelOutcome::NOT_RUNNING;
      }
      return protocol::CancelOutcome::STOPPED;
    }

    kj::Promise<ControlReply> ask(ControlCall call) {
      if (!loop_.owner_.events_.control)
        return KJ_EXCEPTION(UNIMPLEMENTED, "this agent takes no requests");
      auto paf = kj::newPromiseAndCrossThreadFulfiller<ControlReply>();
      auto fulfiller =
          std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<ControlReply>>>(kj::mv(paf.fulfiller));
      call.answer = std::make_shared<ControlAnswer>(
          [fulfiller](ControlReply reply) { (*fulfiller)->fulfill(kj::mv(reply)); });
      loop_.owner_.events_.control(std::move(call));
      return within(loop_.timer(), kj::mv(paf.promise), kControlTimeout, "the agent's supervisor")
          .then([](ControlReply reply) {
            if (!reply.error.empty()) throw error_text(reply.error);
            return reply;
          });
    }

    Loop& loop_;
  };

  NetClient& owner_;
  kj::AsyncIoContext io_;
  ReconnectBackoff backoff_;
  size_t target_ = 0;  // 0: config's host:port; i: alternates[i - 1]
  std::unique_ptr<TlsSetup> tls_;
  kj::Own<Connection> conn_;
  kj::Maybe<protocol::Session::Client> session_cap_;
  // Answers to this session's uploads, kept until the next upload is sent:
  // dropping an answer sends its Finish message, which then reaches the
  // collector with that upload's call instead of waking it on its own.
  using Response = capnp::Response<protocol::Session::UploadResults>;
  std::vector<Response> answered_;
  uint64_t session_ = 0;
  bool reconnect_asked_ = false;  // the operator's: the next attempt is not delayed
  kj::Own<kj::PromiseFulfiller<void>> retry_now_;  // ends the wait before the next attempt
  kj::Own<kj::PromiseFulfiller<void>> stop_;
  kj::TaskSet tasks_;
};

NetClient::NetClient(ClientConfig config, ClientEvents events)
    : config_(std::move(config)), events_(std::move(events)) {
  // The constructor returns once the loop is made (or failed): kj's event
  // port sets SIGPIPE's disposition while it is made (kj_util.hpp).
  std::promise<void> made;
  auto loop_made = made.get_future();
  thread_ = std::thread([this, &made, route = t_log_route] {
    ScopedLogRoute log(route);  // its link's agent's
    std::string why;
    bool told = false;
    try {
      Loop loop(*this);
      made.set_value();
      told = true;
      loop.run();
      return;
    } catch (const std::exception& e) {
      why = e.what();
    } catch (const kj::Exception& e) {
      why = e.getDescription().cStr();
    }
    if (!told) made.set_value();
    spdlog::critical("link: network thread failed: {}", why);
    if (events_.failed) events_.failed(why);
  });
  loop_made.wait();
}

NetClient::~NetClient() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    if (wake_) wake_();
    wake_ = nullptr;
  }
  thread_.join();
}

void NetClient::reconnect() {
  std::lock_guard<std::mutex> lock(mutex_);
  reconnect_ = true;
  if (wake_) wake_();
  wake_ = nullptr;
}

void NetClient::upload(uint64_t session, Lane lane, uint64_t after, BufferedRecords records,
                       size_t begin, size_t end) {
  std::lock_guard<std::mutex> lock(mutex_);
  pending_.push_back({session, lane, after, std::move(records), begin, end});
  if (wake_) wake_();
  wake_ = nullptr;
}

}  // namespace outpost::net
