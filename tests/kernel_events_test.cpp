// Process events from the kernel, through both backends (eBPF and the proc
// connector), with real short-lived processes. A backend that cannot start
// here (not root, no BTF) is skipped with its reason printed.

#include <gtest/gtest.h>
#include <linux/capability.h>
#include <sched.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <caf/all.hpp>

#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <thread>

#include "actors/agent_config.hpp"
#include "queries/engine.hpp"
#include "queries/kernel_net.hpp"
#include "queries/kernel_process.hpp"
#include "queries/sensors.hpp"

extern char** environ;

namespace outpost::vql {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct Child {
  pid_t pid = 0;
  std::vector<std::string> argv;
  int code = 0;  // what it exits with
};

// Starts `n` processes, /bin/true and /bin/false in turn, each reaped before
// the next starts: each lives well under a millisecond of its own.
std::vector<Child> storm(int n, const std::string& tag) {
  std::vector<Child> children;
  for (int i = 0; i < n; ++i) {
    Child c;
    c.code = i % 2;
    c.argv = {c.code ? "/bin/false" : "/bin/true", tag, std::to_string(i)};
    std::vector<char*> argv;
    for (auto& a : c.argv) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&c.pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) continue;
    int status = 0;
    ::waitpid(c.pid, &status, 0);
    children.push_back(std::move(c));
  }
  return children;
}

// What a backend reported about each process.
struct Seen {
  std::optional<ProcessEvent> fork, exec, exit;
};

// Our children's events by pid: those whose parent is this process (the
// proc connector may not know the parent of an exec it read late or of an
// exit already reaped: taken too). The first of each kind counts: pids are
// reused (pid_max may be 32768), so a later event of the same pid is another
// process's. With `after_fork`, an event without a parent counts only after
// our fork of its pid: an earlier process of that pid may have exited unreaped.
void record(std::map<int32_t, Seen>& seen, const std::vector<ProcessEvent>& events, bool after_fork = true) {
  for (auto& e : events) {
    bool unknown_parent = e.kind != ProcessEvent::Kind::fork && e.ppid == 0 && e.partial;
    if (e.ppid != ::getpid() && !unknown_parent) continue;
    if (unknown_parent && after_fork && !(seen.count(e.pid) && seen[e.pid].fork)) continue;
    auto& s = seen[e.pid];
    auto& slot = e.kind == ProcessEvent::Kind::fork ? s.fork : e.kind == ProcessEvent::Kind::exec ? s.exec : s.exit;
    if (!slot) slot = e;
  }
}

// Reads until `done` says so or 30 s pass.
std::map<int32_t, Seen> read_until(ProcessEventSource& source, const std::function<bool(std::map<int32_t, Seen>&)>& done) {
  std::map<int32_t, Seen> seen;
  std::vector<ProcessEvent> events;
  for (auto deadline = Clock::now() + 30s; !done(seen) && Clock::now() < deadline;) {
    events.clear();
    source.read(events, 100);
    record(seen, events);
  }
  return seen;
}

std::unique_ptr<ProcessEventSource> open_or_skip(ProcessBackend backend, uint64_t ring = 8 << 20, std::string* why = nullptr) {
  try {
    return open_process_events({backend, ring});
  } catch (const std::exception& e) {
    if (why) *why = e.what();
    return nullptr;
  }
}

class KernelProcessEvents : public ::testing::TestWithParam<ProcessBackend> {};

