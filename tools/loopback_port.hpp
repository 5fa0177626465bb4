#pragma once
// A TCP port on 127.0.0.1 for a server a test or benchmark starts (a
// nats-server node): one nothing holds now, picked at random below the
// kernel's ephemeral range. A port from bind(0) comes from that range, so
// any outgoing connection (a cluster node dialling a route that is not up
// yet) may take it before the server binds it; below the range only
// another explicit bind can.

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <kj/io.h>

#include <fstream>
#include <random>
#include <stdexcept>
#include <string>

namespace outpost {

inline uint16_t loopback_port() {
  unsigned low = 32768, high = 60999;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> low >> high;
  unsigned first = 10000, last = low - 1;
  if (low < first + 1000) first = high + 1, last = 65535;  // an unusual range: take the ports above it
  if (first > last) throw std::runtime_error("no TCP ports outside the ephemeral range " + std::to_string(low) + "-" +
                                             std::to_string(high));
  static thread_local std::mt19937 random{std::random_device{}()};
  std::uniform_int_distribution<unsigned> pick(first, last);
  for (int attempt = 0; attempt < 100; ++attempt) {
    uint16_t port = static_cast<uint16_t>(pick(random));
    kj::AutoCloseFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd == nullptr) break;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return port;
  }
  throw std::runtime_error("no free TCP port on 127.0.0.1 below the ephemeral range");
}

}  // namespace outpost
