#include "actors/log_route.hpp"
#include "net/agent/inspector_service.hpp"

#include <caf/event_based_actor.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <map>

#include "actors/control.hpp"
#include "actors/status.hpp"
#include "actors/warnings.hpp"
#include "net/kj_util.hpp"

namespace outpost::net {
namespace {

using inspector::Inspector;

// How long an actor may take to answer the inspector.
constexpr auto kActorTimeout = std::chrono::seconds(3);

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

using StatusJson = std::map<uint64_t, std::string>;  // actor id -> status JSON

// Every actor's own status as JSON; those that do not answer in time have none.
kj::Promise<StatusJson> gather(caf::actor_system& sys, std::vector<ActorRegistry::Entry> live) {
  return statuses_of(sys, std::move(live)).then([](Statuses statuses) {
    StatusJson json;
    for (auto& [id, s] : statuses) json[id] = settings_json(s);
    return json;
  });
}

void fill(inspector::ActorInfo::Builder b, const ActorMetrics& m, int64_t now, const StatusJson& statuses,
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
  if (auto* o = m.observed(); watching && o) {
    auto put = [](auto list, const std::vector<uint64_t>& counts) {
      for (size_t i = 0; i < counts.size(); ++i) list.set(i, counts[i]);
    };
    auto h = o->handling.counts(), mb = o->mailbox.counts();
    put(b.initHandlingHistogram(h.size()), h);
    put(b.initMailboxHistogram(mb.size()), mb);
  }
}

class InspectorImpl final : public Inspector::Server {
 public:
  InspectorImpl(const InspectorContext& context, kj::Timer& timer) : ctx_(context), timer_(timer) {}
  ~InspectorImpl() { unwatch(); }

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
    r.setStartNs(ctx_.registry.started_wall_ns);
    r.setAgent(ctx_.agent);
    return kj::READY_NOW;
  }

  kj::Promise<void> actors(ActorsContext call) override {
    auto live = ctx_.registry.live();
    auto statuses = call.getParams().getWithStatus() ? gather(ctx_.sys, live) : kj::Promise<StatusJson>(StatusJson{});
    return statuses.then([this, call, live = kj::mv(live)](StatusJson s) mutable {
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

  // Histograms stay on until the last watch of every connection has expired
  // or its connection has gone; a new watch replaces this connection's last.
  kj::Promise<void> watch(WatchContext call) override {
    uint32_t seconds = std::min<uint32_t>(call.getParams().getSeconds(), 3600);
    if (!watching_) ctx_.registry.add_watcher();
    watching_ = true;
    expiry_ = timer_.afterDelay(seconds * kj::SECONDS).then([this] { unwatch(); }).eagerlyEvaluate(nullptr);
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
    limits.payloads = p.getPayloads();
    ctx_.registry.start_trace(limits);
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
      if (auto* route = ctx_.registry.log_route())
        route->set_level(level);  // this agent's lines
      else
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
                                   [fail, self](caf::error& e) { fail(readable_error(self->system(), e)); });
             };
             // Cancel and compact take as long as their work (a purge, a copy of the file).
             if (action == A::SUSPEND) then(self->request(sup, kActorTimeout, suspend_atom::value, target));
             else if (action == A::RESUME) then(self->request(sup, kActorTimeout, resume_atom::value, target));
             else if (action == A::RESTART) then(self->request(sup, kActorTimeout, restart_atom::value, target));
             else if (action == A::CANCEL) then(self->request(sup, caf::infinite, cancel_atom::value, target));
             else if (action == A::RECONNECT) then(self->request(sup, kActorTimeout, reconnect_atom::value));
             else then(self->request(sup, caf::infinite, compact_atom::value));
           })
        .then([call](std::string result) mutable { call.getResults().setResult(result); });
  }

 private:
  kj::Promise<void> wait_trace(TraceContext call) {
    auto& recorder = ctx_.registry.trace();
    if (!recorder.ended())
      return timer_.afterDelay(50 * kj::MILLISECONDS).then([this, call]() mutable { return wait_trace(call); });
    auto result = ctx_.registry.take_trace();
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
      b.setBytes(e.bytes);
      if (!e.payload.empty()) b.setPayload(e.payload);
    }
    return kj::READY_NOW;
  }

  void unwatch() {
    if (watching_) ctx_.registry.remove_watcher();
    watching_ = false;
  }

  const InspectorContext ctx_;
  kj::Timer& timer_;
  bool watching_ = false;
  kj::Promise<void> expiry_ = nullptr;
};

}  // namespace

kj::Promise<Statuses> statuses_of(caf::actor_system& sys, std::vector<ActorRegistry::Entry> actors) {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<Statuses>();
  auto f = std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<Statuses>>>(kj::mv(paf.fulfiller));
  ask_statuses(sys, std::move(actors), kActorTimeout, [f](Statuses s) { (*f)->fulfill(kj::mv(s)); });
  return kj::mv(paf.promise);
}

kj::Own<inspector::Inspector::Server> make_inspector_service(const InspectorContext& context, kj::Timer& timer) {
  return kj::heap<InspectorImpl>(context, timer);
}

}  // namespace outpost::net
