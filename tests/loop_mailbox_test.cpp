// LoopMailbox: work handed to a kj event loop from other threads, through
// serve()'s wake-up and, on a loop that never waits, run_queued().

#include "net/collector/loop_mailbox.hpp"

#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace outpost::net {
namespace {

struct Errors final : kj::TaskSet::ErrorHandler {
  void taskFailed(kj::Exception&& e) override { ADD_FAILURE() << e.getDescription().cStr(); }
};

// A mailbox served by this thread's own loop.
struct Served {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  Errors errors;
  kj::TaskSet tasks{errors};
  LoopMailbox mailbox;
  Served() { tasks.add(mailbox.serve(tasks)); }
};

TEST(LoopMailbox, RunsAnotherLoopsCallAndAnswersOnThatLoop) {
  LoopMailbox mailbox;
  std::atomic<bool> serving{false}, done{false};
  std::thread::id ran_on;
  std::thread server([&] {
    auto io = kj::setupAsyncIo();
    Errors errors;
    kj::TaskSet tasks(errors);
    tasks.add(mailbox.serve(tasks));
    serving = true;
    // Until the caller has its answer: the loop waits for its wake-ups meanwhile.
    while (!done) io.provider->getTimer().afterDelay(5 * kj::MILLISECONDS).wait(io.waitScope);
  });
  while (!serving) std::this_thread::yield();

  auto io = kj::setupAsyncIo();
  int answer = mailbox
                   .run<int>([&] {
                     ran_on = std::this_thread::get_id();
                     return kj::Promise<int>(42);
                   })
                   .wait(io.waitScope);
  done = true;
  auto server_id = server.get_id();
  server.join();
  EXPECT_EQ(answer, 42);
  EXPECT_EQ(ran_on, server_id);
}

// A loop whose queue never empties never reads its epoll, so serve()'s
// wake-up is never delivered (kj polls I/O only when it has nothing else to
// run); a job posted meanwhile runs only because the busy loop asks for it.
TEST(LoopMailbox, RunQueuedStartsWhatWasPostedOnALoopThatNeverWaits) {
  Served loop;
  auto& io = loop.io;
  auto& tasks = loop.tasks;
  auto& mailbox = loop.mailbox;

  std::atomic<bool> posted{false};
  bool ran = false;
  std::thread poster([&] {
    mailbox.post([&ran] { ran = true; });  // runs on the loop's thread
    posted = true;
  });

  // Busy: each turn queues the next before the loop could wait.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  bool ran_at_once = false;
  std::function<kj::Promise<void>()> turn = [&]() -> kj::Promise<void> {
    bool was_posted = posted;  // read before: the job was queued by then
    mailbox.run_queued(tasks);
    if (was_posted) {
      ran_at_once = ran;
      return kj::READY_NOW;
    }
    if (std::chrono::steady_clock::now() > deadline) return kj::READY_NOW;
    return kj::evalLater(turn);
  };
  kj::evalLater(turn).wait(io.waitScope);
  poster.join();
  EXPECT_TRUE(posted) << "the poster thread did not post within 10 s";
  EXPECT_TRUE(ran_at_once) << "a job queued before run_queued() was not run by it";
}

TEST(LoopMailbox, RunQueuedWithNothingQueuedRunsNothingAndServeStillWakes) {
  Served loop;
  auto& io = loop.io;
  auto& tasks = loop.tasks;
  auto& mailbox = loop.mailbox;
  mailbox.run_queued(tasks);  // nothing queued

  // Jobs taken by run_queued leave serve() a wake-up for nothing; it serves on.
  int ran = 0;
  mailbox.post([&ran] { ++ran; });
  mailbox.run_queued(tasks);
  EXPECT_EQ(ran, 1);
  std::thread poster([&] { mailbox.post([&ran] { ++ran; }); });
  poster.join();
  // Now only serve()'s wake-up can run it: the loop waits for it.
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (ran < 2 && std::chrono::steady_clock::now() < until)
    io.provider->getTimer().afterDelay(1 * kj::MILLISECONDS).wait(io.waitScope);
  EXPECT_EQ(ran, 2);
}

}  // namespace
}  // namespace outpost::net
