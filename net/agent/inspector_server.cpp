#include "net/agent/inspector_server.hpp"

#include <capnp/rpc-twoparty.h>
#include <caf/event_based_actor.hpp>
#include <kj/async-io.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>

#include "actors/control.hpp"
#include "actors/warnings.hpp"
#include "net/kj_util.hpp"
#include "schemas/inspector.capnp.h"

namespace outpost::net {
namespace {

using inspector::Inspector;

// How long an actor may take to answer the inspector.
constexpr auto kActorTimeout = std::chrono::seconds(3);

std::runtime_error socket_error(const std::string& path, const std::string& what) {
  return std::runtime_error("inspector socket " + path + ": " + what);
}

sockaddr_un unix_address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.data(), path.size());
  return a;
}

// An actor's error as a person reads it: the text it was made with, else CAF's rendering.
std::string describe(caf::actor_system& sys, const caf::error& e) {
  auto& context = e.context();
  if (context.match_elements<std::string>()) return context.get_as<std::string>(0);
  return sys.render(e);
}

// A socket file already at `path`: a live agent's is refused, a dead one's replaced.
void clear_stale(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return;
  if (!S_ISSOCK(st.st_mode)) throw socket_error(path, "exists and is not a socket; not replacing it");
  kj::AutoCloseFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  auto a = unix_address(path);
  if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0)
    throw socket_error(path, "a running agent serves it; stop that agent or give this one another "
                             "inspector.socket");
  if (errno != ECONNREFUSED)
    throw socket_error(path, std::string("exists and cannot be checked: ") + std::strerror(errno));
  ::unlink(path.c_str());  // nobody listens: left by an agent that died
}

// Bound under a temporary name, made 0600, then renamed into place.
kj::AutoCloseFd listen_on(const std::string& path) {
  std::string tmp = path + "." + std::to_string(::getpid());
  if (tmp.size() >= sizeof(sockaddr_un{}.sun_path))
    throw socket_error(path, "too long (at most 96 bytes)");
  clear_stale(path);
  kj::AutoCloseFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) throw socket_error(path, std::string("socket: ") + std::strerror(errno));
  ::unlink(tmp.c_str());
  auto a = unix_address(tmp);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    throw socket_error(path, std::string("cannot create it: ") + std::strerror(errno));
  if (::chmod(tmp.c_str(), 0600) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw socket_error(path, std::string("cannot put it in place: ") + std::strerror(e));
  }
  if (::listen(fd.get(), 16) != 0) throw socket_error(path, std::string("listen: ") + std::strerror(errno));
  return fd;
}

// Runs `start` in a helper actor; its ok or fail ends the promise.
template <class T>
using Ask = std::function<void(caf::event_based_actor*, std::function<void(T)>, std::function<void(std::string)>)>;

template <class T>
kj::Promise<T> ask(caf::actor_system& sys, Ask<T> start) {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<T>();
  auto f = std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<T>>>(kj::mv(paf.fulfiller));
  sys.spawn([f, start](caf::event_based_actor* self) {
    start(
        self,
        [f, self](T value) {
          (*f)->fulfill(kj::mv(value));
          self->quit();
        },
        [f, self](std::string why) {
          (*f)->reject(error_text(why));
          self->quit();
        });
  });
  return kj::mv(paf.promise);
}

using Statuses = std::map<uint64_t, std::string>;  // actor id -> status JSON

// Every actor's own status, asked of all at once; those that do not answer in time have none.
kj::Promise<Statuses> gather(caf::actor_system& sys, std::vector<ActorRegistry::Entry> live) {
  return ask<Statuses>(sys, [live](caf::event_based_actor* self, auto ok, auto) {
    auto state = std::make_shared<std::pair<Statuses, size_t>>(Statuses{}, live.size() + 1);
    auto one_less = [state, ok] {
      if (--state->second == 0) ok(std::move(state->first));
    };
    for (auto& e : live) {
      auto strong = e.actor.lock();
      if (!strong) {
        one_less();
        continue;
      }
      uint64_t id = e.metrics->id;
      self->request(caf::actor_cast<caf::actor>(strong), kActorTimeout, status_atom::value)
          .then([state, id, one_less](caf::settings& s) {
                  state->first[id] = settings_json(s);
                  one_less();
                },
                [one_less](caf::error&) { one_less(); });
    }
    one_less();
  });
}

