// outpost-bench kernel: an exec storm with the process event sensor off, then
// on, in turn (the same run, the same machine): how much the sensor slows the
// storm, its CPU per 1,000 events, and whether it lost any.

#include <bpf/bpf.h>
#include <fmt/format.h>
#include <kj/io.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>
#include <thread>

#include "actors/system_config.hpp"
#include "queries/engine.hpp"
#include "queries/sensors.hpp"
#include "tools/bench.hpp"

extern char** environ;

namespace outpost::bench {
namespace {

double cpu_seconds(int who) {
  rusage u{};
  ::getrusage(who, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// CPU seconds so far of this process's threads named `name` (the sensor's
// thread: "op.sensor", instrumented.hpp).
double threads_cpu_seconds(const std::string& name) {
  double total = 0;
  for (auto& [tid, t] : thread_stats())
    if (t.name == name) total += static_cast<double>(t.run_ns) / 1e9;
  return total;
}

// What this process's BPF programs (the sensor's) have cost so far inside
// the kernel, in the processes they ran in (each exec, fork and exit runs
// them on its own thread: no thread of ours shows it). Counted only while
// run-time statistics are on (BpfRunTimeStats).
struct BpfRunTime {
  uint64_t ns = 0;
  uint64_t runs = 0;
};

BpfRunTime bpf_run_time() {
  BpfRunTime total;
  std::set<uint32_t> seen;  // a program may be open more than once
  std::error_code ec;
  for (auto& fd : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    if (std::filesystem::read_symlink(fd.path(), ec) != "anon_inode:bpf-prog") continue;
    bpf_prog_info info{};
    uint32_t length = sizeof info;
    if (bpf_obj_get_info_by_fd(std::stoi(fd.path().filename().string()), &info, &length) != 0) continue;
    if (!seen.insert(info.id).second) continue;
    total.ns += info.run_time_ns;
    total.runs += info.run_cnt;
  }
  return total;
}

// The kernel's run-time statistics of BPF programs (BPF_ENABLE_STATS), on
// while this lives; `why_not` says why not when they could not be turned on
// (it takes CAP_SYS_ADMIN). They cost each program run two clock reads.
struct BpfRunTimeStats {
  BpfRunTimeStats() {
    int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
    if (fd < 0)
      why_not = std::string("BPF_ENABLE_STATS failed: ") + std::strerror(-fd);
    else
      on = kj::AutoCloseFd(fd);
  }
  kj::AutoCloseFd on;
  std::string why_not;
};

struct Storm {
  uint64_t execs = 0;
  double seconds = 0;
  double cpu = 0;  // the storm's own threads (spawning and reaping)
};

// `workers` threads start /bin/true and reap it, again and again, for `seconds`.
Storm storm(int workers, double seconds) {
  std::atomic<uint64_t> execs{0};
  std::atomic<double> cpu{0};
  auto start = Clock::now();
  auto end = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  std::vector<std::thread> threads;
  for (int w = 0; w < workers; ++w)
    threads.emplace_back([&] {
      char arg0[] = "/bin/true";
      char* argv[] = {arg0, nullptr};
      uint64_t n = 0;
      while (Clock::now() < end) {
        pid_t pid;
        if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv, environ) != 0) continue;
        ::waitpid(pid, nullptr, 0);
        ++n;
      }
      execs += n;
      double mine = cpu_seconds(RUSAGE_THREAD);
      for (double c = cpu.load(); !cpu.compare_exchange_weak(c, c + mine);) {
      }
    });
  for (auto& t : threads) t.join();
  return {execs.load(), seconds_since(start), cpu.load()};
}

}  // namespace

int run_kernel_bench(const KernelBenchOptions& o) {
  vql::SensorSettings settings;
  if (!vql::parse_backend(o.backend, settings.process_events.backend))
    throw std::runtime_error("--backend: expected auto, ebpf or proc_connector, not " + o.backend);
  AgentSystemConfig cfg;
  caf::actor_system sys{configure_scheduler(cfg)};
  int workers = o.workers > 0 ? o.workers : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<double> off_rates, on_rates;
  uint64_t events = 0, lost = 0, execs_on = 0;
  double sensor_cpu = 0;
  double sensor_thread_cpu = 0;  // the sensor's own thread only
  std::string backend;
  double background_cpu = 0;  // the process's own CPU beside the storm, sensor off
  BpfRunTimeStats stats;
  BpfRunTime in_kernel;  // the sensor's programs during the storms
  for (int round = 0; round < o.rounds; ++round) {
    double off_before = cpu_seconds(RUSAGE_SELF);
    auto off = storm(workers, o.seconds);
    background_cpu += cpu_seconds(RUSAGE_SELF) - off_before - off.cpu;
    off_rates.push_back(off.execs / off.seconds);

    // On: the sensor and one query taking all three events, pulled as an agent's query actor would.
    vql::SensorHub hub(sys, settings);
    vql::Engine engine(vql::default_registry());
    vql::Env env;
    env.sensors = &hub;
    auto stream = engine.start(
        "SELECT * FROM watch_ebpf(events=['sched_process_exec', 'sched_process_fork', 'sched_process_exit'])", {}, env);
    // The sensor loads its programs on its own thread: until a process of
    // ours comes through, it may not watch yet (a source that cannot start
    // fails a later pull with its reasons).
    std::vector<vql::Row> rows;
    for (auto deadline = Clock::now() + std::chrono::seconds(20); rows.empty();) {
      if (Clock::now() > deadline) throw std::runtime_error("the sensor delivered no event in 20 s");
      storm(1, 0.001);
      stream->next(rows, 1024);
      if (rows.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    for (int quiet = 0; quiet < 20; ++quiet) {  // what the warm-up made, until 20 ms bring nothing
      rows.clear();
      stream->next(rows, 1024);
      if (!rows.empty()) quiet = 0;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    env.dropped_events = 0;
    std::atomic<bool> storming{true};
    std::atomic<uint64_t> pulled{0};
    std::thread puller([&] {
      std::vector<vql::Row> batch;
      while (storming) {
        batch.clear();
        auto step = stream->next(batch, 1024);
        pulled += batch.size();
        if (batch.empty() && step.state != vql::Step::State::more) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      for (int idle = 0; idle < 200; ++idle) {  // the rest, until 200 ms bring nothing
        batch.clear();
        stream->next(batch, 1024);
        pulled += batch.size();
        if (!batch.empty()) idle = 0;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    });
    double cpu_before = cpu_seconds(RUSAGE_SELF), thread_before = threads_cpu_seconds("op.sensor");
    BpfRunTime kernel_before = bpf_run_time();
    auto on = storm(workers, o.seconds);
    BpfRunTime kernel_after = bpf_run_time();
    in_kernel.ns += kernel_after.ns - kernel_before.ns;
    in_kernel.runs += kernel_after.runs - kernel_before.runs;
    storming = false;
    puller.join();
    sensor_cpu += cpu_seconds(RUSAGE_SELF) - cpu_before - on.cpu;
    sensor_thread_cpu += threads_cpu_seconds("op.sensor") - thread_before;
    on_rates.push_back(on.execs / on.seconds);
    execs_on += on.execs;
    events += pulled;
    lost += env.dropped_events;
    stream.reset();
  }
  // Which backend ran: the one the settings lead to here.
  try {
    backend = vql::backend_name(vql::open_process_events(settings.process_events)->backend());
  } catch (const std::exception&) {
  }
  double off = median(off_rates), on = median(on_rates);
  double slowdown = off > 0 ? (off - on) / off * 100 : 0;
  // What the process spent beyond the storm with the sensor on, less the same without it.
  sensor_cpu = std::max(0.0, sensor_cpu - background_cpu);
  double cpu_per_1000 = events ? sensor_cpu / static_cast<double>(events) * 1000 * 1000 : 0;  // ms
  double thread_per_1000 = events ? sensor_thread_cpu / static_cast<double>(events) * 1000 * 1000 : 0;
  // The programs' time in the kernel, where there are programs and it was counted.
  std::optional<double> kernel_per_1000;
  if (events && in_kernel.runs && stats.why_not.empty())
    kernel_per_1000 = static_cast<double>(in_kernel.ns) / 1e6 / static_cast<double>(events) * 1000;
  std::string kernel_why =
      kernel_per_1000 ? ""
      : !stats.why_not.empty() ? stats.why_not
      : "no BPF program of the sensor ran";
  if (o.json)
    fmt::print("{{\"bench\":\"kernel\",\"backend\":\"{}\",\"workers\":{},\"rounds\":{},\"seconds\":{},"
               "\"exec_per_s_off\":{:.0f},\"exec_per_s_on\":{:.0f},\"slowdown_percent\":{:.2f},"
               "\"events\":{},\"expected_events\":{},\"events_lost\":{},\"sensor_cpu_ms_per_1000_events\":{:.3f},"
               "\"sensor_thread_ms_per_1000_events\":{:.3f},\"bpf_programs_ms_per_1000_events\":{},"
               "\"bpf_program_runs\":{}}}\n",
               backend, workers, o.rounds, o.seconds, off, on, slowdown, events, 3 * execs_on, lost, cpu_per_1000,
               thread_per_1000, kernel_per_1000 ? fmt::format("{:.3f}", *kernel_per_1000) : "null", in_kernel.runs);
  else
    fmt::print("outpost-bench kernel ({}): {} workers starting /bin/true, {} rounds of {} s off and on\n"
               "sensor off: {:>8.0f} execs/s\n"
               "sensor on:  {:>8.0f} execs/s ({:+.2f} %)\n"
               "events:     {} of the storms' {} (fork, exec, exit), {} lost; the sensor's CPU "
               "{:.3f} ms per 1,000 events ({:.3f} ms its own thread; the rest: this benchmark's reader, "
               "which polls every millisecond, and CAF's threads)\n"
               "in kernel: {}\n",
               backend, workers, o.rounds, o.seconds, off, on, -slowdown, events, 3 * execs_on, lost, cpu_per_1000,
               thread_per_1000,
               kernel_per_1000 ? fmt::format("its BPF programs {:.3f} ms per 1,000 events ({} runs), in the "
                                             "processes they watch", *kernel_per_1000, in_kernel.runs)
                               : "not measured (" + kernel_why + ")");
  return 0;
}

}  // namespace outpost::bench
