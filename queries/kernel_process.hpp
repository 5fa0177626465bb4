#pragma once
// Process events from the kernel: every exec, fork and exit, however short
// the process lived. Two backends:
//   ebpf            programs on the scheduler's tracepoints (bpf/process.bpf.c)
//                   writing to a ring buffer; full records (argv, executable,
//                   working directory) taken in the kernel at the event.
//   proc_connector  the netlink process connector, where BPF cannot load (no
//                   BTF, no CAP_BPF, an old kernel): pids, parent, exit code
//                   from the kernel; argv, executable, working directory and
//                   user read from /proc when the event is read, so missing
//                   (`partial`) for a process already gone by then.
// Neither loses an event silently: a full ring buffer (ebpf) or socket
// buffer (proc connector, counted from its per-CPU sequence numbers, when
// that CPU's next message arrives) is counted in take_lost().

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace outpost::vql {

struct ProcessEvent {
  enum class Kind { exec, fork, exit };
  Kind kind = Kind::exec;
  uint64_t time_ns = 0;  // wall clock, ns since the epoch
  int32_t pid = 0;       // the process (thread group id)
  int32_t tid = 0;       // the thread that caused it
  int32_t ppid = 0;      // the parent process
  int64_t uid = -1;      // real user and group; -1 unknown
  int64_t gid = -1;
  uint64_t start_ns = 0;         // wall clock; 0 unknown
  uint64_t parent_start_ns = 0;  // wall clock; 0 unknown
  std::string comm;              // the kernel's task name (15 bytes at most)
  // exec only
  std::string filename;  // as given to execve (may be relative)
  std::string exe;       // the executable's path
  std::string cwd;
  std::vector<std::string> argv;
  bool argv_cut = false;  // longer than the 4 KiB kept
  bool path_cut = false;  // a path deeper than the 24 components walked: its root side is cut
  // exit only: the wait status, as waitpid() would see it
  int32_t status = 0;
  bool partial = false;  // some fields could not be read (see above)
};

enum class ProcessBackend { automatic, ebpf, proc_connector };
const char* backend_name(ProcessBackend backend);
// "auto", "ebpf", "proc_connector"; false for anything else.
bool parse_backend(const std::string& text, ProcessBackend& out);

// Thread: one thread at a time (the sensor's).
class ProcessEventSource {
 public:
  virtual ~ProcessEventSource() noexcept(false) = default;  // as RowStream's (plugin.hpp)
  virtual ProcessBackend backend() const = 0;
  // Waits up to `timeout_ms` (-1: forever) for events, then appends every
  // event waiting, without blocking further. Returns false when interrupted.
  virtual bool read(std::vector<ProcessEvent>& out, int timeout_ms) = 0;
  // Events the kernel could not hand over since the last call.
  virtual uint64_t take_lost() = 0;
  // Ends a read() waiting on another thread, now or at its next wait. Safe
  // from any thread.
  virtual void interrupt() const = 0;
};

struct ProcessSourceOptions {
  ProcessBackend backend = ProcessBackend::automatic;
  // ebpf: a power of two, at least a page. Mapped twice into the agent (RSS
  // counts it so once written through): 1 MiB holds ~5,000 exec records.
  uint64_t ring_buffer_bytes = 1 << 20;
  uint64_t socket_buffer_bytes = 8 << 20;   // proc_connector: its socket's receive buffer
};

// The backend asked for; `automatic`: ebpf, else the proc connector. Throws
// std::runtime_error naming each backend tried and why it could not start
// ("ebpf: needs CAP_BPF and CAP_PERFMON (or root): this process lacks CAP_BPF;
// proc_connector: ...").
std::unique_ptr<ProcessEventSource> open_process_events(const ProcessSourceOptions& options);

// The backends, for open_process_events and tests. Each throws
// std::runtime_error with its reason.
std::unique_ptr<ProcessEventSource> open_ebpf_process_events(const ProcessSourceOptions& options);
std::unique_ptr<ProcessEventSource> open_proc_connector_events(const ProcessSourceOptions& options);

// Why eBPF cannot load here, judged without loading (BTF, capabilities);
// empty when nothing stands in its way.
std::string ebpf_unavailable();
// The backend open_process_events(options) would start, judged without
// loading programs: eBPF by its prerequisites (a load the verifier then
// refuses falls back to the proc connector), the proc connector by opening it
// for a moment. Nullopt, and `why`, when neither could start.
std::optional<ProcessBackend> likely_process_backend(const ProcessSourceOptions& options, std::string& why);

// The capabilities `needed` (e.g. {CAP_BPF, CAP_PERFMON}) this process lacks
// in its effective set, by name ("CAP_BPF"); empty when it has them all.
std::vector<std::string> missing_capabilities(const std::vector<int>& needed);

// CLOCK_REALTIME minus CLOCK_BOOTTIME, now: adds to a boot-time stamp to
// make it a wall-clock one.
int64_t boot_to_wall_ns();
// Wall-clock ns of a process start given as CLOCK_BOOTTIME ns, computed as
// pslist() computes CreateTime (btime + whole clock ticks), so that the two
// agree exactly.
uint64_t process_start_wall_ns(uint64_t boottime_ns);

}  // namespace outpost::vql