// A connection's watch: histograms stay on while one lasts.
struct WatchClient {
  int64_t watch_until = 0;
};

}  // namespace

class InspectorServer::Loop final : private kj::TaskSet::ErrorHandler {
 public:
  Loop(InspectorServer& owner, kj::AutoCloseFd fd)
      : owner_(owner), ctx_(owner.context_), io_(kj::setupAsyncIo()), tasks_(*this),
        listener_(io_.lowLevelProvider->wrapListenSocketFd(fd.release(), kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP)) {}

  void run() {
    auto stop = kj::newPromiseAndCrossThreadFulfiller<void>();
    auto fulfiller = std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<void>>>(kj::mv(stop.fulfiller));
    {
      std::lock_guard<std::mutex> lock(owner_.mutex_);
      if (owner_.stopping_) return;
      owner_.stop_ = [fulfiller] { (*fulfiller)->fulfill(); };
    }
    tasks_.add(accept());
    tasks_.add(tick());
    stop.promise.wait(io_.waitScope);
    ctx_.registry.set_watching(false);
  }

  // Histograms stay on while a connection's watch lasts.
  void refresh_watching() {
    int64_t now = steady_ns();
    bool on = false;
    for (auto* c : clients_) on = on || c->watch_until > now;
    ctx_.registry.set_watching(on);
  }


 private:
  void taskFailed(kj::Exception&& e) override {
    spdlog::warn("inspector: {}", e.getDescription().cStr());
  }

  kj::Promise<void> tick() {
    return io_.provider->getTimer().afterDelay(1 * kj::SECONDS).then([this] {
      refresh_watching();
      return tick();
    });
  }

  kj::Promise<void> accept() {
    return listener_->accept().then([this](kj::Own<kj::AsyncIoStream> stream) {
      take(kj::mv(stream));
      return accept();
    });
  }

  void take(kj::Own<kj::AsyncIoStream> stream);

  InspectorServer& owner_;
  InspectorContext& ctx_;
  kj::AsyncIoContext io_;

 public:
  // The connections' watches; declared before tasks_, whose connections leave it when destroyed.
  std::set<WatchClient*> clients_;
  kj::Timer& timer() { return io_.provider->getTimer(); }
  InspectorContext& context() { return ctx_; }

 private:
  kj::TaskSet tasks_;
  kj::Own<kj::ConnectionReceiver> listener_;
};

namespace {

void fill(inspector::ActorInfo::Builder b, const ActorMetrics& m, int64_t now, const Statuses& statuses,
          bool watching) {
  b.setId(m.id);
  b.setKind(m.kind);
  b.setName(m.name());
  b.setParent(m.parent);
  b.setState(to_string(m.state()));
  b.setStateForNs(now - m.state_since_ns.load());
  b.setMailbox(m.mailbox_size());
  b.setHandled(m.handled.load());
  b.setHandlingNs(m.handling_ns.load());
  b.setHandlingMaxNs(m.handling_max_ns.load());
  int64_t busy = m.busy_since_ns.load();
  b.setBusyForNs(busy ? now - busy : 0);
  b.setRowsIn(m.rows_in.load());
  b.setRowsOut(m.rows_out.load());
  b.setBytesIn(m.bytes_in.load());
  b.setBytesOut(m.bytes_out.load());
  b.setDropped(m.dropped.load());
  auto [error, at] = m.last_error();
  b.setLastError(error);
  b.setLastErrorNs(at);
  b.setStartNs(m.start_wall_ns);
  b.setDetached(m.detached);
  if (auto it = statuses.find(m.id); it != statuses.end()) b.setStatus(it->second);
  if (watching) {
    auto put = [](auto list, const std::vector<uint64_t>& counts) {
      for (size_t i = 0; i < counts.size(); ++i) list.set(i, counts[i]);
    };
    auto h = m.handling.counts(), mb = m.mailbox.counts();
    put(b.initHandlingHistogram(h.size()), h);
    put(b.initMailboxHistogram(mb.size()), mb);
  }
}

class InspectorImpl final : public Inspector::Server {
 public:
  InspectorImpl(InspectorServer::Loop& loop) : loop_(loop), ctx_(loop.context()) { loop_.clients_.insert(&me_); }
  ~InspectorImpl() {
    loop_.clients_.erase(&me_);
    loop_.refresh_watching();
  }

