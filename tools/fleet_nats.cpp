#include "tools/fleet_nats.hpp"

#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stdexcept>
#include <thread>

#include "tools/bench.hpp"

namespace outpost::bench {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

uint16_t unused_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  ::close(fd);
  if (!ok) throw std::runtime_error("fleet: no free port on 127.0.0.1 for nats-server");
  return ntohs(a.sin_port);
}

}  // namespace

FleetNats::FleetNats(const fs::path& dir, unsigned nodes) {
  const char* server = "/usr/sbin/nats-server";
  if (::access(server, X_OK) != 0)
    throw std::runtime_error("fleet --backend jetstream needs nats-server (scripts/install-deps.sh installs it)");
  for (unsigned i = 0; i < nodes; ++i) nodes_.push_back({unused_port(), unused_port(), 0, {}});
  std::string routes;
  for (auto& n : nodes_) routes += fmt::format("{}nats://127.0.0.1:{}", routes.empty() ? "" : ",", n.cluster_port);
  for (size_t i = 0; i < nodes_.size(); ++i) {
    auto& n = nodes_[i];
    std::string name = fmt::format("n{}", i + 1);
    fs::create_directories(dir / name);
    std::vector<std::string> args{server, "-a", "127.0.0.1", "-p", std::to_string(n.port), "-n", name, "-js", "-sd",
                                  (dir / name).string()};
    if (nodes > 1)
      args.insert(args.end(), {"--cluster_name", "outpost-bench", "--cluster",
                               fmt::format("nats://127.0.0.1:{}", n.cluster_port), "--routes", routes});
    n.log = dir / (name + ".log");
    n.pid = spawn_process(args, dir, n.log, true);
  }
  auto deadline = Clock::now() + 30s;
  for (auto& n : nodes_) {
    for (;;) {
      std::string text = read_text(n.log);
      if (text.find("Server is ready") != std::string::npos &&
          (nodes == 1 || text.find("metadata leader") != std::string::npos))
        break;
      if (Clock::now() > deadline)
        throw std::runtime_error("fleet: nats-server did not become ready within 30 s; its log ends:\n" + log_tail(n.log));
      std::this_thread::sleep_for(50ms);
    }
  }
}

FleetNats::~FleetNats() {
  for (size_t i = 0; i < nodes_.size(); ++i) kill9(i);
}

std::string FleetNats::urls() const {
  std::string out;
  for (auto& n : nodes_) out += fmt::format("{}nats://127.0.0.1:{}", out.empty() ? "" : ",", n.port);
  return out;
}

void FleetNats::kill9(size_t node) {
  auto& n = nodes_.at(node);
  if (n.pid <= 0) return;
  ::kill(n.pid, SIGKILL);
  ::waitpid(n.pid, nullptr, 0);
  n.pid = 0;
}

std::vector<pid_t> FleetNats::pids() const {
  std::vector<pid_t> out;
  for (auto& n : nodes_)
    if (n.pid > 0) out.push_back(n.pid);
  return out;
}

}  // namespace outpost::bench
