#include "net/agent/server_thread.hpp"

#include <spdlog/spdlog.h>

#include "actors/log_thread.hpp"

#include <exception>
#include <memory>

namespace outpost::net {

ServerThread::ServerThread(std::string name, std::function<void(ServerThread&)> body) : name_(std::move(name)) {
  auto started = started_.get_future();
  thread_ = std::thread([this, body = std::move(body), route = t_log_route] {
    ScopedLogRoute log(route);  // its owner's agent's
    try {
      body(*this);
    } catch (const kj::Exception& e) {
      spdlog::error("{}: stopped: {}", name_, e.getDescription().cStr());
    } catch (const std::exception& e) {
      spdlog::error("{}: stopped: {}", name_, e.what());
    }
    mark_started();  // also when it ended before its loop waited
  });
  started.wait();
}

void ServerThread::mark_started() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!started_set_) started_.set_value();
  started_set_ = true;
}

ServerThread::~ServerThread() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    if (stop_) stop_();
  }
  thread_.join();
}

void ServerThread::wait_until_stopped(kj::WaitScope& scope) {
  auto stop = kj::newPromiseAndCrossThreadFulfiller<void>();
  auto fulfiller = std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<void>>>(kj::mv(stop.fulfiller));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    stop_ = [fulfiller] { (*fulfiller)->fulfill(); };
  }
  mark_started();
  stop.promise.wait(scope);
}

}  // namespace outpost::net