  kj::Promise<void> hello(HelloContext call) override {
    uint32_t theirs = call.getParams().getVersion();
    if (theirs != inspector::VERSION)
      throw error_text("version mismatch: this agent's inspector speaks version " +
                       std::to_string(inspector::VERSION) + ", the client " + std::to_string(theirs) +
                       "; use the outpostctl that came with this agent");
    auto r = call.getResults();
    r.setVersion(inspector::VERSION);
    r.setPid(static_cast<uint32_t>(::getpid()));
    r.setControl(ctx_.spec.control);
    r.setStartNs(start_ns_);
    r.setAgent(ctx_.agent);
    return kj::READY_NOW;
  }

  kj::Promise<void> actors(ActorsContext call) override {
    auto live = ctx_.registry.live();
    auto statuses = call.getParams().getWithStatus() ? gather(ctx_.sys, live) : kj::Promise<Statuses>(Statuses{});
    return statuses.then([this, call, live = kj::mv(live)](Statuses s) mutable {
      int64_t now = steady_ns();
      bool watching = ctx_.registry.watching();
      auto r = call.getResults();
      r.setNowNs(wall_ns());
      auto list = r.initActors(static_cast<unsigned>(live.size()));
      for (size_t i = 0; i < live.size(); ++i) fill(list[i], *live[i].metrics, now, s, watching);
      auto exits = ctx_.registry.exits();
      auto xs = r.initExits(static_cast<unsigned>(exits.size()));
      for (size_t i = 0; i < exits.size(); ++i) {
        auto& x = exits[i];
        auto b = xs[i];
        b.setId(x.id);
        b.setParent(x.parent);
        b.setKind(x.kind);
        b.setName(x.name);
        b.setReason(x.reason);
        b.setAtNs(x.wall_ns);
        b.setHandled(x.handled);
      }
    });
  }