TEST_P(KernelProcessEvents, AThousandSubMillisecondProcessesAreEachSeenStartingAndExiting) {
  std::string why;
  auto source = open_or_skip(GetParam(), 8 << 20, &why);
  if (!source) GTEST_SKIP() << why;
  ASSERT_EQ(source->backend(), GetParam());
  const std::string tag = "outpost-kernel-test-" + std::to_string(::getpid());
  std::vector<Child> children;
  std::atomic<bool> spawned{false};
  std::thread spawner([&] {
    children = storm(1000, tag);
    spawned = true;
  });
  // A process's exit comes after its fork and exec in the ring buffer.
  auto seen = read_until(*source, [&](std::map<int32_t, Seen>& s) {
    if (!spawned) return false;
    for (auto& c : children)
      if (!s[c.pid].exit) return false;
    return true;
  });
  spawner.join();
  ASSERT_EQ(children.size(), 1000u);
  const auto cwd = std::filesystem::current_path().string();
  size_t with_argv = 0, forks = 0, execs = 0, exits = 0, exits_with_start = 0;
  for (auto& c : children) {
    auto& s = seen[c.pid];
    SCOPED_TRACE("pid " + std::to_string(c.pid) + " " + c.argv[0] + " " + c.argv[2]);
    if (s.fork) {
      ++forks;
      EXPECT_EQ(s.fork->ppid, ::getpid());
    }
    if (s.exec) {
      ++execs;
      // What the proc connector could not read in time is missing (partial), never wrong.
      auto& e = *s.exec;
      EXPECT_TRUE(GetParam() == ProcessBackend::proc_connector || !e.partial);
      with_argv += !e.argv.empty();
      if (!e.argv.empty()) {
        EXPECT_EQ(e.argv, c.argv);
      }
      if (!e.exe.empty()) {
        EXPECT_EQ(e.exe, std::filesystem::canonical(c.argv[0]).string());
      }
      if (!e.cwd.empty()) {
        EXPECT_EQ(e.cwd, cwd);
      }
      if (e.ppid) {
        EXPECT_EQ(e.ppid, ::getpid());
      }
      if (e.uid >= 0) {
        EXPECT_EQ(e.uid, ::getuid());
      }
      if (e.gid >= 0) {
        EXPECT_EQ(e.gid, ::getgid());
      }
    }
    if (s.exit) {
      ++exits;
      exits_with_start += s.exit->start_ns != 0;
      if (s.fork && s.fork->start_ns && s.exit->start_ns) {
        EXPECT_EQ(s.exit->start_ns, s.fork->start_ns);  // the same process
      }
      EXPECT_TRUE(WIFEXITED(s.exit->status)) << s.exit->status;
      EXPECT_EQ(WEXITSTATUS(s.exit->status), c.code);
      if (!s.exit->partial || s.exit->ppid != 0) {
        EXPECT_EQ(s.exit->ppid, ::getpid());
      }
    }
  }
  uint64_t lost = source->take_lost();
  std::printf("%s: %zu forks, %zu execs (%zu with argv), %zu exits of 1000; %llu lost\n", backend_name(GetParam()),
              forks, execs, with_argv, exits, static_cast<unsigned long long>(lost));
  EXPECT_EQ(lost, 0u);
  EXPECT_EQ(forks, 1000u);
  EXPECT_EQ(execs, 1000u);
  EXPECT_EQ(exits, 1000u);
  // eBPF reads argv in the kernel at exec: all of them. The proc connector
  // reads /proc after the fact, so a process already gone has none.
  if (GetParam() == ProcessBackend::ebpf) {
    EXPECT_EQ(with_argv, 1000u);
  }
  // An exit's start time: eBPF reads it in the kernel; the proc connector
  // remembers it from the process's fork or exec, where /proc was read in time.
  std::printf("%zu exits with their process's start time\n", exits_with_start);
  if (GetParam() == ProcessBackend::ebpf) {
    EXPECT_EQ(exits_with_start, 1000u);
  } else {
    EXPECT_GT(exits_with_start, 0u);
  }
}

