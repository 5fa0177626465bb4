// The counters every actor keeps (actors/instrumented.hpp), the warnings
// computed from them, histograms while watched, and traces that stop by
// themselves.

#include <gtest/gtest.h>

#include <caf/all.hpp>
#include <pthread.h>

#include <numeric>
#include <set>
#include <string>
#include <thread>

#include "actors/instrumented.hpp"
#include "actors/system_config.hpp"
#include "actors/waker.hpp"
#include "actors/warnings.hpp"
#include "tests/actor_test_util.hpp"

namespace outpost {
namespace {
using namespace outpost::testing;

struct probe_state {
  static inline const char* name = "probe";
  uint64_t seen = 0;
  ActorState shown_state() const { return seen % 2 ? ActorState::sleeping : ActorState::running; }
};
using Probe = instrumented_actor<probe_state, caf::event_based_actor>;

// Answers each int with the count so far; sleeps for the ms given as a double.
caf::behavior probe(Probe* self) {
  return {
      [=](int) { return ++self->state.seen; },
      [=](double ms) {
        std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(ms));
        return ++self->state.seen;
      },
      [=](bool) {  // the name of the thread it runs on
        char name[16] = {};
        pthread_getname_np(pthread_self(), name, sizeof name);
        return std::string(name);
      },
  };
}

struct MetricsTest : ::testing::Test {
  AgentSystemConfig cfg;
  std::unique_ptr<caf::actor_system> sys;
  ActorRegistry& registry = *cfg.registry;
  MetricsTest() { sys = std::make_unique<caf::actor_system>(configure_scheduler(cfg)); }

