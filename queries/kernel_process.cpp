// What the process event backends share, and the eBPF backend (the proc
// connector's is proc_connector.cpp).

#include "queries/kernel_process.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <climits>
#include <fstream>
#include <mutex>
#include <optional>
#include <stdexcept>

#include "queries/bpf_ring.hpp"
#include "queries/linux_util.hpp"

#include <linux/types.h>  // process_event.h's __u32, as the kernel's headers spell it

#include "queries/bpf/outpost_process.skel.h"
#include "queries/bpf/process_event.h"

namespace outpost::vql {

const char* backend_name(ProcessBackend backend) {
  switch (backend) {
    case ProcessBackend::automatic: return "auto";
    case ProcessBackend::ebpf: return "ebpf";
    case ProcessBackend::proc_connector: return "proc_connector";
  }
  return "?";
}

bool parse_backend(const std::string& text, ProcessBackend& out) {
  for (auto b : {ProcessBackend::automatic, ProcessBackend::ebpf, ProcessBackend::proc_connector})
    if (text == backend_name(b)) {
      out = b;
      return true;
    }
  return false;
}

std::vector<std::string> missing_capabilities(const std::vector<int>& needed) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  std::vector<std::string> missing;
  bool known = ::syscall(SYS_capget, &header, data) == 0;
  for (int cap : needed) {
    bool has = known && cap / 32 < _LINUX_CAPABILITY_U32S_3 && (data[cap / 32].effective & (1u << (cap % 32)));
    if (has) continue;
    switch (cap) {
      case CAP_BPF: missing.push_back("CAP_BPF"); break;
      case CAP_PERFMON: missing.push_back("CAP_PERFMON"); break;
      case CAP_SYS_ADMIN: missing.push_back("CAP_SYS_ADMIN"); break;
      case CAP_NET_ADMIN: missing.push_back("CAP_NET_ADMIN"); break;
      default: missing.push_back("capability " + std::to_string(cap));
    }
  }
  return missing;
}

int64_t boot_to_wall_ns() { return clock_ns(CLOCK_REALTIME) - clock_ns(CLOCK_BOOTTIME); }

uint64_t process_start_wall_ns(uint64_t boottime_ns) {
  // /proc/stat's btime, as pslist() reads it: it moves with the clock (set,
  // stepped by NTP), so it is read again at most once a second.
  static std::mutex mutex;
  static int64_t btime_ns = 0;
  static std::optional<int64_t> read_at;
  int64_t btime;
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (int64_t now = clock_ns(CLOCK_MONOTONIC); !read_at || now - *read_at >= 1'000'000'000) {
      btime_ns = boot_time("/proc").value_or(0) * 1'000'000'000;
      read_at = now;
    }
    btime = btime_ns;
  }
  static const int64_t tick_ns = [] {
    long hz = ::sysconf(_SC_CLK_TCK);
    return int64_t{1'000'000'000} / (hz > 0 ? hz : 100);
  }();
  return static_cast<uint64_t>(btime + static_cast<int64_t>(boottime_ns) / tick_ns * tick_ns);
}

std::string ebpf_unavailable() {
  if (::access("/sys/kernel/btf/vmlinux", R_OK) != 0)
    return "ebpf: the kernel has no BTF (/sys/kernel/btf/vmlinux: " + errno_message(errno) +
           "; needs CONFIG_DEBUG_INFO_BTF)";
  // Capabilities in a user namespace other than the first are not the kernel's to load BPF.
  std::ifstream uid_map("/proc/self/uid_map");
  uint64_t inside = 1, outside = 1, count = 0;
  if (uid_map >> inside >> outside >> count && !(inside == 0 && outside == 0 && count == 4294967295u))
    return "ebpf: this process is in a user namespace (a container): only the host's can load programs";
  if (missing_capabilities({CAP_SYS_ADMIN}).empty()) return {};
  auto missing = missing_capabilities({CAP_BPF, CAP_PERFMON});
  if (missing.empty()) return {};
  std::string names;
  for (auto& m : missing) names += (names.empty() ? "" : " and ") + m;
  return "ebpf: needs root, or CAP_BPF and CAP_PERFMON: this process lacks " + names;
}

std::optional<ProcessBackend> likely_process_backend(const ProcessSourceOptions& options, std::string& why) {
  std::string ebpf = options.backend == ProcessBackend::proc_connector ? "" : ebpf_unavailable();
  if (options.backend != ProcessBackend::proc_connector && ebpf.empty()) return ProcessBackend::ebpf;
  if (options.backend != ProcessBackend::ebpf) {
    try {
      open_proc_connector_events(options);
      return ProcessBackend::proc_connector;
    } catch (const std::exception& e) {
      why = ebpf.empty() ? e.what() : ebpf + "; " + e.what();
      return std::nullopt;
    }
  }
  why = ebpf;
  return std::nullopt;
}

