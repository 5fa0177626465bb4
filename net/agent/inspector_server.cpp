#include "net/agent/inspector_server.hpp"

#include <capnp/rpc-twoparty.h>
#include <caf/event_based_actor.hpp>
#include <kj/async-io.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>

#include "actors/control.hpp"
#include "actors/warnings.hpp"
#include "net/kj_util.hpp"
#include "schemas/inspector.capnp.h"

namespace outpost::net {
namespace {

using inspector::Inspector;

std::runtime_error socket_error(const std::string& path, const std::string& what) {
  return std::runtime_error("inspector socket " + path + ": " + what);
}

sockaddr_un unix_address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.data(), path.size());
  return a;
}

// A socket file already at `path`: a live agent's is refused, a dead one's replaced.
void clear_stale(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return;
  if (!S_ISSOCK(st.st_mode)) throw socket_error(path, "exists and is not a socket; not replacing it");
  kj::AutoCloseFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  auto a = unix_address(path);
  if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0)
    throw socket_error(path, "a running agent serves it; stop that agent or give this one another "
                             "inspector.socket");
  if (errno != ECONNREFUSED)
    throw socket_error(path, std::string("exists and cannot be checked: ") + std::strerror(errno));
  ::unlink(path.c_str());  // nobody listens: left by an agent that died
}

// Bound under a temporary name, made 0600, then renamed into place.
kj::AutoCloseFd listen_on(const std::string& path) {
  std::string tmp = path + "." + std::to_string(::getpid());
  if (tmp.size() >= sizeof(sockaddr_un{}.sun_path))
    throw socket_error(path, "too long (at most 96 bytes)");
  clear_stale(path);
  kj::AutoCloseFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) throw socket_error(path, std::string("socket: ") + std::strerror(errno));
  ::unlink(tmp.c_str());
  auto a = unix_address(tmp);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    throw socket_error(path, std::string("cannot create it: ") + std::strerror(errno));
  if (::chmod(tmp.c_str(), 0600) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw socket_error(path, std::string("cannot put it in place: ") + std::strerror(e));
  }
  if (::listen(fd.get(), 16) != 0) throw socket_error(path, std::string("listen: ") + std::strerror(errno));
  return fd;
}

}  // namespace

class InspectorServer::Loop final : private kj::TaskSet::ErrorHandler {
 public:
  Loop(InspectorServer& owner, kj::AutoCloseFd fd)
      : ctx_(owner.context_), io_(setup_async_io()), tasks_(*this),
        listener_(io_.lowLevelProvider->wrapListenSocketFd(fd.release(), kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP)) {}

  void run(ServerThread& thread) {
    tasks_.add(accept());
    thread.wait_until_stopped(io_.waitScope);
  }


 private:
  void taskFailed(kj::Exception&& e) override {
    spdlog::warn("inspector: {}", e.getDescription().cStr());
  }

  kj::Promise<void> accept() {
    return listener_->accept().then([this](kj::Own<kj::AsyncIoStream> stream) {
      take(kj::mv(stream));
      return accept();
    });
  }

  void take(kj::Own<kj::AsyncIoStream> stream);

  InspectorContext& ctx_;
  kj::AsyncIoContext io_;
  kj::TaskSet tasks_;
  kj::Own<kj::ConnectionReceiver> listener_;
};

void InspectorServer::Loop::take(kj::Own<kj::AsyncIoStream> stream) {
  // The socket's mode keeps other users out; this also does if its directory is shared.
  struct ucred cred{};
  uint len = sizeof cred;
  stream->getsockopt(SOL_SOCKET, SO_PEERCRED, &cred, &len);
  if (cred.uid != 0 && cred.uid != ::getuid()) {
    spdlog::warn("inspector: refused a connection from uid {} (pid {})", cred.uid, cred.pid);
    return;
  }
  auto network = kj::heap<capnp::TwoPartyVatNetwork>(*stream, capnp::rpc::twoparty::Side::SERVER);
  auto rpc = kj::heap<capnp::RpcSystem<capnp::rpc::twoparty::VatId>>(
      capnp::makeRpcServer(*network, make_inspector_service(ctx_, io_.provider->getTimer())));
  auto done = network->onDisconnect();
  // Attachments are destroyed last first: the RPC system before the network it
  // uses, the network before its stream (a connection still open when the
  // loop ends is torn down in that order).
  tasks_.add(done.attach(kj::mv(stream), kj::mv(network), kj::mv(rpc)));
}

InspectorServer::InspectorServer(InspectorContext context) : context_(std::move(context)) {
  context_.registry.set_slow_ns(static_cast<uint64_t>(context_.spec.warnings.slow_handler.count()) * 1000000);
  auto fd = std::make_shared<kj::AutoCloseFd>(listen_on(context_.spec.socket));
  spdlog::info("inspector: listening on {}{}", context_.spec.socket,
               context_.spec.control ? " (control allowed)" : " (read-only)");
  thread_ = std::make_unique<ServerThread>("inspector", [this, fd](ServerThread& thread) {
    Loop loop(*this, kj::mv(*fd));
    loop.run(thread);
  });
}

InspectorServer::~InspectorServer() {
  thread_.reset();  // stops serving and joins
  ::unlink(context_.spec.socket.c_str());
}

}  // namespace outpost::net
