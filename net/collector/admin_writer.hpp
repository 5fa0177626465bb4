#pragma once
// A thread of its own for work the kj event loop, which serves every agent,
// must not wait on: the collector's reads and writes of its admin state
// (admin_state.hpp: an LMDB write waits for LMDB's writer lock, held by the
// storage thread's short marks commit and its sync, and while the map
// grows; with jetstream each is a NATS round trip), and, on a second one,
// the backend's marks. Jobs run one at a time in submission order; each
// job's result comes back on the loop that submitted it.

#include <kj/async.h>

#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>

#include "net/kj_util.hpp"

namespace outpost::net {

class AdminWriter {
 public:
  AdminWriter() : thread_([this] { loop(); }) {}
  // Runs every job already submitted (their callers may hear nothing: the
  // loop that would resolve them is going away), then joins.
  ~AdminWriter() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }
  AdminWriter(const AdminWriter&) = delete;
  AdminWriter& operator=(const AdminWriter&) = delete;

  // From a thread with a kj event loop: runs `fn` on the writer thread, in
  // submission order. The promise, on the caller's loop, resolves with what
  // `fn` returns, or rejects (FAILED) with the text of what it threw.
  template <typename Fn, typename R = std::invoke_result_t<Fn>>
  kj::Promise<R> run(Fn fn) {
    auto paf = kj::newPromiseAndCrossThreadFulfiller<R>();
    auto done = std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<R>>>(kj::mv(paf.fulfiller));
    auto job = [fn = std::move(fn), done]() mutable {
      try {
        if constexpr (std::is_void_v<R>) {
          fn();
          (*done)->fulfill();
        } else {
          (*done)->fulfill(fn());
        }
      } catch (const kj::Exception& e) {
        (*done)->reject(kj::cp(e));
      } catch (const std::exception& e) {
        (*done)->reject(error_text(e.what()));
      }
    };
    {
      std::lock_guard<std::mutex> lock(mutex_);
      jobs_.push_back(std::move(job));
    }
    wake_.notify_one();
    return kj::mv(paf.promise);
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, and nothing left
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

}  // namespace outpost::net
