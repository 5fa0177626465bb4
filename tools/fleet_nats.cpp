#include "tools/fleet_nats.hpp"

#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stdexcept>
#include <thread>

#include "tools/bench.hpp"
#include "tools/loopback_port.hpp"

namespace outpost::bench {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {
const char* const kServer = "/usr/sbin/nats-server";
struct PortTaken : std::runtime_error {
  using std::runtime_error::runtime_error;
};
}  // namespace

FleetNats::FleetNats(const fs::path& dir, unsigned nodes) {
  if (::access(kServer, X_OK) != 0)
    throw std::runtime_error("fleet --backend jetstream needs nats-server (scripts/install-deps.sh installs it)");
  // A port can still be taken between its pick and the node's bind (by
  // another process binding it): start again on new ports then.
  for (int attempt = 1;; ++attempt) {
    try {
      start(dir / fmt::format("try{}", attempt), nodes);
      return;
    } catch (const PortTaken& e) {
      for (size_t i = 0; i < nodes_.size(); ++i) kill9(i);
      nodes_.clear();
      if (attempt == 3) throw std::runtime_error(e.what());
      fmt::print(stderr, "{}\nfleet: starting the nodes again on other ports\n", e.what());
    }
  }
}

void FleetNats::start(const fs::path& dir, unsigned nodes) {
  for (unsigned i = 0; i < nodes; ++i) nodes_.push_back({loopback_port(), loopback_port(), 0, {}});
  std::string routes;
  for (auto& n : nodes_) routes += fmt::format("{}nats://127.0.0.1:{}", routes.empty() ? "" : ",", n.cluster_port);
  for (size_t i = 0; i < nodes_.size(); ++i) {
    auto& n = nodes_[i];
    std::string name = fmt::format("n{}", i + 1);
    fs::create_directories(dir / name);
    std::vector<std::string> args{kServer, "-a", "127.0.0.1", "-p", std::to_string(n.port), "-n", name, "-js", "-sd",
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
      if (text.find("address already in use") != std::string::npos)
        throw PortTaken("fleet: a nats-server port was taken before the node bound it; its log ends:\n" + log_tail(n.log));
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
