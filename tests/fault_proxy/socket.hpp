#pragma once
// The few socket operations the relay needs, on owned descriptors.

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <utility>

namespace outpost::testing::relay {

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  ~Fd() { reset(); }

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset();

 private:
  int fd_ = -1;
};

struct Address {
  sockaddr_storage storage{};
  socklen_t size = 0;
};

// Throws std::system_error, a std::runtime_error, quoting errno.
[[noreturn]] void throw_errno(const std::string& what);
bool would_block(int error);

Address resolve(const std::string& host, uint16_t port);  // Throws std::runtime_error.
Fd listen_on_loopback();                                  // Non-blocking; throws.
uint16_t local_port(const Fd& fd);
// Non-blocking: poll() reports completion or failure as writability. Empty if it failed outright.
Fd start_connect(const Address& to);

void set_nodelay(const Fd& fd);
void close_with_rst(Fd fd);

}  // namespace outpost::testing::relay