// Processes of 16 spinning threads ended by one of them (exit_group): the
// threads exit together on every CPU, several may see the process end, and
// one exit is reported.
TEST(KernelProcessEventsExit, AProcessOfManyThreadsEndedByOneIsReportedExitingOnce) {
  std::string why;
  auto source = open_or_skip(ProcessBackend::ebpf, 8 << 20, &why);
  if (!source) GTEST_SKIP() << why;
  std::set<pid_t> children;
  for (int i = 0; i < 300; ++i) {
    pid_t pid = ::fork();
    if (pid == 0) {
      // Static: clang's UBSan took the threads' calls on the forked child's
      // stack variable for calls on an object without room (object-size).
      static std::atomic<int> running{0};
      std::vector<std::thread> threads;
      for (int t = 0; t < 15; ++t)
        threads.emplace_back([] {
          ++running;
          for (;;) std::atomic_signal_fence(std::memory_order_seq_cst);
        });
      while (running < 15) std::this_thread::yield();
      // exit_group from a thread that is not the leader; the syscall itself,
      // as ASan's _exit() checks for leaks first (and may exit otherwise).
      std::thread([] { ::syscall(SYS_exit_group, 7); }).join();
    }
    ASSERT_GT(pid, 0);
    ::waitpid(pid, nullptr, 0);
    children.insert(pid);
  }
  std::map<pid_t, std::vector<ProcessEvent>> exits;
  std::vector<ProcessEvent> events;
  auto all_exited = [&] {
    for (auto pid : children)
      if (exits[pid].empty()) return false;
    return true;
  };
  for (auto deadline = Clock::now() + 10s; Clock::now() < deadline && !all_exited();) {
    events.clear();
    source->read(events, 100);
    for (auto& e : events)
      if (e.kind == ProcessEvent::Kind::exit && children.count(e.pid) && e.ppid == ::getpid()) exits[e.pid].push_back(e);
  }
  events.clear();
  source->read(events, 200);  // a second report would be here by now
  for (auto& e : events)
    if (e.kind == ProcessEvent::Kind::exit && children.count(e.pid) && e.ppid == ::getpid()) exits[e.pid].push_back(e);
  for (auto pid : children) {
    ASSERT_EQ(exits[pid].size(), 1u) << "pid " << pid;
    EXPECT_EQ(WEXITSTATUS(exits[pid][0].status), 7);
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, KernelProcessEvents,
                         ::testing::Values(ProcessBackend::ebpf, ProcessBackend::proc_connector),
                         [](const auto& info) { return std::string(backend_name(info.param)); });

// A kernel buffer of a page (the eBPF ring buffer; the proc connector's
// socket buffer) holds a few dozen records: a storm of 600 events read only
// afterwards must lose most of them, and each lost one is counted. The proc
// connector sees a loss in its CPU's next message, so one process is started
// on each CPU after the storm. Events of other processes (other tests run
// beside this one) only add to the lost count, so the exact count (delivered
// + lost = made) holds once the storm is alone, which it is tried three times
// to be.
class KernelProcessEventsLost : public ::testing::TestWithParam<ProcessBackend> {};

TEST_P(KernelProcessEventsLost, AStormLargerThanTheKernelBufferIsCountedExactly) {
  std::string why;
  ProcessSourceOptions options{GetParam(), 4096, 4096};
  std::unique_ptr<ProcessEventSource> source;
  try {
    source = open_process_events(options);
  } catch (const std::exception& e) {
    GTEST_SKIP() << e.what();
  }
  const std::string tag = "outpost-lost-test-" + std::to_string(::getpid());
  std::map<int32_t, Seen> seen;
  auto drain = [&] {
    std::vector<ProcessEvent> events;
    while (source->read(events, 0) && !events.empty()) {
      record(seen, events, false);  // a fork may be lost
      events.clear();
    }
  };
  cpu_set_t allowed;
  ASSERT_EQ(::sched_getaffinity(0, sizeof allowed, &allowed), 0);
  bool exact = false;
  // Every process's events share the buffer: another process's lost during
  // the storm make the count too high, never too low. A machine that is
  // busy (a build beside the tests) gets more tries at a quiet moment.
  constexpr int kAttempts = 10;
  for (int attempt = 0; attempt < kAttempts && !exact; ++attempt) {
    drain();
    source->take_lost();
    seen.clear();
    auto children = storm(200, tag);  // 600 events: fork, exec and exit each
    drain();
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {  // a process of its own on each CPU, read at once
      if (!CPU_ISSET(cpu, &allowed)) continue;
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpu, &one);
      ::sched_setaffinity(0, sizeof one, &one);
      storm(1, "marker");
      drain();
    }
    ::sched_setaffinity(0, sizeof allowed, &allowed);
    uint64_t delivered = 0;
    for (auto& c : children) delivered += !!seen[c.pid].fork + !!seen[c.pid].exec + !!seen[c.pid].exit;
    uint64_t lost = source->take_lost();
    std::printf("%s, attempt %d: %llu of our 600 events delivered, %llu lost\n", backend_name(GetParam()), attempt,
                static_cast<unsigned long long>(delivered), static_cast<unsigned long long>(lost));
    ASSERT_GT(lost, 0u) << "a page-sized buffer cannot hold 600 records";
    ASSERT_GE(delivered + lost, 3 * children.size()) << "events were lost without being counted";
    exact = delivered + lost == 3 * children.size();
  }
  EXPECT_TRUE(exact) << "the lost count exceeded the storm's " << kAttempts << " times (other processes' events?)";
}

