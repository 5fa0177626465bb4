#pragma once
// Work for one kj event loop handed in from other threads: the collector's
// admin thread asks the loop that serves the agents (which alone may touch
// their connections) this way (run), and libnats' threads hand it what the
// relay received (post). Unlike kj::Executor::executeAsync, a caller that
// goes away (its promise dropped, its loop ended) never waits for the
// serving loop: a job still queued then runs and its answer is dropped.
//
// serve() wakes the loop through its epoll, where the wake-up queues behind
// every connection already ready: on a loop that is seconds behind, seconds.
// The loop's busy paths (each upload) therefore call run_queued(), which
// starts what is queued at once and costs one atomic load when nothing is.

#include <kj/async.h>

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>

namespace outpost::net {

class LoopMailbox {
 public:
  // The serving loop: runs the jobs as they arrive, each into `tasks`, for
  // as long as the returned promise lives. Jobs still queued when it is
  // dropped are destroyed unrun with the mailbox (their callers' promises reject).
  kj::Promise<void> serve(kj::TaskSet& tasks) {
    auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (jobs_.empty())
        wake_ = kj::mv(paf.fulfiller);
      else
        paf.fulfiller->fulfill();
    }
    return paf.promise.then([this, &tasks] {
      start_queued(tasks);
      return serve(tasks);
    });
  }

  // The serving loop, from within its events: starts the jobs queued now,
  // each into `tasks`, without waiting for serve()'s wake. Never blocks but
  // on a mutex, and only when jobs are queued.
  void run_queued(kj::TaskSet& tasks) {
    if (queued_.load(std::memory_order_acquire)) start_queued(tasks);
  }

  // From a thread with a kj event loop (not the serving one): runs `fn`, which
  // returns a kj::Promise<R>, on the serving loop. The promise resolves on the
  // caller's loop with its result, or rejects with what it threw or rejected
  // with. Never blocks but on a mutex.
  template <typename R, typename Fn>
  kj::Promise<R> run(Fn fn);

  // From any thread, with or without an event loop: runs `fn` (void, copyable)
  // on the serving loop. Never blocks but on a mutex.
  template <typename Fn>
  void post(Fn fn) {
    push([fn = std::move(fn)]() mutable -> kj::Promise<void> {
      fn();
      return kj::READY_NOW;
    });
  }

 private:
  using Job = std::function<kj::Promise<void>()>;
  void start_queued(kj::TaskSet& tasks) {
    std::deque<Job> got;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      got.swap(jobs_);
      queued_.store(false, std::memory_order_relaxed);
    }
    for (auto& job : got) tasks.add(kj::evalNow([&job] { return job(); }));
  }
  void push(Job job) {
    std::lock_guard<std::mutex> lock(mutex_);
    jobs_.push_back(std::move(job));
    queued_.store(true, std::memory_order_release);
    if (wake_) {
      wake_->fulfill();
      wake_ = nullptr;
    }
  }
  std::mutex mutex_;
  std::deque<Job> jobs_;
  std::atomic<bool> queued_{false};  // jobs_ is not empty (read without the mutex)
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> wake_;  // the serving loop, waiting for jobs
};

template <typename R, typename Fn>
kj::Promise<R> LoopMailbox::run(Fn fn) {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<R>();
  auto done = std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<R>>>(kj::mv(paf.fulfiller));
  Job job = [fn = std::move(fn), done]() mutable -> kj::Promise<void> {
    return kj::evalNow([&fn] { return fn(); })
        .then([done](R result) { (*done)->fulfill(kj::mv(result)); },
              [done](kj::Exception&& e) { (*done)->reject(kj::mv(e)); });
  };
  push(std::move(job));
  return kj::mv(paf.promise);
}

}  // namespace outpost::net