  std::shared_ptr<ActorMetrics> metrics_of(const caf::actor& a) {
    for (auto& e : registry.live())
      if (e.metrics->id == a.id()) return e.metrics;
    return nullptr;
  }
  std::vector<Warning> warnings(const WarningThresholds& t) {
    return compute_warnings(registry.live(), registry.exits(), t, steady_ns(), wall_ns());
  }
  static bool has(const std::vector<Warning>& ws, const std::string& kind) {
    for (auto& w : ws)
      if (w.kind == kind) return true;
    return false;
  }
};

TEST_F(MetricsTest, EveryHandledMessageIsCountedAndTheStateFollowsTheActor) {
  auto a = sys->spawn(probe);
  auto m = metrics_of(a);
  ASSERT_NE(m, nullptr);
  EXPECT_STREQ(m->kind, "probe");
  EXPECT_EQ(m->parent, 0u);
  EXPECT_FALSE(m->detached);
  caf::scoped_actor self{*sys};
  for (int i = 0; i < 101; ++i) self->request(a, caf::infinite, i).receive([](uint64_t) {}, [](caf::error&) {});
  // The answer leaves before the count is taken: wait for it.
  ASSERT_TRUE(eventually([&] { return m->handled.load() == 101; }));
  EXPECT_EQ(m->enqueued.load(), 101u);
  EXPECT_EQ(m->mailbox_size(), 0u);
  EXPECT_GT(m->handling_ns.load(), 0u);
  EXPECT_GE(m->handling_ns.load(), m->handling_max_ns.load());
  EXPECT_EQ(m->state(), ActorState::sleeping);  // 101 seen: odd
  self->send_exit(a, caf::exit_reason::user_shutdown);
  ASSERT_TRUE(eventually([&] { return registry.exits().size() == 1; }));
  auto exit = registry.exits().front();
  EXPECT_EQ(exit.id, a.id());
  EXPECT_EQ(exit.handled, 102u);  // the exit message too
  EXPECT_FALSE(exit.reason.empty());  // user_shutdown is an exit reason
  EXPECT_EQ(metrics_of(a), nullptr);
}

TEST_F(MetricsTest, ASlowHandlerABusyOneAndABacklogAreWarnedAboutAndTheBacklogClears) {
  WarningThresholds t;
  t.slow_handler = std::chrono::milliseconds(20);
  t.mailbox_backlog = std::chrono::milliseconds(50);
  registry.set_slow_ns(20'000'000);
  auto a = sys->spawn(probe);
  auto m = metrics_of(a);
  EXPECT_FALSE(has(warnings(t), "slow-handler"));
  caf::anon_send(a, 1000.0);  // one second in its handler
  for (int i = 0; i < 1500; ++i) caf::anon_send(a, i);
  ASSERT_TRUE(eventually([&] { return has(warnings(t), "busy-handler"); }));
  ASSERT_TRUE(eventually([&] { return has(warnings(t), "mailbox-backlog"); }));
  ASSERT_TRUE(eventually([&] { return m->handled.load() == 1501; }));
  auto ws = warnings(t);
  EXPECT_TRUE(has(ws, "slow-handler"));
  EXPECT_FALSE(has(ws, "mailbox-backlog"));
  EXPECT_FALSE(has(ws, "busy-handler"));
  EXPECT_EQ(m->slow_handlings.load(), 1u);
  // Once the last slow handling is older than `recent`, it is history, not a warning.
  t.recent = std::chrono::milliseconds(300);
  ASSERT_TRUE(eventually([&] { return !has(warnings(t), "slow-handler"); }));
  EXPECT_EQ(m->slow_handlings.load(), 1u);  // still counted
}

TEST_F(MetricsTest, ADetachedActorsLongHandlerIsNotAWarning) {
  WarningThresholds t;
  t.slow_handler = std::chrono::milliseconds(5);
  registry.set_slow_ns(5'000'000);
  auto a = sys->spawn<caf::detached>(probe);
  auto m = metrics_of(a);
  ASSERT_TRUE(m->detached);
  caf::anon_send(a, 30.0);
  ASSERT_TRUE(eventually([&] { return m->handled.load() == 1; }));
  EXPECT_EQ(m->slow_handlings.load(), 1u);  // counted, shown, but it blocks nobody else
  EXPECT_FALSE(has(warnings(t), "slow-handler"));
}

// A detached actor's thread is its own and named after it, as `top -H` shows
// it; a worker's keeps CAF's name (it runs every scheduled actor in turn).
TEST_F(MetricsTest, ADetachedActorsThreadIsNamedAfterIt) {
  caf::scoped_actor self{*sys};
  auto thread_of = [&](const caf::actor& a) {
    std::string name = "(no answer)";
    self->request(a, std::chrono::seconds(60), true)
        .receive([&](const std::string& n) { name = n; }, [&](caf::error& e) { name = sys->render(e); });
    return name;
  };
  EXPECT_EQ(thread_of(sys->spawn<caf::detached>(probe)), "op.probe");
  EXPECT_EQ(thread_of(sys->spawn(probe)), "caf.multiplexer");
}

TEST_F(MetricsTest, HistogramsFillOnlyWhileWatched) {
  auto a = sys->spawn(probe);
  auto m = metrics_of(a);
  auto total = [&](Histogram Observed::*which) {
    auto* o = m->observed();
    if (!o) return uint64_t{0};
    auto c = (o->*which).counts();
    return std::accumulate(c.begin(), c.end(), uint64_t{0});
  };
  caf::scoped_actor self{*sys};
  auto ask = [&](int n) {
    for (int i = 0; i < n; ++i) self->request(a, caf::infinite, i).receive([](uint64_t) {}, [](caf::error&) {});
  };
  ask(10);
  ASSERT_TRUE(eventually([&] { return m->handled.load() == 10; }));
  EXPECT_EQ(m->observed(), nullptr);  // nothing kept for histograms until someone watches
  registry.set_watching(true);
  ask(64);
  ASSERT_TRUE(eventually([&] { return total(&Observed::handling) == 64; }));
  // Messages 11..74: one in 16 is timed in the mailbox (the 16th, 32nd, 48th, 64th).
  EXPECT_EQ(total(&Observed::mailbox), 4u);
  registry.set_watching(false);
  ask(5);
  ASSERT_TRUE(eventually([&] { return m->handled.load() == 79; }));
  EXPECT_EQ(total(&Observed::handling), 64u);
}

TEST_F(MetricsTest, CountersOffLeaveActorsUncounted) {
  AgentSystemConfig off{false};
  caf::actor_system other{configure_scheduler(off)};
  auto a = other.spawn(probe);
  caf::scoped_actor self{other};
  uint64_t got = 0;
  self->request(a, caf::infinite, 1).receive([&](uint64_t n) { got = n; }, [](caf::error&) {});
  EXPECT_EQ(got, 1u);
  EXPECT_TRUE(off.registry->live().empty());
}

// The waker's timer is an internal message: a trace names it by its own atom.
TEST_F(MetricsTest, ATracedInternalMessageIsNamedByWhatItIs) {
  waker_actor wake = sys->spawn(waker);
  registry.start_trace(TraceLimits{});
  caf::scoped_actor self{*sys};
  self->send(wake, sleep_atom::value, caf::timespan{std::chrono::milliseconds(1)});
  bool woken = false;
  self->receive([&](pull_atom) { woken = true; },
                caf::after(std::chrono::seconds(10)) >> [] {});
  ASSERT_TRUE(woken) << "the waker's timer never fired";
  // Answered after the wake's handling, and so after its trace event.
  self->request(wake, std::chrono::seconds(10), status_atom::value).receive([](caf::settings&) {}, [](caf::error&) {});
  std::set<std::string> types;
  for (auto& e : registry.trace().take().events) types.insert(e.type);
  EXPECT_EQ(types.count("wake (internal)"), 1u) << ::testing::PrintToString(types);
  EXPECT_EQ(types.count("internal"), 0u);
  self->send_exit(wake, caf::exit_reason::user_shutdown);
}

TEST(TraceRecorder, StopsByItselfAtItsCountItsRateAndItsDeadline) {
  auto event = [](int64_t at) { return TraceEvent{1, 0, 0, "x", 0, at, 1, 0, {}}; };
  TraceRecorder r;
  TraceLimits l;
  l.max_events = 3;
  r.start(l);
  int64_t now = steady_ns();
  for (int i = 0; i < 5; ++i) r.record(event(now + i));
  EXPECT_TRUE(r.ended());
  auto got = r.take();
  EXPECT_EQ(got.events.size(), 3u);
  EXPECT_EQ(got.ended_by, "count");

  l.max_events = 1000;
  l.max_per_second = 10;
  r.start(l);
  now = steady_ns();
  for (int i = 0; i < 20; ++i) r.record(event(now + i));
  got = r.take();
  EXPECT_EQ(got.events.size(), 10u);
  EXPECT_EQ(got.ended_by, "rate");

  l.duration_ns = 1'000'000;
  r.start(l);
  now = steady_ns();
  r.record(event(now));
  r.record(event(now + 2'000'000));
  got = r.take();
  EXPECT_EQ(got.events.size(), 1u);
  EXPECT_EQ(got.ended_by, "deadline");

  l.actors = {2};
  r.start(l);
  EXPECT_FALSE(r.wants(1));
  EXPECT_TRUE(r.wants(2));
  EXPECT_EQ(r.take().ended_by, "taken");
  EXPECT_FALSE(r.active());
}

}  // namespace
}  // namespace outpost
