#pragma once
// What the eBPF sources share: libbpf's messages routed to the log, load
// errors that name their cause, and a ring buffer read with its per-CPU
// lost counter (a record the programs had no room for is counted there).

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "queries/linux_util.hpp"

struct bpf_map;
struct ring_buffer;

namespace outpost::vql {

// Routes libbpf's messages to the log (debug) and forgets the warnings this
// thread kept so far: call before opening a skeleton. Any thread; each
// thread keeps its own (libbpf warns on the thread that loads).
void start_libbpf_load();
// Throws std::runtime_error "ebpf: <what>: <error> (libbpf: <its first
// warning on this thread since start_libbpf_load>)".
[[noreturn]] void fail_libbpf_load(const std::string& what, int error);

// Throws std::runtime_error unless `bytes` is a power of two from 4 KiB to 1 GiB.
void check_ring_buffer_bytes(uint64_t bytes);

// Thread: one reader (the sensor's); interrupt() from any thread.
class BpfRing {
 public:
  // A record, and what to add to its CLOCK_BOOTTIME stamps to make them wall-clock ones.
  using Handler = std::function<void(const void* data, size_t size, int64_t boot_to_wall_ns)>;
  // `events`: a BPF_MAP_TYPE_RINGBUF; `lost`: a per-CPU array of one u64.
  // Throws as fail_libbpf_load.
  BpfRing(const bpf_map* events, const bpf_map* lost);
  ~BpfRing();
  // Waits up to `timeout_ms` (-1: forever), then hands every record waiting
  // to `on_record`. False when interrupted.
  bool read(int timeout_ms, const Handler& on_record);
  // Records lost since the last call.
  uint64_t take_lost();
  void interrupt() const;

 private:
  static int on_record(void* self, void* data, size_t size);

  struct RingDeleter {
    void operator()(ring_buffer* r) const;
  };
  std::unique_ptr<ring_buffer, RingDeleter> ring_;
  const bpf_map* lost_;
  const Handler* handler_ = nullptr;  // during read()
  std::optional<int64_t> wall_offset_;  // once per read(), when records came
  kj::AutoCloseFd wake_;
  int cpus_ = 0;
  uint64_t lost_seen_ = 0;
};

}  // namespace outpost::vql
