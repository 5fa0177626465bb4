#include "net/collector/socket_stream.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <kj/debug.h>

#include <algorithm>
#include <cerrno>

namespace outpost::net {

kj::Own<SocketStream> SocketStream::take(kj::UnixEventPort& port, kj::Own<kj::AsyncIoStream> stream) {
  int fd = -1;
  KJ_IF_MAYBE(original, stream->getFd()) {
    KJ_SYSCALL(fd = ::fcntl(*original, F_DUPFD_CLOEXEC, 0));
  } else {
    KJ_FAIL_REQUIRE("an agent's stream without a socket");
  }
  kj::AutoCloseFd owned(fd);
  stream = nullptr;  // kj stops watching the original (its observer leaves epoll), then closes it
  return kj::heap<SocketStream>(port, kj::mv(owned));
}

SocketStream::SocketStream(kj::UnixEventPort& port, kj::AutoCloseFd fd)
    : fd_(kj::mv(fd)), observer_(port, fd_.get(), kj::UnixEventPort::FdObserver::OBSERVE_READ_WRITE) {}

void SocketStream::read_now() {
  if (read_now_.get() != nullptr && read_now_->isWaiting()) read_now_->fulfill();
}

kj::Promise<size_t> SocketStream::tryRead(void* buffer, size_t minBytes, size_t maxBytes) {
  return kj::evalNow([&] { return read_from(static_cast<kj::byte*>(buffer), minBytes, maxBytes, 0); });
}

kj::Promise<size_t> SocketStream::read_from(kj::byte* buffer, size_t min, size_t max, size_t done) {
  while (done < max) {
    ssize_t n = ::read(fd_.get(), buffer + done, max - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
      if (done >= min) return done;
    } else if (n == 0) {
      return done;  // the peer ended its side
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      // Only here, after this read found nothing: edge-triggered readiness
      // then reports the next bytes (kj's FdObserver contract).
      auto asked = kj::newPromiseAndFulfiller<void>();
      read_now_ = kj::mv(asked.fulfiller);
      return observer_.whenBecomesReadable()
          .exclusiveJoin(kj::mv(asked.promise))
          .then([this, buffer, min, max, done] { return read_from(buffer, min, max, done); });
    } else if (errno != EINTR) {
      KJ_FAIL_SYSCALL("read()", errno);
    }
  }
  return done;
}

kj::Promise<void> SocketStream::write(const void* buffer, size_t size) {
  return kj::evalNow([&] { return write_rest(kj::arrayPtr(static_cast<const kj::byte*>(buffer), size), nullptr); });
}

kj::Promise<void> SocketStream::write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  return kj::evalNow([&] { return write_rest(nullptr, pieces); });
}

// Writes `first`, then `more` (the caller keeps both valid until done).
kj::Promise<void> SocketStream::write_rest(kj::ArrayPtr<const kj::byte> first,
                                           kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> more) {
  for (;;) {
    while (first.size() == 0 && more.size() > 0) {
      first = more[0];
      more = more.slice(1, more.size());
    }
    if (first.size() == 0) return kj::READY_NOW;
    struct iovec iov[16];
    size_t count = 0;
    iov[count++] = {const_cast<kj::byte*>(first.begin()), first.size()};
    for (size_t i = 0; i < more.size() && count < kj::size(iov); ++i)
      if (more[i].size() > 0) iov[count++] = {const_cast<kj::byte*>(more[i].begin()), more[i].size()};
    struct msghdr msg = {};
    msg.msg_iov = iov;
    msg.msg_iovlen = count;
    ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      KJ_FAIL_SYSCALL("sendmsg()", errno);
    }
    size_t sent = static_cast<size_t>(n);
    while (sent > 0) {
      size_t take = std::min(sent, first.size());
      first = first.slice(take, first.size());
      sent -= take;
      if (first.size() == 0 && more.size() > 0) {
        first = more[0];
        more = more.slice(1, more.size());
      }
    }
  }
  return observer_.whenBecomesWritable().then([this, first, more] { return write_rest(first, more); });
}

kj::Promise<void> SocketStream::whenWriteDisconnected() {
  if (write_disconnected_ == nullptr) write_disconnected_ = observer_.whenWriteDisconnected().fork();
  KJ_IF_MAYBE(forked, write_disconnected_) { return forked->addBranch(); }
  KJ_UNREACHABLE;
}

void SocketStream::shutdownWrite() {
  KJ_SYSCALL(::shutdown(fd_.get(), SHUT_WR));
}

void SocketStream::abortRead() {
  KJ_SYSCALL(::shutdown(fd_.get(), SHUT_RD));
}

void SocketStream::getsockopt(int level, int option, void* value, kj::uint* length) {
  socklen_t len = *length;
  KJ_SYSCALL(::getsockopt(fd_.get(), level, option, value, &len));
  *length = len;
}

void SocketStream::setsockopt(int level, int option, const void* value, kj::uint length) {
  KJ_SYSCALL(::setsockopt(fd_.get(), level, option, value, length));
}

void SocketStream::getsockname(struct sockaddr* addr, kj::uint* length) {
  socklen_t len = *length;
  KJ_SYSCALL(::getsockname(fd_.get(), addr, &len));
  *length = len;
}

void SocketStream::getpeername(struct sockaddr* addr, kj::uint* length) {
  socklen_t len = *length;
  KJ_SYSCALL(::getpeername(fd_.get(), addr, &len));
  *length = len;
}

}  // namespace outpost::net