  kj::Promise<void> warnings(WarningsContext call) override {
    auto list = compute_warnings(ctx_.registry.live(), ctx_.registry.exits(), ctx_.spec.warnings, steady_ns(),
                                 wall_ns());
    auto out = call.getResults().initWarnings(static_cast<unsigned>(list.size()));
    for (size_t i = 0; i < list.size(); ++i) {
      out[i].setKind(list[i].kind);
      out[i].setActor(list[i].actor);
      out[i].setActorName(list[i].actor_name);
      out[i].setEvidence(list[i].evidence);
      out[i].setSinceNs(list[i].since_wall_ns);
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> logs(LogsContext call) override {
    auto p = call.getParams();
    auto r = call.getResults();
    if (!ctx_.logs) return kj::READY_NOW;
    auto [lines, last] = ctx_.logs->since(p.getAfter(), std::min<uint32_t>(p.getMax() ? p.getMax() : 1000, 1000));
    auto out = r.initLines(static_cast<unsigned>(lines.size()));
    for (size_t i = 0; i < lines.size(); ++i) out.set(i, lines[i]);
    r.setLast(last);
    return kj::READY_NOW;
  }

  kj::Promise<void> watch(WatchContext call) override {
    uint32_t seconds = std::min<uint32_t>(call.getParams().getSeconds(), 3600);
    me_.watch_until = steady_ns() + int64_t{seconds} * 1000000000;
    loop_.refresh_watching();
    return kj::READY_NOW;
  }

  kj::Promise<void> trace(TraceContext call) override {
    auto p = call.getParams();
    auto& recorder = ctx_.registry.trace();
    if (recorder.active() && !recorder.ended()) throw error_text("a trace is already being recorded");
    TraceLimits limits;
    for (auto id : p.getActors()) limits.actors.insert(id);
    if (p.getMaxEvents()) limits.max_events = std::min<uint64_t>(p.getMaxEvents(), 1000000);
    if (p.getMaxPerSecond()) limits.max_per_second = p.getMaxPerSecond();
    limits.duration_ns = int64_t{std::clamp<uint32_t>(p.getSeconds(), 1, 600)} * 1000000000;
    recorder.start(limits);
    return wait_trace(call);
  }

  kj::Promise<void> control(ControlContext call) override {
    if (!ctx_.spec.control)
      throw error_text("control refused: this agent's inspector is read-only (inspector.control: true in "
                       "its configuration allows control)");
    auto p = call.getParams();
    std::string target = p.getTarget();
    using A = inspector::Action;
    if (p.getAction() == A::LOG_LEVEL) {
      auto level = spdlog::level::from_str(target);
      if (level == spdlog::level::off && target != "off")
        throw error_text("no log level " + target + " (trace, debug, info, warn, error, critical, off)");
      spdlog::default_logger()->set_level(level);
      spdlog::info("inspector: log level set to {}", target);
      call.getResults().setResult("log level " + target);
      return kj::READY_NOW;
    }
    auto sup = ctx_.supervisor;
    auto action = p.getAction();
    return ask<std::string>(ctx_.sys, [sup, action, target](caf::event_based_actor* self, auto ok, auto fail) {
             auto then = [ok, fail, self](auto&& req) {
               std::move(req).then([ok](std::string& s) { ok(s); },
                                   [fail, self](caf::error& e) { fail(describe(self->system(), e)); });
             };
             if (action == A::SUSPEND) then(self->request(sup, kActorTimeout, suspend_atom::value, target));
             else if (action == A::RESUME) then(self->request(sup, kActorTimeout, resume_atom::value, target));
             else then(self->request(sup, kActorTimeout, restart_atom::value, target));
           })
        .then([call](std::string result) mutable { call.getResults().setResult(result); });
  }

 private:
  kj::Promise<void> wait_trace(TraceContext call) {
    auto& recorder = ctx_.registry.trace();
    if (!recorder.ended())
      return loop_.timer().afterDelay(50 * kj::MILLISECONDS).then([this, call]() mutable { return wait_trace(call); });
    auto result = recorder.take();
    auto r = call.getResults();
    r.setEndedBy(result.ended_by);
    auto out = r.initEvents(static_cast<unsigned>(result.events.size()));
    for (size_t i = 0; i < result.events.size(); ++i) {
      auto& e = result.events[i];
      auto b = out[i];
      b.setActor(e.actor);
      b.setSender(e.sender);
      b.setFlow(e.flow);
      b.setType(e.type);
      b.setEnqueuedNs(e.enqueued_ns);
      b.setStartNs(e.start_ns);
      b.setDurationNs(e.duration_ns);
    }
    return kj::READY_NOW;
  }

  InspectorServer::Loop& loop_;
  InspectorContext& ctx_;
  WatchClient me_;
  const int64_t start_ns_ = wall_ns();
};

}  // namespace

void InspectorServer::Loop::take(kj::Own<kj::AsyncIoStream> stream) {
  // The socket's mode keeps other users out; this also does if its directory is shared.
  struct ucred cred{};
  uint len = sizeof cred;
  stream->getsockopt(SOL_SOCKET, SO_PEERCRED, &cred, &len);
  if (cred.uid != 0 && cred.uid != ::getuid()) {
    spdlog::warn("inspector: refused a connection from uid {} (pid {})", cred.uid, cred.pid);
    return;
  }
  auto network = kj::heap<capnp::TwoPartyVatNetwork>(*stream, capnp::rpc::twoparty::Side::SERVER);
  auto rpc = kj::heap<capnp::RpcSystem<capnp::rpc::twoparty::VatId>>(
      capnp::makeRpcServer(*network, kj::heap<InspectorImpl>(*this)));
  auto done = network->onDisconnect();
  // Attachments are destroyed last first: the RPC system before the network it
  // uses, the network before its stream (a connection still open when the
  // loop ends is torn down in that order).
  tasks_.add(done.attach(kj::mv(stream), kj::mv(network), kj::mv(rpc)));
}

InspectorServer::InspectorServer(InspectorContext context) : context_(std::move(context)) {
  context_.registry.set_slow_ns(static_cast<uint64_t>(context_.spec.warnings.slow_handler.count()) * 1000000);
  auto fd = std::make_shared<kj::AutoCloseFd>(listen_on(context_.spec.socket));
  spdlog::info("inspector: listening on {}{}", context_.spec.socket,
               context_.spec.control ? " (control allowed)" : " (read-only)");
  thread_ = std::thread([this, fd] {
    try {
      Loop loop(*this, kj::mv(*fd));
      loop.run();
    } catch (const kj::Exception& e) {
      spdlog::error("inspector: stopped: {}", e.getDescription().cStr());
    } catch (const std::exception& e) {
      spdlog::error("inspector: stopped: {}", e.what());
    }
  });
}

InspectorServer::~InspectorServer() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    if (stop_) stop_();
  }
  thread_.join();
  ::unlink(context_.spec.socket.c_str());
}

}  // namespace outpost::net
