#pragma once
// A server's own thread with a kj event loop, run until its owner stops it:
// what the inspector and the metrics listener share.
//
// Threads: construct and destroy on the owner's thread (the destructor
// stops the loop and joins). `body` runs on the new thread; it makes its
// event loop and calls wait_until_stopped() on it. The constructor returns
// once the loop waits (or `body` ended): kj's event port sets SIGPIPE's
// disposition while it is made (kj_util.hpp), so that is over by then.

#include <kj/async.h>

#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>

namespace outpost::net {

class ServerThread {
 public:
  // What `body` throws ends the thread and is logged as "<name>: stopped: <why>".
  ServerThread(std::string name, std::function<void(ServerThread&)> body);
  ~ServerThread();
  ServerThread(const ServerThread&) = delete;
  ServerThread& operator=(const ServerThread&) = delete;

  // On the thread: runs the loop of `scope` until the owner stops it (at
  // once if it already has).
  void wait_until_stopped(kj::WaitScope& scope);

 private:
  std::string name_;
  std::mutex mutex_;
  std::function<void()> stop_;  // rings the loop (set by it once it waits)
  bool stopping_ = false;
  std::promise<void> started_;   // the loop waits, or the body ended
  bool started_set_ = false;
  void mark_started();           // the first call sets `started_`
  std::thread thread_;
};

}  // namespace outpost::net
