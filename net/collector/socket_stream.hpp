#pragma once
// An agent's TCP socket, read and written by the collector itself rather than
// by kj's stream, so that a read waiting for the socket can be tried again at
// once (read_now).
//
// Why: kj's loop learns that a socket is readable from epoll, which reports
// ready sockets in the order they became ready, sixteen at a time. On a loop
// that is seconds behind, an agent's answer to an admin command would wait
// for every connection ready before it. kj's own stream cannot be asked to
// read early: cancelling its pending read may drop bytes it already took.
// Here the only read() is in one continuation, after either the socket's
// readiness or read_now(), whichever comes first; nothing is read twice or
// dropped.
//
// Loop thread only (the loop whose UnixEventPort watches the socket).

#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <kj/io.h>

namespace outpost::net {

class SocketStream final : public kj::AsyncIoStream {
 public:
  // Takes over `stream`'s socket (a duplicate of its descriptor; `stream`
  // is destroyed, which stops kj watching the original). Throws if `stream`
  // has no descriptor.
  static kj::Own<SocketStream> take(kj::UnixEventPort& port, kj::Own<kj::AsyncIoStream> stream);
  SocketStream(kj::UnixEventPort& port, kj::AutoCloseFd fd);

  // A read waiting for the socket reads it now (it may find nothing and
  // wait again); otherwise nothing.
  void read_now();

  kj::Promise<size_t> tryRead(void* buffer, size_t minBytes, size_t maxBytes) override;
  kj::Promise<void> write(const void* buffer, size_t size) override;
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override;
  kj::Promise<void> whenWriteDisconnected() override;
  void shutdownWrite() override;
  void abortRead() override;
  void getsockopt(int level, int option, void* value, kj::uint* length) override;
  void setsockopt(int level, int option, const void* value, kj::uint length) override;
  void getsockname(struct sockaddr* addr, kj::uint* length) override;
  void getpeername(struct sockaddr* addr, kj::uint* length) override;
  kj::Maybe<int> getFd() const override { return fd_.get(); }

 private:
  kj::Promise<size_t> read_from(kj::byte* buffer, size_t min, size_t max, size_t done);
  kj::Promise<void> write_rest(kj::ArrayPtr<const kj::byte> first,
                               kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> more);

  kj::AutoCloseFd fd_;
  kj::UnixEventPort::FdObserver observer_;
  kj::Own<kj::PromiseFulfiller<void>> read_now_;  // the waiting read's
  kj::Maybe<kj::ForkedPromise<void>> write_disconnected_;
};

}  // namespace outpost::net
