// SleepingWorkStealing (actors/scheduler_policy.hpp) with two workers (four
// in one test) and its backstop steal two minutes away: within these tests'
// deadlines (10-30 s) only the pokes and the wake-ups of the policy find
// work, so a missed one shows as a job that does not run in time.

#include <gtest/gtest.h>

#include <caf/all.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <vector>

#include "actors/system_config.hpp"

namespace outpost {
namespace {

using namespace std::chrono_literals;

struct SchedulerPolicy : ::testing::Test {
  SchedulerPolicy() { start(2); }

  void start(size_t n) {
    sys.reset();
    cfg = std::make_unique<caf::actor_system_config>();
    configure_scheduler(*cfg);
    cfg->set("scheduler.max-threads", n);
    cfg->set("work-stealing.relaxed-sleep-duration", caf::timespan{std::chrono::minutes(2)});
    sys = std::make_unique<caf::actor_system>(*cfg);
    workers = n;
  }

  // Waits until every worker sleeps; false if they have not within 30 s.
  bool all_asleep() {
    for (auto deadline = std::chrono::steady_clock::now() + 30s;
         SleepingWorkStealing::workers_asleep(*sys) < workers;) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(1ms);
    }
    return true;
  }

  // What the actors count, declared before the system so that it outlives
  // every actor, whatever a failed test leaves queued.
  std::atomic<int> ran{0};
  std::promise<void> all;   // fulfilled when `ran` reaches the count asked
  std::future<void> done;   // all's
  std::atomic<int> started{0}, together{0};  // jobs that wait for others

  // What `busy` answers to get, or -1 after 60 s.
  int ask(const caf::actor& busy) {
    caf::scoped_actor self{*sys};
    int answer = -1;
    self->request(busy, std::chrono::seconds(60), caf::get_atom::value)
        .receive([&](int n) { answer = n; }, [&](caf::error& e) { ADD_FAILURE() << sys->render(e); });
    return answer;
  }

  // Counts from 0 again, to `n`.
  void count_to(int n) {
    ran = 0;
    target = n;
    all = std::promise<void>();
    done = all.get_future();
  }

  // An actor that counts the ints it gets.
  caf::actor counter() {
    return sys->spawn([this](caf::event_based_actor*) -> caf::behavior {
      return {[this](int) {
        if (++ran == target) all.set_value();
      }};
    });
  }

