#include "net/agent/metrics_server.hpp"

#include <kj/async-io.h>
#include <kj/compat/http.h>
#include <kj/io.h>
#include <netdb.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "net/kj_util.hpp"
#include "actors/openmetrics.hpp"
#include "net/agent/inspector_service.hpp"

namespace outpost::net {
namespace {

std::runtime_error address_error(const std::string& address, const std::string& what) {
  return std::runtime_error("metrics listener " + address + ": " + what);
}

// host:port, the host maybe in brackets ([::1]:9464).
std::pair<std::string, std::string> split(const std::string& address) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) throw address_error(address, "expected host:port");
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return {host, address.substr(colon + 1)};
}

kj::AutoCloseFd listen_on(const std::string& address, uint16_t& port) {
  auto [host, service] = split(address);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0)
    throw address_error(address, ::gai_strerror(rc));
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> list(found, ::freeaddrinfo);
  kj::AutoCloseFd fd(::socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) throw address_error(address, std::string("socket: ") + std::strerror(errno));
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd.get(), found->ai_addr, found->ai_addrlen) != 0)
    throw address_error(address, std::string("cannot listen: ") + std::strerror(errno));
  if (::listen(fd.get(), 16) != 0) throw address_error(address, std::string("listen: ") + std::strerror(errno));
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len);
  port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                           : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return fd;
}

}  // namespace

class MetricsServer::Loop final : public kj::HttpService, private kj::TaskSet::ErrorHandler {
 public:
  Loop(MetricsServer& owner, kj::AutoCloseFd fd)
      : owner_(owner), io_(setup_async_io()), tasks_(*this),
        listener_(io_.lowLevelProvider->wrapListenSocketFd(fd.release(), kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP)),
        server_(io_.provider->getTimer(), headers_, *this) {}

  void run(ServerThread& thread) {
    tasks_.add(server_.listenHttp(*listener_));
    thread.wait_until_stopped(io_.waitScope);
  }

  kj::Promise<void> request(kj::HttpMethod method, kj::StringPtr url, const kj::HttpHeaders&,
                            kj::AsyncInputStream&, Response& response) override {
    if (method != kj::HttpMethod::GET && method != kj::HttpMethod::HEAD)
      return response.sendError(405, "Method Not Allowed", headers_);
    if (url != "/metrics" && !url.startsWith("/metrics?")) return response.sendError(404, "Not Found", headers_);
    bool head = method == kj::HttpMethod::HEAD;
    return statuses().then([this, head, &response](Statuses s) {
      auto text = kj::heapString(openmetrics_text(owner_.registry_, s));
      kj::HttpHeaders h(headers_);
      h.set(kj::HttpHeaderId::CONTENT_TYPE, kOpenMetricsContentType);
      auto body = response.send(200, "OK", h, text.size());
      if (head) return kj::Promise<void>(kj::READY_NOW).attach(kj::mv(body));
      auto written = body->write(text.begin(), text.size());
      // Attachments go last first: the text outlives the write, the stream the text.
      return written.attach(kj::mv(body), kj::mv(text));
    });
  }

 private:
  void taskFailed(kj::Exception&& e) override { spdlog::warn("metrics: {}", e.getDescription().cStr()); }

  // The buffer's and the link's status (the other actors' counters need no asking).
  kj::Promise<Statuses> statuses() {
    std::vector<ActorRegistry::Entry> asked;
    for (auto& e : owner_.registry_.live()) {
      std::string kind = e.metrics->kind;
      if (kind == "buffer" || kind == "link" || kind == "net-link") asked.push_back(std::move(e));
    }
    return statuses_of(owner_.sys_, std::move(asked));
  }

  MetricsServer& owner_;
  kj::AsyncIoContext io_;
  kj::HttpHeaderTable headers_;
  kj::TaskSet tasks_;
  kj::Own<kj::ConnectionReceiver> listener_;
  kj::HttpServer server_;
};

MetricsServer::MetricsServer(caf::actor_system& sys, ActorRegistry& registry, const std::string& address)
    : sys_(sys), registry_(registry) {
  auto fd = std::make_shared<kj::AutoCloseFd>(listen_on(address, port_));
  spdlog::info("metrics: OpenMetrics on http://{}/metrics (port {})", address, port_);
  thread_ = std::make_unique<ServerThread>("metrics", [this, fd](ServerThread& thread) {
    Loop loop(*this, kj::mv(*fd));
    loop.run(thread);
  });
}

MetricsServer::~MetricsServer() = default;  // the thread stops and joins

}  // namespace outpost::net
