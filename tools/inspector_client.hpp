#pragma once
// outpostctl's side of the inspector (schemas/inspector.capnp): one
// connection, each call with a timeout, errors in the user's terms.

#include <capnp/rpc-twoparty.h>
#include <fmt/format.h>
#include <kj/async-io.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

#include "actors/agent_config.hpp"
#include "net/kj_util.hpp"
#include "schemas/inspector.capnp.h"
#include "schemas/json.hpp"

namespace outpost::ctl {

using outpost::inspector::Inspector;
namespace in = outpost::inspector;

struct Options {
  std::string socket, config;
  bool json = false;
  unsigned timeout_s = 10;
};

// Thrown for what the user must fix; printed as "outpostctl: <text>", exit 1.
struct Failure : std::runtime_error {
  using runtime_error::runtime_error;
};

inline std::string socket_path(const Options& o) {
  if (!o.socket.empty()) return o.socket;
  if (!o.config.empty()) {
    auto config = outpost::load_agent_config(o.config);
    if (config.inspector.socket.empty()) throw Failure(o.config + ": the inspector is off (inspector.socket is empty)");
    return config.inspector.socket;
  }
  return outpost::InspectorSpec{}.socket;
}

// A connected socket, or a Failure that says why in the user's terms.
inline kj::AutoCloseFd connect_to(const std::string& path) {
  kj::AutoCloseFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) throw Failure("socket path too long: " + path);
  std::memcpy(a.sun_path, path.data(), path.size());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return fd;
  int e = errno;
  if (e == ENOENT || e == ECONNREFUSED)
    throw Failure("no agent is running with its inspector at " + path + " (" + std::strerror(e) +
                  "); --socket or --config names another");
  if (e == EACCES || e == EPERM)
    throw Failure("permission denied on " + path + ": run as the agent's user (or root)");
  throw Failure("cannot connect to " + path + ": " + std::strerror(e));
}

struct Session {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> client;
  Inspector::Client inspector{nullptr};
  kj::Duration timeout;
  bool control = false;
  std::string agent;
  uint32_t pid = 0;

  explicit Session(const Options& o) : timeout(o.timeout_s * kj::SECONDS) {
    stream = io.lowLevelProvider->wrapSocketFd(connect_to(socket_path(o)));
    client = kj::heap<capnp::TwoPartyClient>(*stream);
    inspector = client->bootstrap().castAs<Inspector>();
    auto req = inspector.helloRequest();
    req.setVersion(in::VERSION);
    auto r = wait(req.send(), "hello");
    control = r.getControl();
    agent = r.getAgent();
    pid = r.getPid();
  }

  template <class T>
  T wait(kj::Promise<T> p, const char* what, kj::Duration extra = 0 * kj::SECONDS) {
    return outpost::net::within(io.provider->getTimer(), kj::mv(p), timeout + extra, what).wait(io.waitScope);
  }
  template <class T>
  capnp::Response<T> wait(capnp::RemotePromise<T> p, const char* what, kj::Duration extra = 0 * kj::SECONDS) {
    return wait(kj::Promise<capnp::Response<T>>(kj::mv(p)), what, extra);
  }
};

inline std::string q(kj::StringPtr s) {
  std::string out;
  outpost::schemas::append_json_string(out, s);
  return out;
}

inline std::string label(in::ActorInfo::Reader a) {
  return a.getName().size() ? fmt::format("{} {}", a.getKind().cStr(), a.getName().cStr()) : a.getKind().cStr();
}

// outpostctl top (outpostctl_top.cpp): refreshes every interval_ms, `iterations` times (0: until q).
int run_top(Session& s, unsigned interval_ms, int iterations, const std::string& sort);

}  // namespace outpost::ctl
