// outpost-bench fleet: outpost-collector processes (their own, in fresh
// datadirs, mutual TLS; one storing jsonl files, or several storing into
// NATS nodes started for the run, tools/fleet_nats.hpp) against N simulated
// agents (tools/fleet_sim.hpp) each making R rows/s. After the agents
// connected and a warm-up, a window of `seconds`: the rows made in it are
// timed to their answer (stored durably), the collectors' (and NATS') CPU
// and memory are read from /proc; a NATS node may be killed during it. Over
// a sweep of N, the highest N whose p99 stays under the target. Optionally a
// reconnect storm: every agent drops its connection at once and all come back.

#include <fmt/format.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "schemas/json.hpp"
#include "tools/bench.hpp"
#include "tools/fleet_certs.hpp"
#include "tools/fleet_nats.hpp"
#include "tools/fleet_sim.hpp"

namespace outpost::bench {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// CPU seconds a process has used (user + system), from /proc/<pid>/stat.
double cpu_seconds(pid_t pid) {
  std::string stat = read_text(fmt::format("/proc/{}/stat", pid));
  size_t paren = stat.rfind(')');
  if (paren == std::string::npos) throw std::runtime_error(fmt::format("cannot read /proc/{}/stat", pid));
  std::istringstream fields(stat.substr(paren + 2));
  std::string field;
  double ticks = 0;
  for (int i = 0; i < 13 && fields >> field; ++i)
    if (i == 11 || i == 12) ticks += std::stod(field);  // utime, stime: fields 14 and 15
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// The collector under test, stopped (SIGTERM, then SIGKILL) when this goes.
class CollectorProcess {
 public:
  CollectorProcess(const fs::path& binary, const fs::path& dir, const fs::path& certs,
                   const std::vector<std::string>& extra)
      : log_(dir / "collector.log") {
    fs::create_directories(dir / "data");
    std::vector<std::string> args{binary.string(), "--datadir", (dir / "data").string(), "--listen", "127.0.0.1:0",
                                  "--ca", (certs / "ca.pem").string(), "--cert", (certs / "collector.pem").string(),
                                  "--key", (certs / "collector.key").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = spawn_process(args, dir, log_, true);
    auto deadline = Clock::now() + 30s;
    for (;;) {
      std::string text = read_text(log_);
      if (size_t at = text.find("listening on port "); at != std::string::npos && text.find('\n', at) != std::string::npos) {
        port_ = static_cast<uint16_t>(std::stoul(text.substr(at + 18)));
        return;
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = 0;
        throw std::runtime_error(fmt::format("outpost-collector ended at start ({}); its log ends:\n{}",
                                             describe_status(status), log_tail(log_)));
      }
      if (Clock::now() > deadline)
        throw std::runtime_error("outpost-collector did not say its port within 30 s; its log ends:\n" + log_tail(log_));
      std::this_thread::sleep_for(20ms);
    }
  }
  ~CollectorProcess() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    auto deadline = Clock::now() + 10s;
    while (::waitpid(pid_, nullptr, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(20ms);
    }
  }
  CollectorProcess(const CollectorProcess&) = delete;
  CollectorProcess& operator=(const CollectorProcess&) = delete;

  pid_t pid() const { return pid_; }
  uint16_t port() const { return port_; }
  long rss() const { return proc_status_bytes("VmRSS", std::to_string(pid_)); }

 private:
  fs::path log_;
  pid_t pid_ = 0;
  uint16_t port_ = 0;
};

// How long an admin command took each time it was run, as a user sees it.
struct AdminCalls {
  std::vector<double> ms;  // each that answered, sorted
  uint64_t failed = 0;
};

struct FleetRun {
  size_t agents = 0;
  size_t connections_held = 0;
  double connect_all_s = 0;  // from start until every agent had a session (or the limit)
  double offered_rows_per_s = 0, rows_per_s = 0;
  uint64_t rows_made = 0, rows_unanswered = 0;
  std::optional<double> p50_ms, p99_ms, max_ms;  // none: the percentile's rows were never answered
  double collector_cpu_percent = 0, fleet_cpu_percent = 0, nats_cpu_percent = 0;  // collectors: all of them
  long collector_rss_bytes = 0;
  double collector_rss_bytes_per_agent = 0;
  uint64_t disconnects = 0, connect_failures = 0;
  std::optional<double> reconnect_all_s;  // the storm: until every agent had a session again
  uint64_t storm_connect_failures = 0;
  std::map<std::string, uint64_t> failures;  // why attempts and sessions ended (storm drops not counted)
  // Admin commands against the first collector, each run once a second
  // during the window: `agents` (answered on the admin thread), `status`
  // of agent fleet-0 (through the agents' loop and the agent's connection)
  // and, with several collectors, of fleet-1, connected to the second (through
  // NATS to that collector's relay, its loop and the agent's connection).
  AdminCalls admin_agents, admin_status, admin_relayed_status;
};

// Runs `outpost-collector <command>` against `dir`'s collector once a second
// (waiting for each) until stopped: how long each took, as a user sees it.
class AdminProbe {
 public:
  AdminProbe(const fs::path& collector, const fs::path& dir, std::vector<std::string> command)
      : thread_([this, collector, dir, command] {
          std::vector<std::string> args{collector.string(), "--datadir", (dir / "data").string()};
          args.insert(args.end(), command.begin(), command.end());
          fs::path log = dir / ("admin-probe-" + command.front() +
                                (command.size() > 1 && command[1][0] != '-' ? "-" + command[1] : "") + ".log");
          std::unique_lock<std::mutex> lock(mutex_);
          while (!stop_) {
            lock.unlock();
            auto t0 = Clock::now();
            int status = run_to_end(args, dir, log);
            double ms = 1000 * seconds_since(t0);
            lock.lock();
            if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
              answered_.push_back(ms);
            else
              ++failed_;
            wake_.wait_for(lock, std::chrono::duration<double>(std::max(0.0, 1.0 - ms / 1000)), [this] { return stop_; });
          }
        }) {}
  // Stops after the call under way; its figures into `calls`.
  void finish(AdminCalls& calls) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_one();
    thread_.join();
    calls.ms = answered_;
    std::sort(calls.ms.begin(), calls.ms.end());
    calls.failed = failed_;
  }
  ~AdminProbe() {
    if (thread_.joinable()) {
      AdminCalls ignored;
      finish(ignored);
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::vector<double> answered_;
  uint64_t failed_ = 0;
  std::thread thread_;  // last: starts once the members above exist
};

// The q-quantile of `made` rows of which `answered` (sorted) were answered:
// the unanswered count as slower than any answered.
std::optional<double> quantile(const std::vector<float>& answered, uint64_t made, double q) {
  if (made == 0) return std::nullopt;
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(made)));
  if (rank == 0) rank = 1;
  if (rank > answered.size()) return std::nullopt;
  return answered[rank - 1];
}

// Waits until `done()` or `limit`; whether it was done.
template <class F>
bool wait_for(F done, std::chrono::milliseconds limit) {
  auto deadline = Clock::now() + limit;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
  return true;
}

// CPU seconds of several processes (those gone count as what they had when read last).
struct CpuTotal {
  std::map<pid_t, double> at_start, last;
  explicit CpuTotal(const std::vector<pid_t>& pids) {
    for (pid_t p : pids) at_start[p] = last[p] = cpu_seconds(p);
  }
  void read(pid_t p) { last[p] = cpu_seconds(p); }
  double since_start(const std::vector<pid_t>& alive) {
    for (pid_t p : alive) read(p);
    double total = 0;
    for (auto& [p, s] : at_start) total += last[p] - s;
    return total;
  }
};

FleetRun measure(const FleetBenchOptions& o, const fs::path& root, const fs::path& collector, FleetCerts& certs,
                 size_t agents) {
  FleetRun run;
  run.agents = agents;
  fs::path dir = root / fmt::format("agents-{}", agents);
  std::unique_ptr<FleetNats> nats;
  std::vector<std::string> args = o.collector_args;
  if (o.backend == "jetstream") {
    nats = std::make_unique<FleetNats>(dir / "nats", o.nats_nodes);
    args.insert(args.end(), {"--storage", "jetstream", "--nats", nats->urls(), "--nats-replicas",
                             std::to_string(std::min(3u, o.nats_nodes))});
  }
  std::vector<std::unique_ptr<CollectorProcess>> procs;
  std::vector<pid_t> collector_pids;
  long rss_before = 0;
  FleetSimConfig config;
  for (unsigned c = 0; c < o.collectors; ++c) {
    procs.push_back(std::make_unique<CollectorProcess>(collector, dir / fmt::format("collector-{}", c), root / "certs",
                                                       args));
    collector_pids.push_back(procs.back()->pid());
    rss_before += procs.back()->rss();
    config.ports.push_back(procs.back()->port());
  }
  config.ca_pem = read_text(root / "certs" / "ca.pem");
  config.rate = o.rate;
  config.max_delay_ms = o.max_delay_ms;
  config.threads = o.threads;
  auto start = Clock::now();
  FleetSim sim(config, certs, agents);
  wait_for([&] { return sim.counters().connected == agents; }, 120s);
  run.connect_all_s = seconds_since(start);
  std::this_thread::sleep_for(std::chrono::duration<double>(o.warmup));

  CpuTotal collectors_cpu(collector_pids), nats_cpu(nats ? nats->pids() : std::vector<pid_t>{});
  double self0 = cpu_seconds(::getpid());
  auto t0 = Clock::now();
  sim.start_window();
  AdminProbe agents_probe(collector, dir / "collector-0", {"agents", "--json"});
  AdminProbe status_probe(collector, dir / "collector-0", {"status", "fleet-0"});
  std::optional<AdminProbe> relayed_status_probe;
  if (o.collectors > 1 && agents > 1) relayed_status_probe.emplace(collector, dir / "collector-0",
                                                                   std::vector<std::string>{"status", "fleet-1"});
  if (nats && o.kill_nats_node_at >= 0) {
    std::this_thread::sleep_for(std::chrono::duration<double>(std::min(o.kill_nats_node_at, o.seconds)));
    pid_t victim = nats->pids().at(1);
    nats_cpu.read(victim);
    nats->kill9(1);
    std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds - std::min(o.kill_nats_node_at, o.seconds)));
  } else {
    std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
  }
  sim.end_window();
  double window = seconds_since(t0);
  agents_probe.finish(run.admin_agents);
  status_probe.finish(run.admin_status);
  if (relayed_status_probe) relayed_status_probe->finish(run.admin_relayed_status);
  run.collector_cpu_percent = 100 * collectors_cpu.since_start(collector_pids) / window;
  if (nats) run.nats_cpu_percent = 100 * nats_cpu.since_start(nats->pids()) / window;
  run.fleet_cpu_percent = 100 * (cpu_seconds(::getpid()) - self0) / window;
  for (auto& p : procs) run.collector_rss_bytes += p->rss();
  run.collector_rss_bytes_per_agent = static_cast<double>(run.collector_rss_bytes - rss_before) / static_cast<double>(agents);
  auto during = sim.counters();
  run.connections_held = during.connected;
  run.rows_per_s = static_cast<double>(during.stored_during) / window;

