// outpost-bench kernel: an exec storm with the process event sensor off, then
// on, in turn (the same run, the same machine): how much the sensor slows the
// storm, its CPU per 1,000 events, and whether it lost any.

#include <fmt/format.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <atomic>
#include <filesystem>
#include <fstream>
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
// is a detached actor's: "caf.actor", the only one here).
double threads_cpu_seconds(const std::string& name) {
  double total = 0;
  std::error_code ec;
  for (auto& task : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    std::string comm;
    std::getline(std::ifstream(task.path() / "comm"), comm);
    if (comm != name) continue;
    uint64_t ns = 0;
    std::ifstream(task.path() / "schedstat") >> ns;  // first field: on-CPU time, ns
    total += static_cast<double>(ns) / 1e9;
  }
  return total;
}

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
    double cpu_before = cpu_seconds(RUSAGE_SELF), thread_before = threads_cpu_seconds("caf.actor");
    auto on = storm(workers, o.seconds);
    storming = false;
    puller.join();
    sensor_cpu += cpu_seconds(RUSAGE_SELF) - cpu_before - on.cpu;
    sensor_thread_cpu += threads_cpu_seconds("caf.actor") - thread_before;
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
  if (o.json)
    fmt::print("{{\"bench\":\"kernel\",\"backend\":\"{}\",\"workers\":{},\"rounds\":{},\"seconds\":{},"
               "\"exec_per_s_off\":{:.0f},\"exec_per_s_on\":{:.0f},\"slowdown_percent\":{:.2f},"
               "\"events\":{},\"expected_events\":{},\"events_lost\":{},\"sensor_cpu_ms_per_1000_events\":{:.3f},"
               "\"sensor_thread_ms_per_1000_events\":{:.3f}}}\n",
               backend, workers, o.rounds, o.seconds, off, on, slowdown, events, 3 * execs_on, lost, cpu_per_1000,
               thread_per_1000);
  else
    fmt::print("outpost-bench kernel ({}): {} workers starting /bin/true, {} rounds of {} s off and on\n"
               "sensor off: {:>8.0f} execs/s\n"
               "sensor on:  {:>8.0f} execs/s ({:+.2f} %)\n"
               "events:     {} of the storms' {} (fork, exec, exit), {} lost; the sensor's CPU "
               "{:.3f} ms per 1,000 events ({:.3f} ms its own thread; the rest: this benchmark's reader, "
               "which polls every millisecond, and CAF's threads)\n",
               backend, workers, o.rounds, o.seconds, off, on, -slowdown, events, 3 * execs_on, lost, cpu_per_1000,
               thread_per_1000);
  return 0;
}

}  // namespace outpost::bench