namespace {

// Path components leaf first, each ended by a NUL, as the programs write them.
std::string path_of(const char* data, uint32_t len) {
  std::vector<std::string_view> parts;
  for (auto part : split(std::string_view(data, len), '\0'))
    if (!part.empty()) parts.push_back(part);
  std::string path;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) path.append("/").append(*it);
  return path.empty() ? "/" : path;
}

struct SkeletonDeleter {
  void operator()(outpost_process* s) const { outpost_process__destroy(s); }
};

class EbpfSource final : public ProcessEventSource {
 public:
  explicit EbpfSource(const ProcessSourceOptions& options) {
    if (auto why = ebpf_unavailable(); !why.empty()) throw std::runtime_error(why);
    start_libbpf_load();
    skel_.reset(outpost_process__open());
    if (!skel_) fail_libbpf_load("opening the programs", errno);
    if (int err = bpf_map__set_max_entries(skel_->maps.events, static_cast<uint32_t>(options.ring_buffer_bytes)))
      fail_libbpf_load("sizing the ring buffer", -err);
    if (int err = outpost_process__load(skel_.get())) fail_libbpf_load("loading the programs", -err);
    if (int err = outpost_process__attach(skel_.get())) fail_libbpf_load("attaching the programs", -err);
    ring_ = std::make_unique<BpfRing>(skel_->maps.events, skel_->maps.lost);
  }

  ProcessBackend backend() const override { return ProcessBackend::ebpf; }

  bool read(std::vector<ProcessEvent>& out, int timeout_ms) override {
    return ring_->read(timeout_ms, [&](const void* data, size_t size, int64_t wall) { add(data, size, wall, out); });
  }
  uint64_t take_lost() override { return ring_->take_lost(); }
  void interrupt() const override { ring_->interrupt(); }

 private:
  void add(const void* data, size_t size, int64_t wall_offset, std::vector<ProcessEvent>& out) {
    auto r = static_cast<const outpost_process_event*>(data);
    constexpr size_t header = offsetof(outpost_process_event, data);
    if (size < header) return;  // cannot happen: the programs write at least the header
    ProcessEvent e;
    e.kind = r->kind == OUTPOST_EXEC ? ProcessEvent::Kind::exec
             : r->kind == OUTPOST_FORK ? ProcessEvent::Kind::fork
                                       : ProcessEvent::Kind::exit;
    e.time_ns = static_cast<uint64_t>(static_cast<int64_t>(r->time_ns) + wall_offset);
    e.pid = static_cast<int32_t>(r->pid);
    e.tid = static_cast<int32_t>(r->tid);
    e.ppid = static_cast<int32_t>(r->ppid);
    e.uid = r->uid;
    e.gid = r->gid;
    e.start_ns = process_start_wall_ns(r->start_ns);
    e.parent_start_ns = process_start_wall_ns(r->parent_start_ns);
    e.comm.assign(r->comm, strnlen(r->comm, sizeof r->comm));
    e.status = r->exit_code;
    if (e.kind == ProcessEvent::Kind::exec) {
      size_t lens[] = {r->filename_len, r->exe_len, r->cwd_len, r->args_len};
      size_t total = 0;
      for (auto len : lens) total += len;
      if (total > size - header) return;  // cannot happen: the lengths count what was written
      const char* p = r->data;
      e.filename.assign(p, strnlen(p, lens[0]));
      p += lens[0];
      e.exe = path_of(p, r->exe_len);
      p += lens[1];
      e.cwd = path_of(p, r->cwd_len);
      p += lens[2];
      std::string_view args(p, lens[3]);
      if (!args.empty() && args.back() == '\0') args.remove_suffix(1);
      if (lens[3] > 0)
        for (auto arg : split(args, '\0')) e.argv.emplace_back(arg);
      e.argv_cut = r->flags & OUTPOST_CUT_ARGS;
      e.path_cut = r->flags & OUTPOST_CUT_PATH;
    }
    out.push_back(std::move(e));
  }

  std::unique_ptr<outpost_process, SkeletonDeleter> skel_;
  std::unique_ptr<BpfRing> ring_;
};

}  // namespace

std::unique_ptr<ProcessEventSource> open_ebpf_process_events(const ProcessSourceOptions& options) {
  check_ring_buffer_bytes(options.ring_buffer_bytes);
  return std::make_unique<EbpfSource>(options);
}

std::unique_ptr<ProcessEventSource> open_process_events(const ProcessSourceOptions& options) {
  switch (options.backend) {
    case ProcessBackend::ebpf: return open_ebpf_process_events(options);
    case ProcessBackend::proc_connector: return open_proc_connector_events(options);
    case ProcessBackend::automatic: break;
  }
  std::string why_not_ebpf;
  try {
    return open_ebpf_process_events(options);
  } catch (const std::exception& e) {
    why_not_ebpf = e.what();
  }
  try {
    auto source = open_proc_connector_events(options);
    spdlog::warn("process events from the proc connector: {}", why_not_ebpf);
    return source;
  } catch (const std::exception& e) {
    throw std::runtime_error(why_not_ebpf + "; " + e.what());
  }
}

}  // namespace outpost::vql