  // The window's rows have until this long after it to be answered.
  wait_for([&] { auto c = sim.counters(); return c.stored >= c.made; }, std::chrono::milliseconds(
      static_cast<int64_t>(1000 * std::max(30.0, o.seconds))));
  auto after = sim.counters();
  run.rows_made = after.made;
  run.rows_unanswered = after.made - after.stored;
  run.offered_rows_per_s = static_cast<double>(after.made) / window;
  auto latencies = sim.latencies_ms();
  std::sort(latencies.begin(), latencies.end());
  run.p50_ms = quantile(latencies, after.made, 0.5);
  run.p99_ms = quantile(latencies, after.made, 0.99);
  run.max_ms = quantile(latencies, after.made, 1.0);
  run.disconnects = after.disconnects;
  run.connect_failures = after.connect_failures;

  if (o.reconnect_storm) {
    uint64_t connects = after.connects;
    auto storm = Clock::now();
    sim.reconnect_all();
    if (wait_for([&] { auto c = sim.counters(); return c.connects >= connects + agents && c.connected == agents; }, 120s))
      run.reconnect_all_s = seconds_since(storm);
    run.storm_connect_failures = sim.counters().connect_failures - after.connect_failures;
  }
  run.failures = sim.counters().failures;
  return run;
}

std::string number(const std::optional<double>& v) { return v ? fmt::format("{:.1f}", *v) : "null"; }

