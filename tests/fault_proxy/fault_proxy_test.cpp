#include "tests/fault_proxy/fault_proxy.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <kj/io.h>

namespace outpost::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

sockaddr_in loopback(uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  return addr;
}

uint16_t port_of(int fd) {
  sockaddr_in addr{};
  socklen_t size = sizeof addr;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &size) != 0) {
    throw std::runtime_error("getsockname failed");
  }
  return ntohs(addr.sin_port);
}

using Socket = kj::AutoCloseFd;

// Blocking, but reads and writes time out so that a broken relay fails a test instead of
// hanging it.
Socket client_socket() {
  Socket s(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  timeval timeout{5, 0};
  int one = 1;
  if (s.get() < 0 || setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) != 0 ||
      setsockopt(s.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout) != 0 ||
      setsockopt(s.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
    throw std::runtime_error(std::string("cannot make a socket: ") + std::strerror(errno));
  }
  return s;
}

int connect(const Socket& s, uint16_t port) {
  sockaddr_in addr = loopback(port);
  return connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
}

Socket connect_to(uint16_t port) {
  Socket s = client_socket();
  if (connect(s, port) != 0) {
    throw std::runtime_error(std::string("cannot connect: ") + std::strerror(errno));
  }
  return s;
}

bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Shorter than `size` after EOF, an error or a timeout.
std::string recv_exact(const Socket& s, size_t size) {
  std::string data(size, '\0');
  size_t got = 0;
  while (got < size) {
    ssize_t n = recv(s.get(), data.data() + got, size - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  data.resize(got);
  return data;
}

bool round_trip(const Socket& s, const std::string& message) {
  return send_all(s.get(), message) && recv_exact(s, message.size()) == message;
}

// One blocking read of one byte: n is 1 for data, 0 for EOF, -1 with `error` set.
struct ReadResult {
  ssize_t n;
  int error;
};
ReadResult read_one(const Socket& s) {
  char byte;
  ssize_t n = recv(s.get(), &byte, 1, 0);
  return {n, n < 0 ? errno : 0};
}

// Data, EOF and errors all count: not readable means open and quiet.
bool readable_within(const Socket& s, std::chrono::milliseconds wait) {
  pollfd p{s.get(), POLLIN, 0};
  return poll(&p, 1, static_cast<int>(wait.count())) > 0;
}

// For counters, which the relay thread updates a moment after the client sees the effect.
template <typename Predicate>
bool eventually(Predicate done) {
  auto deadline = Clock::now() + 5s;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

// User and system time of the whole process: a relay that spins shows up here.
std::chrono::microseconds cpu_time() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto micros = [](const timeval& t) {
    return std::chrono::seconds(t.tv_sec) + std::chrono::microseconds(t.tv_usec);
  };
  return micros(usage.ru_utime) + micros(usage.ru_stime);
}

// xorshift bytes: a dropped, duplicated or reordered chunk can't go unnoticed.
std::string pattern(size_t size, uint32_t seed) {
  std::string data(size, '\0');
  uint32_t x = seed;
  for (char& c : data) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c = static_cast<char>(x);
  }
  return data;
}

// Echoes every byte on 127.0.0.1, a thread per connection, and counts how connections ended.
class EchoServer {
 public:
  EchoServer() : listener_(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in addr = loopback(0);
    if (listener_ < 0 || bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        listen(listener_, 64) != 0) {
      throw std::runtime_error("echo server cannot listen");
    }
    port_ = port_of(listener_);
    acceptor_ = std::thread([this] { accept_loop(); });
  }

  // shutdown() wakes the threads blocked in accept() and recv(). Descriptors are closed only once
  // the threads are gone, so none of them can touch a reused number.
  ~EchoServer() {
    shutdown(listener_, SHUT_RDWR);
    acceptor_.join();
    for (int fd : connections_) shutdown(fd, SHUT_RDWR);
    for (auto& worker : workers_) worker.join();
    for (int fd : connections_) close(fd);
    close(listener_);
  }

  uint16_t port() const { return port_; }
  int eofs() const { return eofs_; }
  int resets() const { return resets_; }

 private:
  void accept_loop() {
    for (;;) {
      int fd = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0 && (errno == EINTR || errno == ECONNABORTED)) continue;
      // accept() claims a descriptor before it waits, so it fails while a test has them capped.
      if (fd < 0 && errno == EMFILE) {
        std::this_thread::sleep_for(10ms);
        continue;
      }
      if (fd < 0) return;
      connections_.push_back(fd);
      workers_.emplace_back([this, fd] { serve(fd); });
    }
  }

  void serve(int fd) {
    char buffer[64 * 1024];
    for (;;) {
      ssize_t n = recv(fd, buffer, sizeof buffer, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n == 0) {
        ++eofs_;
        shutdown(fd, SHUT_WR);
        return;
      }
      if (n < 0 || !send_all(fd, std::string_view(buffer, static_cast<size_t>(n)))) {
        if (errno == ECONNRESET || errno == EPIPE) ++resets_;
        return;
      }
    }
  }

  int listener_;
  uint16_t port_ = 0;
  std::atomic<int> eofs_{0};
  std::atomic<int> resets_{0};
  // Touched by the acceptor thread, then by the destructor once it has joined the acceptor.
  std::vector<int> connections_;
  std::vector<std::thread> workers_;
  std::thread acceptor_;
};

// Bound but not listening: connecting is refused, and no one else can take the port meanwhile.
class ClosedPort {
 public:
  ClosedPort() : fd_(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in addr = loopback(0);
    if (fd_.get() < 0 || bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      throw std::runtime_error("cannot bind");
    }
  }
  uint16_t port() const { return port_of(fd_.get()); }

 private:
  Socket fd_;
};

TEST(FaultProxyTest, RelaysMegabytesBothWaysOnConcurrentConnections) {
  constexpr size_t kSize = 4 << 20;
  constexpr int kClients = 2;
  EchoServer echo;
  FaultProxy proxy(echo.port());

  std::vector<Socket> clients;
  std::vector<std::string> payloads;
  std::vector<std::thread> writers;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(connect_to(proxy.port()));
    payloads.push_back(pattern(kSize, 12345u + static_cast<uint32_t>(i)));
  }
  for (int i = 0; i < kClients; ++i) {
    writers.emplace_back([&, i] { EXPECT_TRUE(send_all(clients[i].get(), payloads[i])); });
  }
  for (int i = 0; i < kClients; ++i) {
    std::string echoed = recv_exact(clients[i], kSize);
    EXPECT_EQ(echoed.size(), kSize);
    EXPECT_TRUE(echoed == payloads[i]) << "client " << i << " got different bytes back";
  }
  for (auto& writer : writers) writer.join();

  // The relay counts a send once it returns, which may be after its bytes arrived.
  EXPECT_TRUE(eventually([&] { return proxy.bytes_upstream() == kClients * kSize; })) << proxy.bytes_upstream();
  EXPECT_TRUE(eventually([&] { return proxy.bytes_downstream() == kClients * kSize; })) << proxy.bytes_downstream();
  EXPECT_EQ(proxy.connections_accepted(), static_cast<uint64_t>(kClients));
  EXPECT_EQ(proxy.active_connections(), static_cast<uint64_t>(kClients));
}

