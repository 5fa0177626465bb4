// SocketStream: the collector's own reads and writes of an agent's socket, on
// a real socket pair, and read_now() on a loop that never reads epoll.

#include "net/collector/socket_stream.hpp"

#include <gtest/gtest.h>
#include <kj/debug.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>

namespace outpost::net {
namespace {

struct Pair {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  kj::Own<SocketStream> ours;
  kj::AutoCloseFd peer;  // the other end, blocking
  Pair() {
    int fds[2];
    KJ_SYSCALL(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds));
    peer = kj::AutoCloseFd(fds[1]);
    ours = SocketStream::take(io.unixEventPort, io.lowLevelProvider->wrapSocketFd(
                                                    fds[0], kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP));
  }
};

std::string pattern(size_t n, int seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + seed) % 251);
  return s;
}

// Both ways at once, more than the socket buffers hold, in pieces: every byte
// arrives once and in order.
TEST(SocketStream, CarriesBothWaysWhatTheBuffersCannotHoldInOrder) {
  Pair p;
  std::string out = pattern(4 << 20, 7), in = pattern(3 << 20, 11);
  std::string got_by_peer, got_by_us(in.size(), '\0');
  std::thread peer([&] {
    size_t sent = 0;
    char buf[65536];
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    // Writes and reads as the socket lets it, until both are done or the
    // deadline; then ends both ways, so that a side still waiting ends too.
    while ((got_by_peer.size() < out.size() || sent < in.size()) && std::chrono::steady_clock::now() < deadline) {
      struct pollfd fd = {p.peer.get(), static_cast<short>((sent < in.size() ? POLLOUT : 0) | POLLIN), 0};
      ::poll(&fd, 1, 100);
      if ((fd.revents & POLLOUT) != 0) {
        ssize_t n = ::send(p.peer.get(), in.data() + sent, std::min<size_t>(100000, in.size() - sent), MSG_DONTWAIT);
        if (n > 0) sent += static_cast<size_t>(n);
      }
      if ((fd.revents & POLLIN) != 0) {
        ssize_t n = ::recv(p.peer.get(), buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0) got_by_peer.append(buf, static_cast<size_t>(n));
      }
    }
    ::shutdown(p.peer.get(), SHUT_RDWR);
  });
  // Three pieces through the vectored write, the read in uneven minimums.
  kj::ArrayPtr<const kj::byte> pieces[] = {
      kj::arrayPtr(reinterpret_cast<const kj::byte*>(out.data()), 1000),
      kj::arrayPtr(reinterpret_cast<const kj::byte*>(out.data()) + 1000, 0),
      kj::arrayPtr(reinterpret_cast<const kj::byte*>(out.data()) + 1000, out.size() - 1000)};
  auto writing = p.ours->write(kj::arrayPtr(pieces, 3));
  size_t read = 0;
  std::function<kj::Promise<void>()> read_more = [&]() -> kj::Promise<void> {
    if (read == in.size()) return kj::READY_NOW;
    size_t want = std::min<size_t>(in.size() - read, 12345);
    return p.ours->tryRead(&got_by_us[read], want, in.size() - read).then([&](size_t n) -> kj::Promise<void> {
      read += n;
      if (n == 0) return kj::READY_NOW;  // the peer ended early
      return read_more();
    });
  };
  std::string failed;
  try {
    kj::joinPromises(kj::arr(kj::mv(writing), read_more())).wait(p.io.waitScope);
  } catch (const kj::Exception& e) {  // the peer ended before taking every byte
    failed = e.getDescription().cStr();
  }
  peer.join();
  EXPECT_EQ(failed, "");
  EXPECT_EQ(read, in.size());
  EXPECT_TRUE(got_by_peer == out) << "the peer got " << got_by_peer.size() << " of " << out.size() << " bytes, or others";
  EXPECT_TRUE(got_by_us == in) << "bytes read differ from those sent";
}

TEST(SocketStream, EndsAReadWithWhatCameWhenThePeerCloses) {
  Pair p;
  ASSERT_EQ(::write(p.peer.get(), "abc", 3), 3);
  p.peer = nullptr;
  char buf[16];
  EXPECT_EQ(p.ours->tryRead(buf, 10, sizeof(buf)).wait(p.io.waitScope), 3u);
  EXPECT_EQ(p.ours->tryRead(buf, 1, sizeof(buf)).wait(p.io.waitScope), 0u);
}

// A loop whose queue never empties never reads epoll, so a read waiting for
// the socket stays waiting however much arrives, unless read_now() asks.
TEST(SocketStream, ReadNowReadsWhatArrivedOnALoopThatNeverWaits) {
  Pair p;
  char buf[16] = {};
  bool done = false;
  size_t got = 0;
  auto reading = p.ours->tryRead(buf, 1, sizeof(buf))
                     .then([&](size_t n) {
                       got = n;
                       done = true;
                     })
                     .eagerlyEvaluate(nullptr);
  ASSERT_EQ(::write(p.peer.get(), "answer", 6), 6);  // in the socket now
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  int turns = 0;
  std::function<kj::Promise<void>()> turn = [&]() -> kj::Promise<void> {
    if (done || std::chrono::steady_clock::now() > deadline) return kj::READY_NOW;
    if (++turns == 100) p.ours->read_now();  // a while after the bytes came
    return kj::evalLater(turn);
  };
  kj::evalLater(turn).wait(p.io.waitScope);
  EXPECT_TRUE(done) << "the read did not end within 10 s of busy turns";
  EXPECT_GE(turns, 100) << "it ended before read_now(): the loop read epoll";
  EXPECT_EQ(std::string(buf, got), "answer");
  reading.wait(p.io.waitScope);
}

// read_now() with nothing in the socket: the read waits on, and the next
// bytes still end it (through epoll, the loop now idle).
TEST(SocketStream, ReadNowWithNothingThereLeavesTheReadWaitingForTheSocket) {
  Pair p;
  char buf[16] = {};
  auto reading = p.ours->tryRead(buf, 2, sizeof(buf)).eagerlyEvaluate(nullptr);
  p.ours->read_now();
  kj::evalLater([] {}).wait(p.io.waitScope);  // the nudged read ran and found nothing
  ASSERT_EQ(::write(p.peer.get(), "o", 1), 1);
  p.ours->read_now();
  kj::evalLater([] {}).wait(p.io.waitScope);  // one byte of the two asked for
  ASSERT_EQ(::write(p.peer.get(), "k", 1), 1);
  EXPECT_EQ(reading.wait(p.io.waitScope), 2u);
  EXPECT_EQ(std::string(buf, 2), "ok");
}

}  // namespace
}  // namespace outpost::net