INSTANTIATE_TEST_SUITE_P(Backends, KernelProcessEventsLost,
                         ::testing::Values(ProcessBackend::ebpf, ProcessBackend::proc_connector),
                         [](const auto& info) { return std::string(backend_name(info.param)); });

// What open_ebpf_process_events throws in a child process that has dropped
// `drop` from its capabilities (it stays uid 0: the capabilities are what the
// kernel checks). The proc connector needs none since Linux 6.6.
std::string error_without(const std::vector<int>& drop,
                          const std::function<void()>& open = [] { open_ebpf_process_events({}); }) {
  int fds[2];
  if (::pipe(fds) != 0) return "pipe failed";
  pid_t pid = ::fork();
  if (pid == 0) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
    ::syscall(SYS_capget, &header, data);
    for (int cap : drop) data[cap / 32].effective &= ~(1u << (cap % 32));
    std::string message = "opened";
    if (::syscall(SYS_capset, &header, data) != 0) {
      message = "capset failed";
    } else {
      try {
        open();
      } catch (const std::exception& e) {
        message = e.what();
      }
    }
    [[maybe_unused]] auto n = ::write(fds[1], message.data(), message.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string message;
  char buf[512];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) message.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  ::waitpid(pid, nullptr, 0);
  return message;
}

TEST(KernelProcessEventsPrivilege, EbpfNamesTheCapabilityItLacks) {
  std::string why;
  if (!open_or_skip(ProcessBackend::ebpf, 8 << 20, &why)) GTEST_SKIP() << why;
  EXPECT_EQ(error_without({CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON}),
            "ebpf: needs root, or CAP_BPF and CAP_PERFMON: this process lacks CAP_BPF and CAP_PERFMON");
  EXPECT_EQ(error_without({CAP_SYS_ADMIN, CAP_PERFMON}),
            "ebpf: needs root, or CAP_BPF and CAP_PERFMON: this process lacks CAP_PERFMON");
}

TEST(KernelNetEventsPrivilege, DnsNamesTheCapabilityItLacks) {
  try {
    open_net_events(NetGroup::dns, {1 << 16});
  } catch (const std::exception& e) {
    GTEST_SKIP() << e.what();
  }
  EXPECT_EQ(error_without({CAP_SYS_ADMIN, CAP_NET_ADMIN}, [] { open_net_events(NetGroup::dns, {1 << 16}); }),
            "ebpf: DNS events need root or CAP_NET_ADMIN (their programs attach to cgroup v2): this process lacks "
            "CAP_NET_ADMIN");
}

// watch_ebpf() in an agent's sensor hub: one sensor, each query its events.
struct WatchEbpf : ::testing::TestWithParam<ProcessBackend> {
  AgentSystemConfig cfg;
  caf::actor_system sys{cfg};
  std::unique_ptr<SensorHub> hub;
  Engine engine{default_registry()};

  WatchEbpf() {
    SensorSettings settings;
    settings.process_events.backend = GetParam();
    hub = std::make_unique<SensorHub>(sys, settings);
  }
  ~WatchEbpf() override {
    hub.reset();
    sys.await_all_actors_done();
  }
};

const Value* field(const Row& row, const char* outer, const char* inner) {
  auto o = row.find(outer);
  auto d = o ? o->as_dict() : nullptr;
  return d ? d->find(inner) : nullptr;
}

