#pragma once
// The soak's world: a real collector and a real agent process on 127.0.0.1,
// mutual TLS through a fault proxy, each with its own small disk (a tmpfs the
// soak mounts, so that it can be filled) and its own logs.
//
// One thread (the soak's) calls every method; the proxy's controls are
// thread-safe and act before they return. Methods that wait say on what, and
// throw SoakError when a process does not do what it must within its limit.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/fault_proxy/fault_proxy.hpp"
#include "tests/process_util.hpp"

namespace outpost::soak {

namespace fs = std::filesystem;

struct SoakError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct WorldOptions {
  fs::path root;             // empty: a fresh directory under the temp dir, removed at the end
  int queries = 8;           // synthetic queries per agent run
  uint64_t rate = 250;       // rows per second per query
  std::string buffer_limit = "8MiB";
  uint64_t agent_disk_mb = 48;
  uint64_t collector_disk_mb = 1024;
  bool small_disks = true;    // mount the two tmpfs disks (needed by the disk-full faults)
  std::string agent_binary, collector_binary, certs_script;
};

// A size-limited tmpfs mounted at a directory for as long as this lives.
class SmallDisk {
 public:
  // Mounts `size_mb` of tmpfs at `point` (created). Throws SoakError naming
  // the reason when the kernel refuses (no CAP_SYS_ADMIN, say).
  SmallDisk(fs::path point, uint64_t size_mb);
  ~SmallDisk();  // lazily unmounted: what is still open keeps working
  SmallDisk(const SmallDisk&) = delete;
  SmallDisk& operator=(const SmallDisk&) = delete;

  const fs::path& path() const { return point_; }
  // Writes a filler file until the file system says ENOSPC: bytes written.
  uint64_t fill();
  void free();  // removes the filler

 private:
  fs::path point_;
};

class World {
 public:
  explicit World(WorldOptions options);
  ~World();  // kills what still runs, unmounts, removes a temporary root

  // Keeps the root directory (for a look after a failure): its path.
  const fs::path& keep() {
    remove_root_ = false;
    return root_;
  }

  // Which faults the machine allows: empty, or why disks cannot be filled.
  const std::string& disks_unavailable() const { return disks_unavailable_; }

  // Starts the collector (on the same port every time) and waits until it
  // listens. Blocks up to 30 s (a few times, the first time, should the
  // port it drew be taken).
  void start_collector();
  void kill_collector(int signal);  // and waits for it; a no-op when it is not running
  pid_t collector_pid() const { return collector_; }

  // Starts agent run number `run()+1` with queries "r<run>q<i>"; `quiet`
  // starts one with no query, to drain the buffer.
  void start_agent(bool quiet = false);
  // Sends `signal` and waits for the exit: its code (128 + signal if killed).
  int stop_agent(int signal);
  pid_t agent_pid() const { return agent_; }
  int run() const { return run_; }
  fs::path agent_log(int run) const;
  fs::path collector_log() const;  // the running (or last) collector's

  testing::FaultProxy& proxy() { return *proxy_; }
  SmallDisk* agent_disk() { return agent_disk_.get(); }
  SmallDisk* collector_disk() { return collector_disk_.get(); }

  fs::path buffer_dir() const;
  fs::path collector_data() const;
  fs::path agent_data() const { return collector_data() / "agent-1"; }

  // Bytes of every file the collector stored for the agent: grows with every
  // stored row, and is cheap enough to poll.
  uint64_t stored_bytes() const;

  // The Time of the last row the collector stored for query r<run>q0 (ns
  // since the epoch), or 0.
  int64_t newest_row_ns(int run) const;

  // The collector's mark for the agent's events lane. Only while the
  // collector is not running (it holds the store).
  uint64_t events_mark() const;
  // The agent's buffer, opened while no agent runs: the highest seq it
  // holds in the events lane and how many records it holds.
  std::pair<uint64_t, uint64_t> buffered_events() const;

  // Overwrites `spots` random ranges of the buffer's data file (not its two
  // meta pages) with random bytes, every other one on a row. Only while no
  // agent runs.
  void corrupt_buffer(std::mt19937_64& rng, int spots);
  // Removes the damaged files an agent set aside beside its buffer (they
  // would fill the small disk): how many.
  int remove_damaged_copies();

 private:
  void mount_disks();
  bool try_start_collector();  // false if it exited or did not listen within 30 s
  void write_agent_config(bool quiet);
  fs::path path(const std::string& name) const { return root_ / name; }

  WorldOptions options_;
  fs::path root_;
  bool remove_root_ = false;
  std::string disks_unavailable_;
  std::unique_ptr<SmallDisk> agent_disk_, collector_disk_;
  std::unique_ptr<testing::FaultProxy> proxy_;
  uint16_t port_ = 0;
  pid_t collector_ = -1, agent_ = -1;
  int collector_starts_ = 0, run_ = 0;
};

}  // namespace outpost::soak
