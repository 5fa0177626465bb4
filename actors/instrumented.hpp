#pragma once
// The class every agent actor is spawned as: CAF's stateful actor, counting
// what it handles in its ActorMetrics (actors/metrics.hpp) when its system
// has an ActorRegistry (an AgentSystemConfig). An actor function takes
// `instrumented<Handle, State>` as its self pointer; `spawn` then builds this
// class (CAF infers the class from that parameter).
//
// Per message, with counters on: two clock reads and a few relaxed atomic
// adds, no lock, no allocation. While watched, also a histogram add, and for
// one message in kMailboxSample a stamp at enqueue (a locked map) for the
// mailbox-time histogram; while tracing, a stamp and an event per message.

#include <caf/invoke_message_result.hpp>
#include <caf/local_actor.hpp>
#include <caf/mailbox_element.hpp>
#include <caf/stateful_actor.hpp>
#include <pthread.h>

#include <string>
#include <type_traits>
#include <utility>

#include "actors/log_thread.hpp"
#include "actors/registry.hpp"
#include "actors/status.hpp"

namespace outpost {

// What a handled message was, for a trace: its leading atom (the one after
// internal_atom, marked "(internal)"), or its type.
std::string describe_message(const caf::mailbox_element& x);
// Adds the bytes of the records a message carries (RecordRef, BufferedRecords)
// and, when `payloads`, their JSON lines (registry.cpp).
void describe_records(const caf::mailbox_element& x, bool payloads, uint64_t& bytes, std::string& payload);

// The actor system this thread last handled a message for (a worker or a
// detached actor's thread belongs to one system); null on other threads.
inline thread_local const caf::actor_system* t_handling_system = nullptr;

// A state with `ActorState shown_state() const` is asked after each handled
// message: the actor's state for the inspector follows its own fields.
template <class State, class = void>
struct has_shown_state : std::false_type {};
template <class State>
struct has_shown_state<State, std::void_t<decltype(std::declval<const State&>().shown_state())>>
    : std::true_type {};

// While watched, one message in this many is timed from enqueue to handling.
inline constexpr uint64_t kMailboxSample = 16;

template <class State, class Base>
class instrumented_actor : public caf::stateful_actor<State, Base> {
  using super = caf::stateful_actor<State, Base>;

 public:
  template <class... Ts>
  explicit instrumented_actor(caf::actor_config& cfg, Ts&&... xs)
      : super(cfg, std::forward<Ts>(xs)...), registry_(ActorRegistry::of(this->home_system())),
        detached_((cfg.flags & caf::abstract_actor::is_detached_flag) != 0) {
    if (registry_)
      metrics_ = registry_->enroll(caf::actor_cast<caf::weak_actor_ptr>(this), this->id(), State::name, cfg.parent ? cfg.parent->id() : 0,
                                   detached_);
  }

  // Null when the system keeps no counters.
  ActorMetrics* metrics() const { return metrics_.get(); }

  using super::enqueue;
  void enqueue(caf::mailbox_element_ptr ptr, caf::execution_unit* eu) override {
    if (auto* m = metrics_.get()) {
      uint64_t n = m->enqueued.fetch_add(1, std::memory_order_relaxed) + 1;
      uint64_t size = n - m->handled.load(std::memory_order_relaxed);
      if (size > kBacklogMessages && m->backlog_since_ns.load(std::memory_order_relaxed) == 0)
        m->backlog_since_ns.store(steady_ns(), std::memory_order_relaxed);
      // Traced, every message is stamped; watched, one in kMailboxSample (the
      // mailbox-time histogram is a sample: a stamp takes a lock).
      if (registry_->trace().active() || (registry_->watching() && n % kMailboxSample == 0))
        if (auto* o = m->observed()) o->stamp(ptr.get(), steady_ns(), registry_->next_flow());
    }
    super::enqueue(std::move(ptr), eu);
  }

