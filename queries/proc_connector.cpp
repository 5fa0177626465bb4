// The proc_connector backend of kernel_process.hpp: the kernel's netlink
// process connector (drivers/connector/cn_proc.c) names the processes; the
// rest is read from /proc when the event is read. A lost message shows as a
// gap in its CPU's sequence numbers, so it is counted when that CPU's next
// message arrives.

#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

#include <climits>
#include <cstring>
#include <iterator>
#include <stdexcept>
#include <unordered_map>

#include "queries/kernel_process.hpp"
#include "queries/linux_util.hpp"

namespace outpost::vql {

namespace {

constexpr size_t kMaxArgv = 4096;
constexpr int kMaxBatch = 4096;  // messages per read(): a busy host is read in batches

[[noreturn]] void fail(const std::string& what, int error) {
  throw std::runtime_error("proc_connector: " + what + ": " + errno_message(error));
}

// A file of the /proc/<pid> directory open as `dir`: that process's, or a
// failure once it is gone, whoever has its pid now.
std::optional<std::string> read_at(int dir, const char* name, size_t max) {
  kj::AutoCloseFd fd(::openat(dir, name, O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (fd == nullptr) return std::nullopt;
  std::string data(max, '\0');
  size_t size = 0;
  for (ssize_t n; size < max && (n = read_retry(fd.get(), data.data() + size, max - size)) != 0;) {
    if (n < 0) return std::nullopt;
    size += static_cast<size_t>(n);
  }
  data.resize(size);
  return data;
}

std::optional<std::string> link_at(int dir, const char* name) {
  char buf[PATH_MAX];
  ssize_t n = ::readlinkat(dir, name, buf, sizeof buf);
  return n < 0 ? std::nullopt : std::optional<std::string>(std::string(buf, static_cast<size_t>(n)));
}

std::string trim_newline(std::string text) {
  if (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

struct Proc {
  kj::AutoCloseFd dir;
  int32_t ppid = 0;
  uint64_t start_wall_ns = 0;
};

// /proc/<pid>, if the process there started by `event_boot_ns` (CLOCK_BOOTTIME):
// one started later reuses the pid of the process the event is about.
std::optional<Proc> open_proc(int32_t pid, uint64_t event_boot_ns) {
  static const uint64_t hz = ::sysconf(_SC_CLK_TCK) > 0 ? ::sysconf(_SC_CLK_TCK) : 100;
  Proc proc{kj::AutoCloseFd(::open(("/proc/" + std::to_string(pid)).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC))};
  if (pid <= 0 || proc.dir == nullptr) return std::nullopt;
  auto stat = read_at(proc.dir.get(), "stat", 4096);
  size_t close = stat ? stat->rfind(')') : std::string::npos;  // comm may hold spaces and ')'
  if (close == std::string::npos) return std::nullopt;
  auto f = split_ws(std::string_view(*stat).substr(close + 1));  // f[k] is field k+3 of proc(5)
  auto ppid = f.size() >= 20 ? parse_number<int32_t>(f[1]) : std::nullopt;
  auto ticks = f.size() >= 20 ? parse_number<uint64_t>(f[19]) : std::nullopt;  // starttime
  if (!ppid || !ticks) return std::nullopt;
  uint64_t start_boot_ns = *ticks / hz * 1'000'000'000 + *ticks % hz * 1'000'000'000 / hz;
  if (start_boot_ns > event_boot_ns) return std::nullopt;
  proc.ppid = *ppid;
  proc.start_wall_ns = process_start_wall_ns(start_boot_ns);
  return proc;
}

// The first number of status's `key` line (Uid: real effective saved fs).
int64_t status_id(const std::string& status, std::string_view key) {
  for (auto line : split(status, '\n')) {
    auto f = split_ws(line);
    if (f.size() >= 2 && f[0] == key) return parse_number<uint32_t>(f[1]).value_or(-1);
  }
  return -1;
}

void read_exec(ProcessEvent& e, uint64_t event_boot_ns) {
  auto proc = open_proc(e.pid, event_boot_ns);
  e.partial = true;
  if (!proc) return;
  e.ppid = proc->ppid;
  e.start_ns = proc->start_wall_ns;
  if (auto parent = open_proc(e.ppid, event_boot_ns)) e.parent_start_ns = parent->start_wall_ns;
  int dir = proc->dir.get();
  auto cmdline = read_at(dir, "cmdline", kMaxArgv + 1);
  auto exe = link_at(dir, "exe"), cwd = link_at(dir, "cwd");
  auto comm = read_at(dir, "comm", 64), status = read_at(dir, "status", 4096);  // Uid: and Gid: come early
  e.partial = !cmdline || !exe || !cwd || !comm || !status;  // a zombie has an empty cmdline and no exe
  if (cmdline) {
    e.argv_cut = cmdline->size() > kMaxArgv;
    cmdline->resize(std::min(cmdline->size(), kMaxArgv));
    auto args = split(*cmdline, '\0');
    if (!e.argv_cut && args.back().empty()) args.pop_back();  // after the NUL ending the last argument
    e.argv.assign(args.begin(), args.end());
  }
  if (exe) e.exe = e.filename = *exe;  // the connector does not carry execve's filename
  if (cwd) e.cwd = *cwd;
  if (comm) e.comm = trim_newline(*comm);
  if (status) {
    e.uid = status_id(*status, "Uid:");
    e.gid = status_id(*status, "Gid:");
  }
}

class ProcConnectorSource final : public ProcessEventSource {
 public:
  explicit ProcConnectorSource(uint64_t receive_buffer)
      : socket_(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_CONNECTOR)),
        wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (socket_ == nullptr && (errno == EPROTONOSUPPORT || errno == ENOENT))
      fail("the kernel has no netlink connector (CONFIG_CONNECTOR)", errno);
    if (socket_ == nullptr) fail("socket(NETLINK_CONNECTOR)", errno);
    if (wake_ == nullptr) fail("eventfd", errno);
    int size = static_cast<int>(std::min<uint64_t>(receive_buffer, INT_MAX));
    if (::setsockopt(socket_.get(), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0 &&
        ::setsockopt(socket_.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size) != 0)
      fail("setsockopt(SO_RCVBUF)", errno);
    sockaddr_nl self{};
    self.nl_family = AF_NETLINK;
    self.nl_groups = CN_IDX_PROC;
    auto* addr = reinterpret_cast<sockaddr*>(&self);
    socklen_t self_len = sizeof self;
    if (::bind(socket_.get(), addr, sizeof self) != 0)  // EPERM without CAP_NET_ADMIN before Linux 6.6
      fail(errno == EPERM ? "listening needs CAP_NET_ADMIN" : "bind(CN_IDX_PROC)", errno);
    if (::getsockname(socket_.get(), addr, &self_len) != 0) fail("getsockname", errno);
    port_ = self.nl_pid;
    if (int error = send_op(PROC_CN_MCAST_LISTEN); error == ECONNREFUSED)
      fail("the process connector is only in the initial network namespace", error);
    else if (error)
      fail("sending PROC_CN_MCAST_LISTEN", error);
    // The kernel answers LISTEN before sendto() returns (waited for a second
    // all the same); it ignores it without an answer in other namespaces.
    pollfd fd = {socket_.get(), POLLIN, 0};
    int64_t end = clock_ns(CLOCK_MONOTONIC) + 1'000'000'000;
    for (int64_t left = 1; awaiting_ack_ && left > 0; left = end - clock_ns(CLOCK_MONOTONIC))
      if (::poll(&fd, 1, static_cast<int>(left / 1'000'000) + 1) > 0) receive(pending_);
    if (awaiting_ack_)
      throw std::runtime_error(
          "proc_connector: the kernel did not answer PROC_CN_MCAST_LISTEN (it ignores it from "
          "outside the initial user and pid namespaces, or has no CONFIG_PROC_EVENTS)");
    take_baselines();
  }
  ~ProcConnectorSource() override { send_op(PROC_CN_MCAST_IGNORE); }

  ProcessBackend backend() const override { return ProcessBackend::proc_connector; }

  bool read(std::vector<ProcessEvent>& out, int timeout_ms) override {
    bool had_pending = !pending_.empty();
    if (had_pending) {
      out.insert(out.end(), std::make_move_iterator(pending_.begin()),
                 std::make_move_iterator(pending_.end()));
      pending_.clear();
      timeout_ms = 0;
    }
    pollfd fds[2] = {{socket_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    int ready = ::poll(fds, 2, timeout_ms);
    if (ready < 0 && errno != EINTR) fail("poll", errno);
    if (ready > 0 && (fds[1].revents & POLLIN)) {
      uint64_t count;
      [[maybe_unused]] ssize_t n = ::read(wake_.get(), &count, sizeof count);  // resets the count to 0
      return had_pending;  // events handed over are not to be dropped by the caller
    }
    if (ready > 0 && fds[0].revents) receive(out);  // POLLERR: an overflow, which recv() reports
    return true;
  }

  uint64_t take_lost() override { return std::exchange(lost_, 0); }

  void interrupt() const override {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof one);  // fails only when the count is full
  }

 private:
  // 0, or the errno of sending `op` to the process connector.
  int send_op(proc_cn_mcast_op op) const {
    alignas(nlmsghdr) char buf[NLMSG_SPACE(sizeof(cn_msg) + sizeof op)] = {};
    auto* nlh = reinterpret_cast<nlmsghdr*>(buf);
    nlh->nlmsg_len = NLMSG_LENGTH(sizeof(cn_msg) + sizeof op);
    nlh->nlmsg_type = NLMSG_DONE;
    cn_msg cn{};
    cn.id = {CN_IDX_PROC, CN_VAL_PROC};
    cn.ack = port_;  // the kernel's answer carries ack + 1: ours, not another listener's
    cn.len = sizeof op;
    std::memcpy(NLMSG_DATA(nlh), &cn, sizeof cn);
    std::memcpy(static_cast<char*>(NLMSG_DATA(nlh)) + sizeof cn, &op, sizeof op);
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    auto* to = reinterpret_cast<sockaddr*>(&kernel);
    return ::sendto(socket_.get(), buf, nlh->nlmsg_len, 0, to, sizeof kernel) < 0 ? errno : 0;
  }

  // A loss shows as a gap after a CPU's last message seen: a CPU whose first
  // message was lost would hide it. So each CPU gets a message now: a child
  // started and ended there (its fork and exit are numbered on that CPU).
  void take_baselines() {
    cpu_set_t allowed;
    if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (!CPU_ISSET(cpu, &allowed)) continue;
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpu, &one);
      if (::sched_setaffinity(0, sizeof one, &one) != 0) continue;
      if (pid_t child = ::fork(); child == 0) {
        ::_exit(0);
      } else if (child > 0) {
        ::waitpid(child, nullptr, 0);
      }
    }
    ::sched_setaffinity(0, sizeof allowed, &allowed);
    pollfd fd = {socket_.get(), POLLIN, 0};
    int64_t end = clock_ns(CLOCK_MONOTONIC) + 1'000'000'000;
    while (CPU_COUNT(&allowed) > baselines() && clock_ns(CLOCK_MONOTONIC) < end)
      if (::poll(&fd, 1, 100) > 0) receive(pending_);
  }

  int baselines() const {
    int n = 0;
    for (auto& last : last_seq_) n += last.has_value();
    return n;
  }

  // The messages waiting, up to kMaxBatch.
  void receive(std::vector<ProcessEvent>& out) {
    // cn_proc stamps events with ktime_get_ns(): CLOCK_MONOTONIC, not boot time.
    int64_t mono = clock_ns(CLOCK_MONOTONIC);
    int64_t to_wall = clock_ns(CLOCK_REALTIME) - mono, to_boot = clock_ns(CLOCK_BOOTTIME) - mono;
    for (int i = 0; i < kMaxBatch; ++i) {
      sockaddr_nl from{};
      socklen_t from_len = sizeof from;
      ssize_t n = ::recvfrom(socket_.get(), buffer_.data(), buffer_.size(), 0,
                             reinterpret_cast<sockaddr*>(&from), &from_len);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n < 0 && (errno == EINTR || errno == ENOBUFS)) continue;  // ENOBUFS: overflowed, seen in seq gaps
      if (n < 0) fail("recv", errno);
      if (from.nl_pid != 0) continue;  // not the kernel: any process may send to our port
      auto len = static_cast<unsigned>(n);
      for (auto* nlh = reinterpret_cast<nlmsghdr*>(buffer_.data()); NLMSG_OK(nlh, len);
           nlh = NLMSG_NEXT(nlh, len))
        handle(nlh, out, to_wall, to_boot);
    }
  }

  void handle(nlmsghdr* nlh, std::vector<ProcessEvent>& out, int64_t to_wall, int64_t to_boot) {
    if (nlh->nlmsg_type == NLMSG_ERROR) {
      nlmsgerr error{};
      if (nlh->nlmsg_len >= NLMSG_LENGTH(sizeof error)) std::memcpy(&error, NLMSG_DATA(nlh), sizeof error);
      if (error.error) fail("the kernel refused a request", -error.error);
      return;
    }
    cn_msg cn;
    proc_event ev;  // copied out: in the message it is only 4-byte aligned
    if (nlh->nlmsg_len < NLMSG_LENGTH(sizeof cn + sizeof ev)) return;
    std::memcpy(&cn, NLMSG_DATA(nlh), sizeof cn);
    if (cn.id.idx != CN_IDX_PROC || cn.id.val != CN_VAL_PROC || cn.len < sizeof ev) return;
    std::memcpy(&ev, static_cast<char*>(NLMSG_DATA(nlh)) + sizeof cn, sizeof ev);
    count_gap(ev.cpu, cn.seq);
    ProcessEvent e;
    e.time_ns = static_cast<uint64_t>(static_cast<int64_t>(ev.timestamp_ns) + to_wall);
    auto boot_ns = static_cast<uint64_t>(static_cast<int64_t>(ev.timestamp_ns) + to_boot);
    const auto& d = ev.event_data;
    switch (ev.what) {
      case proc_event::PROC_EVENT_NONE:  // an answer to LISTEN or IGNORE, maybe another listener's
        if (awaiting_ack_ && cn.ack == port_ + 1) {
          awaiting_ack_ = false;
          int error = static_cast<int>(d.ack.err);
          if (error)
            fail(error == EPERM ? "listening needs CAP_NET_ADMIN" : "the kernel refused LISTEN", error);
        }
        return;
      case proc_event::PROC_EVENT_EXEC:
        e.kind = ProcessEvent::Kind::exec;
        e.pid = d.exec.process_tgid;
        e.tid = d.exec.process_pid;
        read_exec(e, boot_ns);
        if (auto it = known_.find(e.pid); it != known_.end()) {  // gone from /proc already: what its fork told
          if (e.ppid == 0) e.ppid = it->second.ppid;
          if (e.start_ns == 0) e.start_ns = it->second.start_ns;
        }
        break;
      case proc_event::PROC_EVENT_FORK: {
        if (d.fork.child_pid != d.fork.child_tgid) return;  // a new thread
        e.kind = ProcessEvent::Kind::fork;
        e.pid = d.fork.child_tgid;
        e.tid = d.fork.child_pid;
        e.ppid = d.fork.parent_tgid;
        auto child = open_proc(e.pid, boot_ns);
        auto comm = child ? read_at(child->dir.get(), "comm", 64) : std::nullopt;
        e.partial = !comm;
        if (child) e.start_ns = child->start_wall_ns;
        if (comm) e.comm = trim_newline(*comm);
        if (auto parent = open_proc(e.ppid, boot_ns)) e.parent_start_ns = parent->start_wall_ns;
        break;
      }
      case proc_event::PROC_EVENT_EXIT:
        if (d.exit.process_pid != d.exit.process_tgid) return;  // a thread other than the main one
        e.kind = ProcessEvent::Kind::exit;
        e.pid = d.exit.process_tgid;
        e.tid = d.exit.process_pid;
        e.ppid = d.exit.parent_tgid;
        e.partial = e.ppid == 0;  // the kernel names no parent once the parent has reaped the process
        e.status = static_cast<int32_t>(d.exit.exit_code);  // the wait status: code << 8 | signal
        if (auto it = known_.find(e.pid); it != known_.end()) {  // what its fork or exec told
          e.comm = it->second.comm;
          e.uid = it->second.uid;
          e.gid = it->second.gid;
          e.start_ns = it->second.start_ns;
          known_.erase(it);
        }
        break;
      default:
        return;
    }
    if (e.kind != ProcessEvent::Kind::exit) remember(e);
    out.push_back(std::move(e));
  }

  // A process's name, parent, user and start, from its fork or exec, for its
  // exit (gone from /proc by then) and an exec /proc no longer shows. Bounded (~100 bytes each): beyond kMaxKnown
  // processes started since the connector opened and still running, some are
  // forgotten, and their exits come without these.
  struct Known {
    std::string comm;
    int32_t ppid = 0;
    int64_t uid = -1, gid = -1;
    uint64_t start_ns = 0;
  };
  static constexpr size_t kMaxKnown = 65536;

  void remember(const ProcessEvent& e) {
    auto& k = known_[e.pid];
    if (e.kind == ProcessEvent::Kind::fork) k = Known{};  // a new process: its pid's last one is gone
    if (!e.comm.empty()) k.comm = e.comm;
    if (e.ppid) k.ppid = e.ppid;
    if (e.uid >= 0) k.uid = e.uid;
    if (e.gid >= 0) k.gid = e.gid;
    if (e.start_ns) k.start_ns = e.start_ns;
    if (known_.size() > kMaxKnown) known_.erase(known_.begin());
  }

  // cn_msg.seq counts each CPU's messages of every kind: a gap is messages lost.
  void count_gap(uint32_t cpu, uint32_t seq) {
    if (cpu >= 65536) return;
    if (cpu >= last_seq_.size()) last_seq_.resize(cpu + 1);
    auto& last = last_seq_[cpu];
    uint32_t gap = last ? seq - *last - 1 : 0;
    if (gap <= (uint32_t{1} << 30)) lost_ += gap;  // larger: a repeat or a reset
    last = seq;
  }

  kj::AutoCloseFd socket_, wake_;
  uint32_t port_ = 0;
  bool awaiting_ack_ = true;
  std::vector<char> buffer_ = std::vector<char>(64 << 10);
  std::vector<ProcessEvent> pending_;  // received while opening
  std::vector<std::optional<uint32_t>> last_seq_;
  std::unordered_map<int32_t, Known> known_;
  uint64_t lost_ = 0;
};

}  // namespace

std::unique_ptr<ProcessEventSource> open_proc_connector_events(const ProcessSourceOptions& options) {
  return std::make_unique<ProcConnectorSource>(options.socket_buffer_bytes);
}

}  // namespace outpost::vql
