#include "tests/fault_proxy/socket.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>

namespace outpost::testing::relay {

void throw_errno(const std::string& what) {
  int error = errno;
  throw std::system_error(error, std::generic_category(), "FaultProxy: " + what);
}

bool would_block(int error) { return error == EAGAIN || error == EWOULDBLOCK; }

Address resolve(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (rc != 0) {
    throw std::runtime_error("FaultProxy: cannot resolve upstream host '" + host +
                             "': " + gai_strerror(rc));
  }
  Address address;
  std::memcpy(&address.storage, found->ai_addr, found->ai_addrlen);
  address.size = found->ai_addrlen;
  freeaddrinfo(found);
  return address;
}

kj::AutoCloseFd listen_on_loopback() {
  const std::string where = "cannot listen on 127.0.0.1";
  kj::AutoCloseFd fd(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd == nullptr) throw_errno(where + " (socket)");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    throw_errno(where + " (bind)");
  }
  if (listen(fd.get(), SOMAXCONN) != 0) throw_errno(where + " (listen)");
  return fd;
}

uint16_t local_port(const kj::AutoCloseFd& fd) {
  sockaddr_in addr{};
  socklen_t size = sizeof addr;
  if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &size) != 0) {
    throw_errno("getsockname failed");
  }
  return ntohs(addr.sin_port);
}

kj::AutoCloseFd start_connect(const Address& to) {
  kj::AutoCloseFd fd(socket(to.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd != nullptr && connect(fd.get(), reinterpret_cast<const sockaddr*>(&to.storage), to.size) != 0 &&
      errno != EINPROGRESS) {
    fd = nullptr;
  }
  return fd;
}

// Nagle would hold small chunks back until earlier ones are acknowledged: latency nobody asked for.
void set_nodelay(const kj::AutoCloseFd& fd) {
  int one = 1;
  setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// A zero linger timeout makes close() discard unsent data and send RST instead of FIN.
void close_with_rst(kj::AutoCloseFd fd) {
  linger abort_on_close{1, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close);
}

}  // namespace outpost::testing::relay