TEST_P(WatchEbpf, EachQueryGetsTheEventsItNamedFromOneSharedSensor) {
  std::string why;
  if (!open_or_skip(GetParam(), 8 << 20, &why)) GTEST_SKIP() << why;
  Env exec_env, exit_env;
  exec_env.sensors = exit_env.sensors = hub.get();
  auto execs = engine.start("SELECT * FROM watch_ebpf(events='sched_process_exec')", {}, exec_env);
  auto exits = engine.start("SELECT * FROM watch_ebpf(events=['sched_process_exit'])", {}, exit_env);
  std::vector<Row> exec_rows, exit_rows;
  execs->next(exec_rows, 100);  // subscribes
  exits->next(exit_rows, 100);
  EXPECT_EQ(hub->running(), 1u);
  // Until both queries see a process of ours: the sensor watches from its
  // first subscriber on, so the first pokes may come before it does.
  const std::string tag = "outpost-watch-ebpf-" + std::to_string(::getpid());
  std::set<int64_t> ours;
  bool exec_seen = false, exit_seen = false;
  for (auto deadline = Clock::now() + 20s; !(exec_seen && exit_seen) && Clock::now() < deadline;) {
    for (auto& c : storm(2, tag)) ours.insert(c.pid);
    for (auto until = Clock::now() + 200ms; Clock::now() < until && !(exec_seen && exit_seen);) {
      exec_rows.clear();
      exit_rows.clear();
      execs->next(exec_rows, 1000);
      exits->next(exit_rows, 1000);
      for (auto& r : exec_rows) {
        EXPECT_EQ(to_string(*field(r, "System", "EventName")), "sched_process_exec");
        auto pid = field(r, "System", "ProcessID")->as_int();
        if (!pid || !ours.count(*pid)) continue;
        auto argv = field(r, "EventData", "argv");
        if (GetParam() == ProcessBackend::ebpf || (argv && argv->as_list() && !argv->as_list()->empty())) {
          ASSERT_TRUE(argv && argv->as_list());
          ASSERT_EQ(argv->as_list()->size(), 3u);
          EXPECT_EQ(to_string((*argv->as_list())[1]), tag);
        }
        // NULL where the proc connector read /proc too late; never another parent.
        auto ppid = field(r, "System", "ParentProcessID");
        ASSERT_TRUE(ppid);
        if (GetParam() == ProcessBackend::ebpf || !ppid->is_null()) {
          ASSERT_TRUE(ppid->as_int());
          EXPECT_EQ(*ppid->as_int(), ::getpid());
        }
        exec_seen = true;
      }
      for (auto& r : exit_rows) {
        EXPECT_EQ(to_string(*field(r, "System", "EventName")), "sched_process_exit");
        auto pid = field(r, "System", "ProcessID")->as_int();
        if (pid && ours.count(*pid)) exit_seen = true;
      }
      std::this_thread::sleep_for(10ms);
    }
  }
  EXPECT_TRUE(exec_seen);
  EXPECT_TRUE(exit_seen);
  EXPECT_EQ(exec_env.dropped_events + exit_env.dropped_events, 0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, WatchEbpf, ::testing::Values(ProcessBackend::ebpf, ProcessBackend::proc_connector),
                         [](const auto& info) { return std::string(backend_name(info.param)); });

// 500 processes started at once by a shell, each ending at once: a burst of
// 1,500 events within a few milliseconds, however slow this process's own
// fork is (under AddressSanitizer it is). The shell and its children run at
// the highest priority (the kernel tests run as root), so that on a machine
// with few cores the sensor's reader waits its turn: at the same priority it
// kept up with every burst on a 2-core VM now and then.
void burst() {
  char sh[] = "/bin/sh", c[] = "-c";
  char script[] = "renice -n -20 $$ >/dev/null; i=0; while [ $i -lt 500 ]; do /bin/true & i=$((i+1)); done; wait";
  char* argv[] = {sh, c, script, nullptr};
  pid_t pid;
  if (posix_spawn(&pid, sh, nullptr, nullptr, argv, environ) == 0) ::waitpid(pid, nullptr, 0);
}

TEST(WatchEbpfLost, EventsTheRingBufferHadNoRoomForReachEveryQueryAsDroppedAtSource) {
  std::string why;
  if (!open_or_skip(ProcessBackend::ebpf, 4096, &why)) GTEST_SKIP() << why;
  AgentSystemConfig cfg;
  caf::actor_system sys{cfg};
  SensorSettings settings;
  settings.process_events.backend = ProcessBackend::ebpf;
  settings.process_events.ring_buffer_bytes = 4096;  // a page: a few dozen records
  auto hub = std::make_unique<SensorHub>(sys, settings);
  Engine engine{default_registry()};
  Env forks_env, exits_env;
  forks_env.sensors = exits_env.sensors = hub.get();
  auto forks = engine.start("SELECT * FROM watch_ebpf(events='sched_process_fork')", {}, forks_env);
  auto exits = engine.start("SELECT * FROM watch_ebpf(events='sched_process_exit')", {}, exits_env);
  std::vector<Row> rows;
  // Both queries subscribed: each has seen an event since.
  bool fork_seen = false, exit_seen = false;
  for (auto deadline = Clock::now() + 10s; Clock::now() < deadline && !(fork_seen && exit_seen);) {
    storm(1, "warm-up");
    rows.clear();
    forks->next(rows, 10000);
    fork_seen |= !rows.empty();
    rows.clear();
    exits->next(rows, 10000);
    exit_seen |= !rows.empty();
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(fork_seen && exit_seen);
  forks_env.dropped_events = exits_env.dropped_events = 0;
  uint64_t fork_rows = 0;
  // Until the sensor has counted a loss.
  for (auto deadline = Clock::now() + 20s; Clock::now() < deadline && !(fork_rows && forks_env.dropped_events);) {
    burst();
    for (auto until = Clock::now() + 300ms; Clock::now() < until;) {
      rows.clear();
      forks->next(rows, 10000);
      fork_rows += rows.size();
      rows.clear();
      exits->next(rows, 10000);
      std::this_thread::sleep_for(10ms);
    }
  }
  // A count reaches each query when it pulls: the two may be a scan apart.
  for (auto until = Clock::now() + 5s; Clock::now() < until && forks_env.dropped_events != exits_env.dropped_events;) {
    rows.clear();
    forks->next(rows, 10000);
    exits->next(rows, 10000);
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_GT(fork_rows, 0u);
  EXPECT_GT(forks_env.dropped_events, 0u) << "a page-sized ring buffer kept up with bursts of 1,500 events";
  // The source cannot tell whose events it lost: each query hears of all.
  EXPECT_EQ(forks_env.dropped_events, exits_env.dropped_events);
  forks.reset();
  exits.reset();
  hub.reset();
  sys.await_all_actors_done();
}

// The sensor opens its source on its own thread: a source that cannot start
// fails the query when it pulls, with the reason.
TEST(WatchEbpfStart, ASourceThatCannotStartFailsTheQueryWithItsReason) {
  AgentSystemConfig cfg;
  caf::actor_system sys{cfg};
  SensorSettings settings;
  settings.process_events.backend = ProcessBackend::ebpf;
  settings.process_events.ring_buffer_bytes = 1000;  // not a power of two
  auto hub = std::make_unique<SensorHub>(sys, settings);
  Engine engine{default_registry()};
  Env env;
  env.sensors = hub.get();
  auto stream = engine.start("SELECT * FROM watch_ebpf(events='sched_process_exec')", {}, env);
  std::string error;
  for (auto deadline = Clock::now() + 10s; error.empty() && Clock::now() < deadline;) {
    std::vector<Row> rows;
    try {
      stream->next(rows, 100);
    } catch (const std::exception& e) {
      error = e.what();
    }
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_NE(error.find("watch_ebpf(process): ebpf: the ring buffer's size must be a power of two"), std::string::npos)
      << error;
  stream.reset();
  hub.reset();
  sys.await_all_actors_done();
}

TEST(WatchEbpfCheck, AnEventOutpostDoesNotTakeIsRefusedBeforeTheQueryStarts) {
  Engine engine{default_registry()};
  try {
    engine.compile("SELECT * FROM watch_ebpf(events=['sched_process_exec', 'security_file_open'])");
    FAIL() << "accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("'security_file_open' is not an event Outpost takes from the kernel"),
              std::string::npos)
        << e.what();
  }
}

TEST(WatchEbpfConfig, TheBackendAndRingBufferAreCheckedWhereTheyAreWritten) {
  AgentConfig config;
  apply_override(config, "sensors.process_events=proc_connector");
  EXPECT_EQ(config.sensors.process_events, "proc_connector");
  apply_override(config, "sensors.ring_buffer=64KiB");
  EXPECT_EQ(config.sensors.ring_buffer, 64u << 10);
  EXPECT_THROW(apply_override(config, "sensors.process_events=kprobe"), ConfigError);
  try {
    apply_override(config, "sensors.ring_buffer=100000");
    FAIL() << "accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("a power of two"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace outpost::vql