// The most frequent reasons, "reason": count, as JSON members.
std::string failure_json(const std::map<std::string, uint64_t>& failures) {
  std::vector<std::pair<uint64_t, std::string>> top;
  for (auto& [why, n] : failures) top.emplace_back(n, why);
  std::sort(top.rbegin(), top.rend());
  std::string out;
  for (size_t i = 0; i < top.size() && i < 5; ++i)
    out += (out.empty() ? "" : ", ") + schemas::json_string(top[i].second) + ": " + std::to_string(top[i].first);
  return "{" + out + "}";
}

std::optional<double> admin_quantile(const AdminCalls& c, double q) {
  std::vector<float> answered(c.ms.begin(), c.ms.end());
  return quantile(answered, c.ms.size() + c.failed, q);
}

// `"admin_<name>_calls": ..., "admin_<name>_p50_ms": ..., ...`
std::string admin_json(const std::string& name, const AdminCalls& c) {
  return fmt::format("\"admin_{0}_calls\": {1}, \"admin_{0}_p50_ms\": {2}, \"admin_{0}_max_ms\": {3}, "
                     "\"admin_{0}_failed\": {4}",
                     name, c.ms.size(), number(admin_quantile(c, 0.5)), number(admin_quantile(c, 1.0)), c.failed);
}