TEST(FaultProxyTest, HalfCloseIsRelayedAndEndsTheConnection) {
  EchoServer echo;
  FaultProxy proxy(echo.port());
  Socket client = connect_to(proxy.port());

  ASSERT_TRUE(send_all(client.get(), "last words"));
  ASSERT_EQ(shutdown(client.get(), SHUT_WR), 0);
  EXPECT_EQ(recv_exact(client, 10), "last words");
  EXPECT_EQ(read_one(client).n, 0);
  EXPECT_TRUE(eventually([&] { return proxy.active_connections() == 0; }));
}

TEST(FaultProxyTest, CutClosesBothSidesWithFin) {
  EchoServer echo;
  FaultProxy proxy(echo.port());
  Socket client = connect_to(proxy.port());
  ASSERT_TRUE(round_trip(client, "hello"));

  proxy.cut();
  EXPECT_EQ(proxy.active_connections(), 0u);
  ReadResult result = read_one(client);
  EXPECT_EQ(result.n, 0) << std::strerror(result.error);
  EXPECT_TRUE(eventually([&] { return echo.eofs() == 1; }));
  EXPECT_EQ(echo.resets(), 0);

  Socket next = connect_to(proxy.port());
  EXPECT_TRUE(round_trip(next, "only existing connections are cut"));
}

