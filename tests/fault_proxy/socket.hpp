#pragma once
// The few socket operations the relay needs, on owned descriptors.

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <utility>

#include <kj/io.h>

namespace outpost::testing::relay {

struct Address {
  sockaddr_storage storage{};
  socklen_t size = 0;
};

// Throws std::system_error, a std::runtime_error, quoting errno.
[[noreturn]] void throw_errno(const std::string& what);
bool would_block(int error);

Address resolve(const std::string& host, uint16_t port);  // Throws std::runtime_error.
kj::AutoCloseFd listen_on_loopback();                                  // Non-blocking; throws.
uint16_t local_port(const kj::AutoCloseFd& fd);
// Non-blocking: poll() reports completion or failure as writability. Empty if it failed outright.
kj::AutoCloseFd start_connect(const Address& to);

void set_nodelay(const kj::AutoCloseFd& fd);
void close_with_rst(kj::AutoCloseFd fd);

}  // namespace outpost::testing::relay