  int target = 0;
  size_t workers = 0;
  std::unique_ptr<caf::actor_system_config> cfg;
  std::unique_ptr<caf::actor_system> sys;
};

TEST_F(SchedulerPolicy, JobsQueuedBehindABusyWorkerRunOnTheSleepingOneMeanwhile) {
  count_to(2);
  auto first = counter();
  auto second = counter();
  // Keeps its worker until the two have run (or 30 s): they can run only on
  // the other worker, which sleeps until poked.
  auto busy = sys->spawn([=](caf::event_based_actor* self) -> caf::behavior {
    return {[=](caf::get_atom) {
      self->send(first, 1);
      self->send(second, 1);  // queued behind the first: the sleeping worker is poked
      done.wait_for(30s);
      return ran.load();  // how many ran while this worker was busy
    }};
  });
  ASSERT_TRUE(all_asleep()) << SleepingWorkStealing::workers_asleep(*sys) << " of 2 workers asleep after 30 s";
  EXPECT_EQ(ask(busy), 2) << "jobs that ran while their worker was busy (of 2, within 30 s)";
  EXPECT_TRUE(all_asleep()) << "the workers did not go back to sleep";
}

// Four workers, one held by a handler that queues three jobs behind the one
// it runs. Each job waits until two have started (at most 30 s): only two
// workers woken by the two pokes can start two at once (a third, queued onto
// the empty queue, pokes nobody), so a poke that went to a worker already
// poked shows as a job that waits alone.
TEST_F(SchedulerPolicy, EachJobQueuedBehindABusyWorkerWakesASleeperOfItsOwn) {
  start(4);
  auto job = [&] {
    return sys->spawn([this](caf::event_based_actor*) -> caf::behavior {
      return {[this](int) {
        ++started;
        for (auto deadline = std::chrono::steady_clock::now() + 30s;
             started.load() < 2 && std::chrono::steady_clock::now() < deadline;)
          std::this_thread::sleep_for(1ms);
        if (started.load() >= 2) ++together;
      }};
    });
  };
  auto first = job(), second = job(), third = job();
  auto busy = sys->spawn([=](caf::event_based_actor* self) -> caf::behavior {
    return {[=](caf::get_atom) {
      self->send(first, 1);
      self->send(second, 1);  // pokes a sleeper
      self->send(third, 1);   // pokes another one
      for (auto deadline = std::chrono::steady_clock::now() + 30s;
           together.load() < 2 && std::chrono::steady_clock::now() < deadline;)
        std::this_thread::sleep_for(1ms);
      return together.load();
    }};
  });
  ASSERT_TRUE(all_asleep()) << SleepingWorkStealing::workers_asleep(*sys) << " of 4 workers asleep after 30 s";
  EXPECT_GE(ask(busy), 2) << "jobs that ran side by side while their worker was busy (2 wanted, within 30 s)";
  // Wait for every job to end before its counters go.
  for (auto deadline = std::chrono::steady_clock::now() + 60s; started.load() < 3;) {
    ASSERT_TRUE(std::chrono::steady_clock::now() < deadline) << started << " of 3 jobs started";
    std::this_thread::sleep_for(1ms);
  }
}

// Jobs from outside, one at a time, while one worker is held by a handler and
// the other sleeps: those CAF hands to the held worker's queue run on the
// sleeping one (poked), not after the handler.
TEST_F(SchedulerPolicy, JobsFromOutsideForABusyWorkerRunOnTheSleepingOne) {
  constexpr int kJobs = 10;
  count_to(kJobs);
  std::vector<caf::actor> jobs;
  for (int i = 0; i < kJobs; ++i) jobs.push_back(counter());
  auto holding = std::make_shared<std::promise<void>>();
  auto held = holding->get_future();
  auto busy = sys->spawn([this, holding](caf::event_based_actor*) -> caf::behavior {
    return {[=](caf::get_atom) {
      holding->set_value();
      done.wait_for(30s);
      return ran.load();  // how many ran while this worker was held
    }};
  });
  ASSERT_TRUE(all_asleep());
  caf::scoped_actor self{*sys};
  auto answer = self->request(busy, std::chrono::seconds(60), caf::get_atom::value);
  ASSERT_EQ(held.wait_for(30s), std::future_status::ready);
  for (int i = 0; i < kJobs; ++i) {
    // CAF takes turns between the workers' queues for jobs from outside.
    for (auto deadline = std::chrono::steady_clock::now() + 30s; SleepingWorkStealing::workers_asleep(*sys) < 1;) {
      ASSERT_TRUE(std::chrono::steady_clock::now() < deadline) << "job " << i << ": the free worker did not sleep";
      std::this_thread::yield();
    }
    caf::anon_send(jobs[i], 1);
    for (auto deadline = std::chrono::steady_clock::now() + 10s; ran.load() <= i;) {
      ASSERT_TRUE(std::chrono::steady_clock::now() < deadline) << "job " << i << " did not run in 10 s";
      std::this_thread::yield();
    }
  }
  answer.receive([&](int n) { EXPECT_EQ(n, kJobs); }, [&](caf::error& e) { FAIL() << sys->render(e); });
}

// Bursts of messages from threads outside the workers, each forwarded along
// a chain of actors on the workers: every burst is handled in full, then
// both workers sleep again, 100 times over.
TEST_F(SchedulerPolicy, EveryBurstFromOutsideIsHandledAndTheWorkersSleepAfterIt) {
  constexpr int kActors = 16, kThreads = 2, kPerThread = 200, kHops = 3;
  std::vector<caf::actor> sinks;
  for (int i = 0; i < kActors; ++i) sinks.push_back(counter());
  // Each forwards what it gets, less one hop, to the next; the last hop to a sink.
  auto chains = std::make_shared<std::vector<caf::actor>>();
  struct EndChains {  // each holds the others: a cycle that would keep them alive
    std::vector<caf::actor>& actors;
    ~EndChains() {
      for (auto& a : actors) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    }
  } end_chains{*chains};
  for (int i = 0; i < kActors; ++i)
    chains->push_back(sys->spawn([=](caf::event_based_actor* self) -> caf::behavior {
      return {[=](int hops) {
        if (hops == 0)
          self->send(sinks[i], 0);
        else
          self->send((*chains)[(i + 1) % kActors], hops - 1);
      }};
    }));
  for (int round = 0; round < 100; ++round) {
    ASSERT_TRUE(all_asleep()) << "round " << round;
    count_to(kThreads * kPerThread);
    std::vector<std::thread> senders;
    for (int t = 0; t < kThreads; ++t)
      senders.emplace_back([&, t] {
        for (int k = 0; k < kPerThread; ++k) caf::anon_send((*chains)[(t * kPerThread + k) % kActors], kHops);
      });
    for (auto& s : senders) s.join();
    ASSERT_EQ(done.wait_for(30s), std::future_status::ready)
        << "round " << round << ": " << ran << " of " << kThreads * kPerThread << " handled after 30 s";
  }
}

// One message at a time from outside, each sent a little after the last one
// was handled, so that most arrive while the workers are falling asleep: each
// is handled (a wake-up lost in that window would leave it queued for the
// hour of the backstop).
TEST_F(SchedulerPolicy, AMessageSentWhileTheWorkersFallAsleepIsHandled) {
  count_to(-1);  // never reached
  auto sink = counter();
  auto hop = sys->spawn([sink](caf::event_based_actor* self) -> caf::behavior {
    return {[=](int n) { self->send(sink, n); }};
  });
  for (int i = 1; i <= 20000; ++i) {
    caf::anon_send(hop, i);
    for (auto deadline = std::chrono::steady_clock::now() + 10s; ran.load() < i;) {
      ASSERT_TRUE(std::chrono::steady_clock::now() < deadline) << "message " << i << " not handled in 10 s";
      std::this_thread::yield();
    }
    // 0-63 us more: the workers are at different points of falling asleep.
    for (auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(i % 64);
         std::chrono::steady_clock::now() < until;) {
    }
  }
}

}  // namespace
}  // namespace outpost
