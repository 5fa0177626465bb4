#pragma once
// Small kj helpers shared by the agent's and the collector's network code.

#include <kj/async-io.h>
#include <kj/timer.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <mutex>
#include <string>

namespace outpost::net {

// An exception whose description is exactly `text` (KJ_EXCEPTION would add
// "name = " before a non-literal); the peer of an RPC call sees it as is.
inline kj::Exception error_text(const std::string& text,
                                kj::Exception::Type type = kj::Exception::Type::FAILED) {
  return kj::Exception(type, __FILE__, __LINE__, kj::heapString(text.c_str(), text.size()));
}

// The peer went away (as opposed to answering with an error).
inline bool disconnected(const kj::Exception& e) { return e.getType() == kj::Exception::Type::DISCONNECTED; }

// kj::setupAsyncIo() without its change to the whole process: kj's event
// port sets SIGPIPE to ignored, a choice that belongs to the program Outpost
// runs in. Instead the calling thread blocks SIGPIPE (a write there to a
// closed socket fails with EPIPE, whatever the process's disposition), and
// the disposition is put back as it was. Call once on each thread of ours
// that runs a kj event loop, at its start. kj 0.9.2 sets SIGPIPE ignored each
// time it makes an event port, so for those microseconds the process sees
// SIG_IGN: the threads' owners (ServerThread, NetClient) wait until their
// loop is made, so that this happens inside Agent::start() only.
inline kj::AsyncIoContext setup_async_io() {
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
  static std::mutex mutex;  // two threads' save and restore must not interleave
  std::lock_guard<std::mutex> lock(mutex);
  struct sigaction before;
  sigaction(SIGPIPE, nullptr, &before);
  auto io = kj::setupAsyncIo();
  sigaction(SIGPIPE, &before, nullptr);
  return io;
}

// `promise`, or a DISCONNECTED error naming `what` once `limit` has passed.
template <typename T>
kj::Promise<T> within(kj::Timer& timer, kj::Promise<T> promise, kj::Duration limit, const char* what) {
  return promise.exclusiveJoin(timer.afterDelay(limit).then([what]() -> T {
    throw error_text(std::string("timed out waiting for ") + what, kj::Exception::Type::DISCONNECTED);
  }));
}

// A peer that vanished without a FIN or RST (power loss, a NAT that forgot
// the flow) is noticed after about a minute of silence instead of never.
inline void keep_alive(kj::AsyncIoStream& stream) {
  int on = 1, idle = 30, interval = 10, count = 3;
  stream.setsockopt(SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  stream.setsockopt(IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  stream.setsockopt(IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  stream.setsockopt(IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
}

}  // namespace outpost::net
