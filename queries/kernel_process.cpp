// What the process event backends share, and the eBPF backend (the proc
// connector's is proc_connector.cpp).

#include "queries/kernel_process.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/capability.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <climits>
#include <fstream>
#include <mutex>
#include <optional>
#include <stdexcept>

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

// libbpf's messages go to the log at debug level; the last warning is kept
// for the error a failed load throws.
std::mutex libbpf_mutex;
std::string libbpf_last_warning;  // the first since it was last taken

int libbpf_print(enum libbpf_print_level level, const char* format, va_list args) {
  char text[1024];
  int n = std::vsnprintf(text, sizeof text, format, args);
  std::string line(text, n > 0 ? std::min<size_t>(static_cast<size_t>(n), sizeof text - 1) : 0);
  while (!line.empty() && line.back() == '\n') line.pop_back();
  if (line.rfind("libbpf: ", 0) == 0) line.erase(0, 8);
  spdlog::debug("libbpf: {}", line);
  // The first warning of a failed load names its cause; the last ones only that it failed.
  if (level == LIBBPF_WARN) {
    std::lock_guard<std::mutex> lock(libbpf_mutex);
    if (libbpf_last_warning.empty()) libbpf_last_warning = line;
  }
  return 0;
}

std::string take_libbpf_warning() {
  std::lock_guard<std::mutex> lock(libbpf_mutex);
  return std::exchange(libbpf_last_warning, {});
}

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
struct RingDeleter {
  void operator()(ring_buffer* r) const { ring_buffer__free(r); }
};

class EbpfSource final : public ProcessEventSource {
 public:
  explicit EbpfSource(const ProcessSourceOptions& options) {
    libbpf_set_print(libbpf_print);
    if (auto why = ebpf_unavailable(); !why.empty()) throw std::runtime_error(why);
    take_libbpf_warning();  // this load's warnings from here on
    skel_.reset(outpost_process__open());
    if (!skel_) fail("opening the programs", errno);
    if (int err = bpf_map__set_max_entries(skel_->maps.events, static_cast<uint32_t>(options.ring_buffer_bytes)))
      fail("sizing the ring buffer", -err);
    if (int err = outpost_process__load(skel_.get())) fail("loading the programs", -err);
    if (int err = outpost_process__attach(skel_.get())) fail("attaching the programs", -err);
    ring_.reset(ring_buffer__new(bpf_map__fd(skel_->maps.events), &EbpfSource::on_record, this, nullptr));
    if (!ring_) fail("opening the ring buffer", errno);
    wake_ = Fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake_) fail("creating an eventfd", errno);
    cpus_ = libbpf_num_possible_cpus();
    if (cpus_ <= 0) fail("counting the CPUs", -cpus_);
  }

  ProcessBackend backend() const override { return ProcessBackend::ebpf; }

  bool read(std::vector<ProcessEvent>& out, int timeout_ms) override {
    pollfd fds[2] = {{ring_buffer__epoll_fd(ring_.get()), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    int n = ::poll(fds, 2, timeout_ms);
    if (n < 0 && errno != EINTR) throw std::runtime_error("ebpf: poll: " + errno_message(errno));
    if (n > 0 && (fds[1].revents & POLLIN)) {
      uint64_t count;
      [[maybe_unused]] auto r = ::read(wake_.get(), &count, sizeof count);
      return false;
    }
    out_ = &out;
    wall_offset_ = boot_to_wall_ns();
    int consumed = ring_buffer__consume(ring_.get());
    out_ = nullptr;
    if (consumed < 0) throw std::runtime_error("ebpf: reading the ring buffer: " + errno_message(-consumed));
    return true;
  }

  uint64_t take_lost() override {
    std::vector<uint64_t> per_cpu(static_cast<size_t>(cpus_));
    uint32_t zero = 0;
    if (bpf_map__lookup_elem(skel_->maps.lost, &zero, sizeof zero, per_cpu.data(),
                             per_cpu.size() * sizeof(uint64_t), 0) != 0)
      return 0;
    uint64_t total = 0;
    for (auto n : per_cpu) total += n;
    return total - std::exchange(lost_seen_, total);
  }

  void interrupt() const override {
    uint64_t one = 1;
    [[maybe_unused]] auto r = ::write(wake_.get(), &one, sizeof one);
  }

 private:
  [[noreturn]] void fail(const std::string& what, int error) {
    std::string warning = take_libbpf_warning();
    throw std::runtime_error("ebpf: " + what + ": " + errno_message(error) +
                             (warning.empty() ? "" : " (libbpf: " + warning + ")"));
  }

  static int on_record(void* self, void* data, size_t size) {
    static_cast<EbpfSource*>(self)->add(static_cast<const outpost_process_event*>(data), size);
    return 0;
  }

  void add(const outpost_process_event* r, size_t size) {
    constexpr size_t header = offsetof(outpost_process_event, data);
    if (size < header) return;  // cannot happen: the programs write at least the header
    ProcessEvent e;
    e.kind = r->kind == OUTPOST_EXEC ? ProcessEvent::Kind::exec
             : r->kind == OUTPOST_FORK ? ProcessEvent::Kind::fork
                                       : ProcessEvent::Kind::exit;
    e.time_ns = static_cast<uint64_t>(static_cast<int64_t>(r->time_ns) + wall_offset_);
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
    out_->push_back(std::move(e));
  }

  std::unique_ptr<outpost_process, SkeletonDeleter> skel_;
  std::unique_ptr<ring_buffer, RingDeleter> ring_;
  Fd wake_;
  int cpus_ = 0;
  uint64_t lost_seen_ = 0;
  std::vector<ProcessEvent>* out_ = nullptr;  // set during read()
  int64_t wall_offset_ = 0;
};

}  // namespace

std::unique_ptr<ProcessEventSource> open_ebpf_process_events(const ProcessSourceOptions& options) {
  auto bytes = options.ring_buffer_bytes;
  if (bytes < 4096 || (bytes & (bytes - 1)) != 0 || bytes > (1ull << 30))
    throw std::runtime_error("ebpf: the ring buffer's size must be a power of two from 4 KiB to 1 GiB, not " +
                             std::to_string(bytes));
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
