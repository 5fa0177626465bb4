#pragma once
// outpost-bench fleet --backend jetstream: the NATS nodes the collectors
// store into, as real nats-server processes on 127.0.0.1 (a three-node
// JetStream cluster, or one node), each with its store under the
// benchmark's directory; stopped (SIGKILL) when this goes.

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

namespace outpost::bench {

class FleetNats {
 public:
  // Starts `nodes` nodes and waits until they serve (and, clustered, have
  // elected a JetStream leader); throws with the log's end if one does not
  // (after three tries if a port was taken before a node bound it).
  FleetNats(const std::filesystem::path& dir, unsigned nodes);
  ~FleetNats();
  FleetNats(const FleetNats&) = delete;
  FleetNats& operator=(const FleetNats&) = delete;

  std::string urls() const;  // comma-separated, for --nats
  void kill9(size_t node);
  std::vector<pid_t> pids() const;  // of the nodes running

 private:
  void start(const std::filesystem::path& dir, unsigned nodes);  // throws PortTaken on a lost port race
  struct Node {
    uint16_t port, cluster_port;
    pid_t pid;
    std::filesystem::path log;
  };
  std::vector<Node> nodes_;
};

}  // namespace outpost::bench