TEST(FaultProxyTest, CutIncludesConnectionsNotYetAccepted) {
  EchoServer echo;
  FaultProxy proxy(echo.port());
  Socket client = connect_to(proxy.port());
  proxy.cut();
  EXPECT_EQ(read_one(client).n, 0);
}

TEST(FaultProxyTest, ResetAbortsBothSides) {
  EchoServer echo;
  FaultProxy proxy(echo.port());
  Socket client = connect_to(proxy.port());
  ASSERT_TRUE(round_trip(client, "hello"));

  proxy.reset();
  ReadResult result = read_one(client);
  EXPECT_EQ(result.n, -1);
  EXPECT_EQ(result.error, ECONNRESET) << std::strerror(result.error);
  EXPECT_TRUE(eventually([&] { return echo.resets() == 1; }));
  EXPECT_EQ(proxy.active_connections(), 0u);
}

TEST(FaultProxyTest, DelayAppliesInEachDirection) {
  EchoServer echo;
  FaultProxy proxy(echo.port());
  Socket client = connect_to(proxy.port());
  ASSERT_TRUE(round_trip(client, "warm up"));

  proxy.set_delay(100ms);
  auto start = Clock::now();
  ASSERT_TRUE(round_trip(client, "ping"));
  EXPECT_GE(Clock::now() - start, 200ms);
}

TEST(FaultProxyTest, RateLimitThrottlesTransfers) {
  constexpr uint64_t kRate = 256 * 1024;
  constexpr size_t kSize = 128 * 1024;
  EchoServer echo;
  FaultProxy proxy(echo.port());
  Socket client = connect_to(proxy.port());
  ASSERT_TRUE(round_trip(client, "warm up"));

  proxy.set_rate(kRate);
  std::string payload = pattern(kSize, 777);
  auto start = Clock::now();
  std::thread writer([&] { EXPECT_TRUE(send_all(client.get(), payload)); });
  EXPECT_TRUE(recv_exact(client, kSize) == payload);
  auto elapsed = Clock::now() - start;
  writer.join();
  // Both directions are paced, but they overlap, so the echo takes about kSize / kRate. The
  // slack covers the first slice going out at once.
  EXPECT_GE(elapsed, std::chrono::milliseconds(kSize * 1000 / kRate) * 8 / 10);
}

TEST(FaultProxyTest, BlackholeHoldsConnectionsOpenAndResumesIntact) {
  EchoServer echo;
  FaultProxy proxy(echo.port());
  Socket before = connect_to(proxy.port());
  ASSERT_TRUE(round_trip(before, "before"));

  proxy.blackhole(true);
  ASSERT_TRUE(send_all(before.get(), "held"));
  Socket during = connect_to(proxy.port());
  ASSERT_TRUE(send_all(during.get(), "also held"));
  auto cpu_before = cpu_time();
  EXPECT_FALSE(readable_within(before, 300ms));
  EXPECT_FALSE(readable_within(during, 0ms));
  // Unread input is waiting on both sockets; watching them regardless would spin.
  EXPECT_LT(cpu_time() - cpu_before, 100ms);
  EXPECT_TRUE(eventually([&] { return proxy.active_connections() == 2; }));

  proxy.blackhole(false);
  EXPECT_EQ(recv_exact(before, 4), "held");
  EXPECT_EQ(recv_exact(during, 9), "also held");
}

