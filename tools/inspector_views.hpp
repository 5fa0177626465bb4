#pragma once
// A client of an agent's inspector (schemas/inspector.capnp), reached on its
// unix socket (outpostctl) or through the collector (`outpost-collector
// inspect`): one connection, each call with a timeout, errors in the user's
// terms; and what both tools print from it (inspector_views.cpp, outpostctl_top.cpp).

#include <capnp/rpc-twoparty.h>
#include <fmt/format.h>
#include <kj/async-io.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <functional>
#include <string>
#include <vector>

#include "net/kj_util.hpp"
#include "schemas/inspector.capnp.h"
#include "schemas/json.hpp"

namespace outpost::ctl {

using outpost::inspector::Inspector;
namespace in = outpost::inspector;


// Thrown for what the user must fix; printed as "outpostctl: <text>", exit 1.
struct Failure : std::runtime_error {
  using runtime_error::runtime_error;
};


// A connected unix socket; a Failure made by `explain(errno)` when it cannot be.
inline kj::AutoCloseFd connect_unix(const std::string& path, const std::function<std::string(int)>& explain) {
  kj::AutoCloseFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) throw Failure("socket path too long: " + path);
  std::memcpy(a.sun_path, path.data(), path.size());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return fd;
  throw Failure(explain(errno));
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

  explicit Session(unsigned timeout_s) : timeout(timeout_s * kj::SECONDS) {}

  // Talks RPC over this socket; its bootstrap capability is client->bootstrap().
  void open(kj::AutoCloseFd fd) {
    stream = io.lowLevelProvider->wrapSocketFd(kj::mv(fd));
    client = kj::heap<capnp::TwoPartyClient>(*stream);
  }

  // Checks the versions match and learns who the agent is.
  void hello() {
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

// A JSON string.
inline std::string q(kj::StringPtr s) { return schemas::json_string(s); }

inline std::string label(in::ActorInfo::Reader a) {
  return a.getName().size() ? fmt::format("{} {}", a.getKind().cStr(), a.getName().cStr()) : a.getKind().cStr();
}

// Each prints to stdout (JSON when `json`); a Failure or a kj::Exception says what went wrong.
void print_status(Session& s, bool json);
void print_actors(Session& s, bool json, const std::string& sort_by, const std::string& kind);
void print_tree(Session& s, bool json);
// The kind-specific status of the actors of these kinds: one (the first), or all.
void print_kind(Session& s, bool json, std::initializer_list<const char*> kinds, bool many);
void print_warnings(Session& s, bool json);
// --json: {"line": ...} and {"result": ...}, one object a line.
int logs(Session& s, bool follow, bool json);
int control(Session& s, in::Action action, const std::string& target, bool json);
// Records a trace into `file` (- for stdout) as Chrome trace-event JSON; `payloads`:
// with the rows the messages carry.
int trace(Session& s, const std::vector<uint64_t>& actors, unsigned seconds, uint64_t count, uint64_t rate,
          bool payloads, const std::string& file);
// outpostctl top (outpostctl_top.cpp): refreshes every interval_ms, `iterations` times (0: until q).
int run_top(Session& s, unsigned interval_ms, int iterations, const std::string& sort);
// A kj exception's text without the "remote exception: " each RPC hop adds.
std::string kj_error(const kj::Exception& e);

}  // namespace outpost::ctl
