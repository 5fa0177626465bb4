#pragma once
// CAF 0.17's work stealing, with workers that sleep until there is work for
// them instead of waking every relaxed-sleep-duration to look for some.
//
// CAF's policy wakes a worker in its relaxed wait only for a job pushed to
// that worker's own queue from outside the workers (a timer, a detached
// actor); a job another worker queues behind the one it runs is found by the
// sleeper's periodic steal. Here the worker that queues such a job pokes a
// sleeping worker, which steals it at once, and the periodic steal is only a
// backstop: two idle workers no longer wake 20 times a second.
//
// Rules (a job "waits behind" another when its worker is busy meanwhile):
// - a worker that queues a job while its queue already holds one, or puts
//   back an actor that has more to do, pokes one sleeping worker (a job it
//   queues onto an empty queue waits for the job it runs: system_config.hpp);
// - a job from outside the workers goes to a sleeping target by a poke of its
//   own; for a target that runs a job or has others queued, it pokes one
//   sleeping worker (a target that only polls finds the job itself);
// - a worker poked once is not poked again until it has woken: two jobs wake
//   two workers;
// - a worker goes to sleep only while its queue and the others' are empty,
//   re-checked after it says it sleeps, so a poke is never missed (both sides
//   publish, then read, with sequentially consistent atomics).
// Each member says on which thread it runs (internal_enqueue and
// resume_job_later: the worker's own, as CAF's exec_later requires). None
// blocks, but for a worker's short wait lock, except `dequeue`, which waits
// for work.

#include <caf/actor_system.hpp>
#include <caf/policy/work_stealing.hpp>
#include <caf/resumable.hpp>
#include <caf/scheduler/coordinator.hpp>

#include <atomic>
#include <mutex>
#include <thread>

namespace outpost {

class SleepingWorkStealing : public caf::policy::work_stealing {
 public:
  using base = caf::policy::work_stealing;

  struct coordinator_data {
    explicit coordinator_data(caf::scheduler::abstract_coordinator*) {}
    std::atomic<size_t> next_worker{0};  // CAF's round robin for jobs from outside
    std::atomic<size_t> asleep{0};       // workers in their relaxed wait
  };

  struct worker_data : base::worker_data {
    explicit worker_data(caf::scheduler::abstract_coordinator* p) : base::worker_data(p) {}
    worker_data(const worker_data& other) : base::worker_data(other) {}
    std::atomic<bool> asleep{false};   // written under waitdata.lock
    std::atomic<bool> running{false};  // in a job (its own thread writes it)
    bool poked = false;                // under waitdata.lock
  };

  // On a worker's thread, around each job it runs.
  template <class Worker>
  void before_resume(Worker* self, caf::resumable*) {
    d(self).running.store(true, std::memory_order_relaxed);
  }
  template <class Worker>
  void after_resume(Worker* self, caf::resumable*) {
    d(self).running.store(false, std::memory_order_relaxed);
  }

  // On a worker's thread, for a job it makes runnable.
  template <class Worker>
  void internal_enqueue(Worker* self, caf::resumable* job) {
    bool behind = !d(self).queue.empty();
    d(self).queue.prepend(job);
    if (behind) poke_one(self);
  }

  // On a worker's thread, for the actor it ran that has more messages.
  template <class Worker>
  void resume_job_later(Worker* self, caf::resumable* job) {
    bool behind = !d(self).queue.empty();
    d(self).queue.append(job);
    if (behind) poke_one(self);
  }

  // On any thread that is not `self`'s.
  template <class Worker>
  void external_enqueue(Worker* self, caf::resumable* job) {
    auto& data = d(self);
    bool behind = !data.queue.empty();
    data.queue.append(job);
    if (mark_poked(data)) {
      data.waitdata.cv.notify_one();
      return;
    }
    if (behind || data.running.load(std::memory_order_relaxed)) poke_one(self);
  }

  // On `self`'s thread: its next job; waits for one as long as it takes.
  template <class Worker>
  caf::resumable* dequeue(Worker* self) {
    auto& data = d(self);
    for (size_t k = 0; k < 2; ++k) {  // CAF's aggressive and moderate polls, as configured
      auto& poll = data.strategies[k];
      for (size_t i = 0; i < poll.attempts; i += poll.step_size) {
        if (auto* job = data.queue.take_head()) return job;
        if (i % poll.steal_interval == 0)
          if (auto* job = steal(self)) return job;
        if (poll.sleep_duration.count() > 0) std::this_thread::sleep_for(poll.sleep_duration);
      }
    }
    auto backstop = data.strategies[2].sleep_duration;
    for (;;) {
      {
        std::unique_lock<std::mutex> guard(data.waitdata.lock);
        data.asleep.store(true);
        ++d(self->parent()).asleep;
        data.waitdata.cv.wait_for(guard, backstop, [&] { return data.poked || any_queued(self); });
        --d(self->parent()).asleep;
        data.poked = false;
        data.asleep.store(false);
      }
      if (auto* job = data.queue.take_head()) return job;
      if (auto* job = steal(self)) return job;
    }
  }

  // On any thread: how many of `sys`'s workers sleep now (0 unless its
  // scheduler is a SleepingScheduler).
  static size_t workers_asleep(caf::actor_system& sys);

 private:
  // Whether any worker's queue holds a job.
  template <class Worker>
  static bool any_queued(Worker* self) {
    auto* parent = self->parent();
    for (size_t i = 0; i < parent->num_workers(); ++i)
      if (!d(parent->worker_by_id(i)).queue.empty()) return true;
    return false;
  }

  // A job from another worker's queue (its oldest), if any has one.
  template <class Worker>
  static caf::resumable* steal(Worker* self) {
    auto* parent = self->parent();
    size_t n = parent->num_workers();
    for (size_t i = 1; i < n; ++i) {
      auto& queue = d(parent->worker_by_id((self->id() + i) % n)).queue;
      if (queue.empty()) continue;  // without taking its locks
      if (auto* job = queue.take_tail()) return job;
    }
    return nullptr;
  }

  // Wakes one sleeping worker other than `busy` that is not woken already, if
  // one sleeps.
  template <class Worker>
  static void poke_one(Worker* busy) {
    auto* parent = busy->parent();
    size_t n = parent->num_workers();
    for (size_t i = 1; i < n; ++i) {
      auto* w = parent->worker_by_id((busy->id() + i) % n);
      auto& data = d(w);
      if (!mark_poked(data)) continue;
      data.waitdata.cv.notify_one();
      return;
    }
  }

  // Whether `data`'s worker sleeps and was not poked yet; if so, it is now
  // (its wait's predicate). The caller then notifies it, after the lock is
  // released here: notified under the lock, the woken worker would block on
  // the lock at once and need a second wake-up when it is released (two
  // context switches and two futex calls instead of one each).
  // A worker that is awake is passed over without its lock.
  static bool mark_poked(worker_data& data) {
    if (!data.asleep.load()) return false;
    std::lock_guard<std::mutex> guard(data.waitdata.lock);
    if (!data.asleep.load() || data.poked) return false;
    data.poked = true;
    return true;
  }
};

using SleepingScheduler = caf::scheduler::coordinator<SleepingWorkStealing>;

inline size_t SleepingWorkStealing::workers_asleep(caf::actor_system& sys) {
  auto* scheduler = dynamic_cast<SleepingScheduler*>(&sys.scheduler());
  return scheduler ? scheduler->data().asleep.load() : 0;
}

}  // namespace outpost