std::string run_json(const FleetRun& r) {
  return fmt::format(
      "{{\"agents\": {}, \"connections_held\": {}, \"connect_all_s\": {:.2f}, \"offered_rows_per_s\": {:.0f}, "
      "\"rows_per_s\": {:.0f}, \"rows_made\": {}, \"rows_unanswered\": {}, \"latency_p50_ms\": {}, "
      "\"latency_p99_ms\": {}, \"latency_max_ms\": {}, \"collector_cpu_percent\": {:.1f}, "
      "\"fleet_cpu_percent\": {:.1f}, \"nats_cpu_percent\": {:.1f}, \"collector_rss_bytes\": {}, \"collector_rss_bytes_per_agent\": {:.0f}, "
      "\"disconnects\": {}, \"connect_failures\": {}, \"reconnect_all_s\": {}, \"storm_connect_failures\": {}, "
      "{}, {}, {}, \"failure_reasons\": {}}}",
      r.agents, r.connections_held, r.connect_all_s, r.offered_rows_per_s, r.rows_per_s, r.rows_made,
      r.rows_unanswered, number(r.p50_ms), number(r.p99_ms), number(r.max_ms), r.collector_cpu_percent,
      r.fleet_cpu_percent, r.nats_cpu_percent, r.collector_rss_bytes, r.collector_rss_bytes_per_agent, r.disconnects,
      r.connect_failures,
      r.reconnect_all_s ? fmt::format("{:.2f}", *r.reconnect_all_s) : "null", r.storm_connect_failures,
      admin_json("agents", r.admin_agents), admin_json("status", r.admin_status),
      admin_json("relayed_status", r.admin_relayed_status), failure_json(r.failures));
}

void print_text(const FleetRun& r) {
  fmt::print("{:>6} agents: {}/{} connected (all in {:.1f} s); rows {:.0f}/s stored of {:.0f}/s made, {} unanswered; "
             "latency p50 {} ms, p99 {} ms, max {} ms; collector {:.1f} % CPU, {:.1f} MiB ({:.0f} B per agent); "
             "NATS {:.1f} % CPU; fleet {:.1f} % CPU; {} disconnects, {} failed attempts",
             r.agents, r.connections_held, r.agents, r.connect_all_s, r.rows_per_s, r.offered_rows_per_s,
             r.rows_unanswered, number(r.p50_ms), number(r.p99_ms), number(r.max_ms), r.collector_cpu_percent,
             r.collector_rss_bytes / 1048576.0, r.collector_rss_bytes_per_agent, r.nats_cpu_percent, r.fleet_cpu_percent,
             r.disconnects,
             r.connect_failures);
  for (auto [name, calls] : {std::pair{"agents`", &r.admin_agents}, std::pair{"status fleet-0`", &r.admin_status},
                             std::pair{"status fleet-1` (relayed)", &r.admin_relayed_status}})
    if (!calls->ms.empty() || calls->failed) fmt::print("; `{} {} times, p50 {} ms, max {} ms, {} failed", name, calls->ms.size(),
               number(admin_quantile(*calls, 0.5)), number(admin_quantile(*calls, 1.0)), calls->failed);
  if (r.reconnect_all_s)
    fmt::print("; reconnect storm: all back in {:.1f} s ({} failed attempts)", *r.reconnect_all_s,
               r.storm_connect_failures);
  else if (r.storm_connect_failures)
    fmt::print("; reconnect storm: NOT all back within 120 s ({} failed attempts)", r.storm_connect_failures);
  fmt::print("\n");
  if (!r.failures.empty()) fmt::print("        why attempts and sessions ended: {}\n", failure_json(r.failures));
}