TEST(FaultProxyTest, RefuseResetsNewConnectionsOnly) {
  EchoServer echo;
  FaultProxy proxy(echo.port());
  Socket existing = connect_to(proxy.port());
  ASSERT_TRUE(round_trip(existing, "hello"));

  proxy.refuse(true);
  Socket refused = connect_to(proxy.port());
  ReadResult result = read_one(refused);
  EXPECT_EQ(result.n, -1);
  EXPECT_EQ(result.error, ECONNRESET) << std::strerror(result.error);
  EXPECT_TRUE(round_trip(existing, "still fine"));

  proxy.refuse(false);
  Socket accepted = connect_to(proxy.port());
  EXPECT_TRUE(round_trip(accepted, "welcome back"));
  EXPECT_EQ(proxy.connections_accepted(), 3u);
}

TEST(FaultProxyTest, CutEveryMakesConnectionsFlap) {
  EchoServer echo;
  FaultProxy proxy(echo.port());
  proxy.cut_every(50ms);
  for (int i = 0; i < 4; ++i) {
    Socket client = connect_to(proxy.port());
    ReadResult result = read_one(client);
    EXPECT_EQ(result.n, 0) << "disconnect " << i << ": " << std::strerror(result.error);
  }

  proxy.cut_every(0ms);
  Socket client = connect_to(proxy.port());
  std::this_thread::sleep_for(200ms);
  EXPECT_TRUE(round_trip(client, "steady again"));
}

TEST(FaultProxyTest, UnreachableUpstreamResetsClientAndIsCounted) {
  ClosedPort closed;
  FaultProxy proxy(closed.port());
  Socket client = connect_to(proxy.port());
  ReadResult result = read_one(client);
  EXPECT_EQ(result.n, -1);
  EXPECT_EQ(result.error, ECONNRESET) << std::strerror(result.error);
  EXPECT_TRUE(eventually([&] { return proxy.upstream_failures() == 1; }));
  EXPECT_EQ(proxy.connections_accepted(), 1u);
  EXPECT_TRUE(eventually([&] { return proxy.active_connections() == 0; }));
}

TEST(FaultProxyTest, ThrowsWhenItCannotListen) {
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
  rlimit no_new_files = saved;
  no_new_files.rlim_cur = 0;
  std::exception_ptr thrown;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &no_new_files), 0);
  try {
    FaultProxy proxy(1);
  } catch (...) {
    thrown = std::current_exception();
  }
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &saved), 0);

  ASSERT_TRUE(thrown);
  try {
    std::rethrow_exception(thrown);
  } catch (const std::runtime_error& e) {
    std::string message = e.what();
    EXPECT_NE(message.find("cannot listen on 127.0.0.1"), std::string::npos) << message;
  }
}

TEST(FaultProxyTest, BacksOffWhenOutOfDescriptorsInsteadOfSpinning) {
  EchoServer echo;
  FaultProxy proxy(echo.port());
  Socket client = client_socket();

  // New descriptors take the lowest free number, so this limit refuses every new one. It can't be
  // 0: poll() rejects more descriptors than the limit.
  int lowest_free = dup(0);
  ASSERT_GE(lowest_free, 0);
  close(lowest_free);
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
  rlimit no_new_files = saved;
  no_new_files.rlim_cur = static_cast<rlim_t>(lowest_free);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &no_new_files), 0);
  // The kernel completes the handshake; the proxy's accept() then fails with EMFILE.
  int connected = connect(client, proxy.port());
  auto cpu_before = cpu_time();
  std::this_thread::sleep_for(300ms);
  auto cpu_used = cpu_time() - cpu_before;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &saved), 0);

  ASSERT_EQ(connected, 0) << std::strerror(errno);
  EXPECT_LT(cpu_used, 100ms);
  EXPECT_TRUE(round_trip(client, "accepted once descriptors are back"));
}

TEST(FaultProxyTest, DestructionClosesConnections) {
  EchoServer echo;
  auto proxy = std::make_unique<FaultProxy>(echo.port());
  Socket client = connect_to(proxy->port());
  ASSERT_TRUE(round_trip(client, "hello"));
  proxy.reset();
  EXPECT_LE(read_one(client).n, 0);
}

}  // namespace
}  // namespace outpost::testing