  // Before the behavior is made: what it logs is the agent's too. A
  // detached actor's thread (its own, which CAF calls "caf.actor") is named
  // after it, "op.<name>", as `top -H` and the footprint benchmark show it.
  void initialize() override {
    enter();
    if (detached_) pthread_setname_np(pthread_self(), ("op." + std::string(State::name)).substr(0, 15).c_str());
    super::initialize();
  }

  caf::invoke_message_result consume(caf::mailbox_element& x) override {
    enter();
    auto* m = metrics_.get();
    if (!m) return super::consume(x);
    Handling h{*this, x, steady_ns(), false, 0, 0, {}};
    // The handler may take the sender (a response promise does) and move the
    // records out of the message: note them first.
    if (auto& trace = registry_->trace(); trace.active() && trace.wants(m->id)) {
      if (x.sender) h.sender = x.sender->id();
      describe_records(x, trace.payloads(), h.bytes, h.payload);
    }
    m->busy_since_ns.store(h.start, std::memory_order_relaxed);
    auto result = super::consume(x);
    h.skipped = result == caf::invoke_message_result::skipped;
    return result;
  }

  bool cleanup(caf::error&& reason, caf::execution_unit* host) override {
    if (metrics_) registry_->exited(metrics_, reason ? readable_error(this->home_system(), reason) : std::string{});
    return super::cleanup(std::move(reason), host);
  }

 private:
  // This thread works for this actor's system now: its log lines are that agent's.
  void enter() {
    t_handling_system = &this->home_system();
    t_log_route = registry_ ? registry_->log_route() : nullptr;
  }

  // Counts one handling when it ends, also when the handler throws.
  struct Handling {
    instrumented_actor& self;
    caf::mailbox_element& x;
    int64_t start;
    bool skipped = false;
    uint64_t sender = 0;  // while tracing
    uint64_t bytes = 0;   // while tracing
    std::string payload;  // while tracing with payloads
    ~Handling() {
      auto& m = *self.metrics_;
      int64_t end = steady_ns();
      uint64_t took = static_cast<uint64_t>(end - start);
      m.busy_since_ns.store(0, std::memory_order_relaxed);
      if (skipped) return;  // it stays in the mailbox and comes again
      if constexpr (has_shown_state<State>::value) m.set_state(self.state.shown_state());
      uint64_t handled = m.handled.fetch_add(1, std::memory_order_relaxed) + 1;
      m.handling_ns.fetch_add(took, std::memory_order_relaxed);
      if (took > m.handling_max_ns.load(std::memory_order_relaxed))
        m.handling_max_ns.store(took, std::memory_order_relaxed);
      if (took > self.registry_->slow_ns()) {
        m.slow_handlings.fetch_add(1, std::memory_order_relaxed);
        m.slow_last_wall_ns.store(wall_ns(), std::memory_order_relaxed);
      }
      if (m.backlog_since_ns.load(std::memory_order_relaxed) != 0 &&
          m.enqueued.load(std::memory_order_relaxed) - handled <= kBacklogMessages / 2)
        m.backlog_since_ns.store(0, std::memory_order_relaxed);
      auto& registry = *self.registry_;
      bool watching = registry.watching(), tracing = registry.trace().active();
      if (!watching && !tracing) return;
      auto* o = m.observed();
      if (!o) return;  // enrolled just as the watch began: from its next message
      int64_t enqueued = 0;
      uint64_t flow = 0;
      bool stamped = o->take_stamp(&x, &enqueued, &flow);
      if (watching) {
        o->handling.add(took);
        if (stamped) o->mailbox.add(static_cast<uint64_t>(start - enqueued));
      }
      if (tracing && registry.trace().wants(m.id))
        registry.trace().record(TraceEvent{m.id, sender, stamped ? flow : 0, describe_message(x),
                                           stamped ? enqueued : 0, start, static_cast<int64_t>(took), bytes,
                                           std::move(payload)});
    }
  };

  ActorRegistry* registry_;
  bool detached_;  // on a thread of its own
  std::shared_ptr<ActorMetrics> metrics_;
};

// The self pointer of an agent actor with this interface and state.
template <class Handle, class State>
using instrumented = instrumented_actor<State, typename Handle::base>*;

}  // namespace outpost