// Descriptors for this process's and the collector's connections: the soft
// limit raised to the hard one.
void raise_fd_limit(size_t agents) {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur != RLIM_INFINITY && agents + 256 > limit.rlim_cur)
    throw std::runtime_error(fmt::format("{} agents need more open files than the limit allows ({}): raise "
                                         "`ulimit -Hn` or run fewer",
                                         agents, limit.rlim_cur));
}

}  // namespace

int run_fleet_bench(const FleetBenchOptions& o) {
  if (o.agents.empty() || o.rate <= 0 || o.seconds <= 0)
    throw std::runtime_error("fleet: --agents, --rate and --seconds must be positive");
  if (o.backend != "jetstream" && (o.collectors != 1 || o.nats_nodes != 1 || o.kill_nats_node_at >= 0))
    throw std::runtime_error("fleet: --collectors, --nats-nodes and --kill-nats-node-at need --backend jetstream");
  if (o.kill_nats_node_at >= 0 && o.nats_nodes < 3)
    throw std::runtime_error("fleet: --kill-nats-node-at needs a cluster (--nats-nodes 3): one node lost is all lost");
  raise_fd_limit(*std::max_element(o.agents.begin(), o.agents.end()));
  fs::path collector = o.collector.empty() ? fs::read_symlink("/proc/self/exe").parent_path() / "outpost-collector"
                                           : o.collector;
  if (!fs::exists(collector)) throw std::runtime_error("fleet: no collector binary at " + collector.string());
  WorkDir work(o.dir);
  fs::path certs = work.path() / "certs";
  fs::create_directories(certs);
  if (int status = run_to_end({OUTPOST_CERTS, "init", certs.string()}, work.path(), work.path() / "certs.log");
      !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("fleet: outpost-certs init failed: " + describe_status(status));
  FleetCerts made(certs / "ca.pem", certs / "ca.key");

  std::vector<FleetRun> runs;
  std::optional<size_t> best;
  for (size_t n : o.agents) {
    runs.push_back(measure(o, work.path(), collector, made, n));
    const FleetRun& r = runs.back();
    if (!o.json) print_text(r);
    if (r.p99_ms && *r.p99_ms < o.latency_target_ms && r.connections_held == n) best = std::max(best.value_or(0), n);
  }
  if (o.json) {
    std::string list;
    for (auto& r : runs) list += (list.empty() ? "" : ", ") + run_json(r);
    fmt::print("{{\"bench\": \"fleet\", \"backend\": {}, \"collectors\": {}, \"nats_nodes\": {}, "
               "\"nats_node_killed_at_s\": {}, \"rate\": {}, \"max_delay_ms\": {}, \"seconds\": {}, "
               "\"threads\": {}, \"latency_target_ms\": {}, \"runs\": [{}], \"max_agents_under_target\": {}}}\n",
               schemas::json_string(o.backend), o.collectors, o.backend == "jetstream" ? o.nats_nodes : 0,
               o.kill_nats_node_at >= 0 ? fmt::format("{}", o.kill_nats_node_at) : "null", o.rate, o.max_delay_ms,
               o.seconds, o.threads, o.latency_target_ms, list, best ? std::to_string(*best) : "null");
  } else {
    fmt::print("highest N with p99 under {:.0f} ms and every agent connected: {}\n", o.latency_target_ms,
               best ? std::to_string(*best) : "none");
  }
  return 0;
}

}  // namespace outpost::bench
