// outpost-bench footprint: what the agent costs a machine it merely watches.
// `outpost-agent` runs as a new user starts it (the built-in configuration,
// link offline), first as it is, then with one more query of 10 rows/s; over
// each measurement we read from /proc its CPU time, what its resident memory
// is made of at the end, and each thread's context switches (how often it
// wakes the CPU); through outpostctl, the query's rows and the buffer's
// commits (each one fsync: a disk kept awake costs a laptop's battery).

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "tools/bench.hpp"

extern char** environ;

namespace outpost::bench {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kClockQuery = "footprint_clock";  // the query phase's extra query
constexpr int kTrickleQueries = 100;                     // the trickle phases' queries
constexpr int kTrickleGroupMs = 250;                     // the grouped one's buffer.commit_interval_ms

// One agent process, started in its own directory, its output in agent.log
// there (`kept`: the directory stays after the benchmark); killed if still
// running when this ends.
class AgentProcess {
 public:
  AgentProcess(const fs::path& agent, std::vector<std::string> args, const fs::path& dir, bool kept)
      : log_(dir / "agent.log"), kept_(kept) {
    args.insert(args.begin(), agent.string());
    pid_ = spawn_process(args, dir, log_, true);
  }
  ~AgentProcess() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  AgentProcess(const AgentProcess&) = delete;
  AgentProcess& operator=(const AgentProcess&) = delete;

  pid_t pid() const { return pid_; }
  const fs::path& log() const { return log_; }

  // Throws if the agent has ended, with `when` and its log's last lines.
  void check_running(const std::string& when) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) != pid_) return;
    pid_ = 0;
    throw std::runtime_error(
        fmt::format("outpost-agent ended {} ({}); its log{} ends:\n{}", when, describe_status(status), where(), log_tail(log_)));
  }

  // Until its log says it runs: the line the library logs once the actors,
  // inspector and metrics are up.
  void wait_started(std::chrono::seconds limit) {
    auto deadline = Clock::now() + limit;
    for (;;) {
      check_running("before it started");
      if (read_text(log_).find("agent running:") != std::string::npos) return;
      if (Clock::now() > deadline)
        throw std::runtime_error(fmt::format("outpost-agent did not say it runs within {} s; its log{} ends:\n{}",
                                             limit.count(), where(), log_tail(log_)));
      std::this_thread::sleep_for(20ms);
    }
  }

  // SIGTERM, and SIGKILL after 10 s; its exit status.
  int stop() {
    int status = 0;
    ::kill(pid_, SIGTERM);
    auto deadline = Clock::now() + 10s;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(20ms);
    }
    pid_ = 0;
    return status;
  }

 private:
  // Where the log is, if it stays: a temp dir goes with the benchmark.
  std::string where() const { return kept_ ? ", " + log_.string() + "," : " (give --dir to keep it)"; }

  fs::path log_;
  bool kept_;
  pid_t pid_ = 0;
};

struct Sample {
  Clock::time_point at;
  uint64_t cpu_ticks = 0;  // utime + stime of the whole process, in clock ticks (10 ms)
  std::map<pid_t, ThreadStat> threads;
};

Sample take_sample(pid_t pid) {
  Sample s;
  s.threads = thread_stats(std::to_string(pid));
  // The fields after the command's name, "(...)": state is the 3rd, utime the 14th, stime the 15th.
  std::string stat = read_text(fs::path("/proc") / std::to_string(pid) / "stat");
  size_t paren = stat.rfind(')');
  if (paren != std::string::npos) {
    std::istringstream fields(stat.substr(paren + 1));
    std::string field;
    for (int i = 3; i <= 15 && fields >> field; ++i)
      if (i == 14 || i == 15) s.cpu_ticks += std::strtoull(field.c_str(), nullptr, 10);
  }
  s.at = Clock::now();
  return s;
}

// What the resident set is made of, from /proc/PID/smaps_rollup and smaps.
struct Memory {
  uint64_t rss = 0;
  uint64_t pss = 0;      // shared pages divided among the processes that map them
  uint64_t anon = 0;     // heap, stacks, relocated data: the agent's own
  uint64_t bpf_map = 0;  // BPF ring buffers mapped in (their data pages twice: the ring wraps)
};

Memory memory_of(pid_t pid) {
  Memory m;
  std::string id = std::to_string(pid);
  m.rss = static_cast<uint64_t>(proc_status_bytes("VmRSS", id));
  m.anon = static_cast<uint64_t>(proc_status_bytes("RssAnon", id));
  fs::path proc = fs::path("/proc") / id;
  m.pss = status_field(read_text(proc / "smaps_rollup"), "Pss") << 10;  // kB, as in status
  std::istringstream smaps(read_text(proc / "smaps"));
  bool bpf = false;
  for (std::string line; std::getline(smaps, line);) {
    if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) && line.find('-') < line.find(' '))
      bpf = line.find("anon_inode:bpf-map") != std::string::npos;  // a mapping's header
    else if (bpf)
      m.bpf_map += status_field(line, "Rss") << 10;
  }
  return m;
}

// What `outpostctl --json <what>` prints about the agent running in `dir`;
// nothing when outpostctl (beside the agent) is missing or cannot tell.
std::optional<std::string> inspect(const fs::path& outpostctl, const fs::path& dir, const char* what) {
  if (outpostctl.empty()) return std::nullopt;
  fs::path out = dir / "outpostctl.json";
  int status = run_to_end({outpostctl.string(), "--socket", (dir / "outpost-data" / "inspector.sock").string(),
                           "--timeout", "5", "--json", what},
                          dir, out);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return std::nullopt;
  return read_text(out);
}

// The number after "key": in `json`, from `from` on.
std::optional<uint64_t> number_after(const std::string& json, const std::string& key, size_t from = 0) {
  std::string quoted = "\"" + key + "\":";
  size_t at = from == std::string::npos ? from : json.find(quoted, from);
  if (at == std::string::npos) return std::nullopt;
  return std::strtoull(json.c_str() + at + quoted.size(), nullptr, 10);
}

// Counters read through the inspector at one moment: the rows the extra query
// passed to the buffer, and the buffer's commits (each one fsync).
struct Counters {
  Clock::time_point at;  // halfway through reading them
  std::optional<uint64_t> rows, commits;
};

Counters read_counters(const fs::path& outpostctl, const fs::path& dir) {
  Counters c;
  auto before = Clock::now();
  if (auto queries = inspect(outpostctl, dir, "queries"))
    c.rows = number_after(*queries, "rows_out", queries->find(fmt::format("\"name\":\"{}\"", kClockQuery)));
  if (auto buffer = inspect(outpostctl, dir, "buffer")) c.commits = number_after(*buffer, "commits");
  c.at = before + (Clock::now() - before) / 2;
  return c;
}

// The rate of a counter between two readings, if both have it.
std::optional<double> rate(const Counters& a, const Counters& b, std::optional<uint64_t> Counters::*field) {
  auto from = a.*field, to = b.*field;
  if (!from || !to || b.at <= a.at) return std::nullopt;
  return static_cast<double>(*to - std::min(*to, *from)) / std::chrono::duration<double>(b.at - a.at).count();
}

struct ThreadRate {
  std::string name;
  pid_t tid = 0;
  double wakeups_per_s = 0;
  double cpu_percent = 0;  // of one core
};

struct Footprint {
  double cpu_percent = 0;  // of one core
  // Where cpu_percent comes from: "schedstat" (each thread's on-CPU time in
  // ns), or "ticks" (the process's, in 10 ms ticks: 3 ticks are 0.1 % over
  // 30 s) when a thread ended during the window and took its time with it.
  std::string cpu_source;
  Memory memory;
  double wakeups_per_s = 0;
  std::vector<ThreadRate> threads;  // most wakeups first
  std::optional<double> rows_per_s;
  std::optional<double> commits_per_s;  // the buffer's, each with its fsync
};

// One phase: the agent started in `dir` with `args`, up, warmed up, measured
// for `seconds`, stopped.
Footprint measure(const fs::path& agent, const std::vector<std::string>& args, const fs::path& dir, bool kept,
                  double seconds, const fs::path& outpostctl) {
  std::error_code ignored;
  fs::remove_all(dir, ignored);  // an earlier run's
  fs::create_directories(dir);
  AgentProcess p(agent, args, dir, kept);
  p.wait_started(60s);
  std::this_thread::sleep_for(2s);  // warm-up: start-up work, the first rows and batches
  p.check_running("during the warm-up");

  Counters counters_start = read_counters(outpostctl, dir);
  Sample start = take_sample(p.pid());
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  Sample end = take_sample(p.pid());
  Footprint f;
  f.memory = memory_of(p.pid());
  Counters counters_end = read_counters(outpostctl, dir);
  p.check_running("during the measurement");
  int status = p.stop();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fmt::print(stderr, "outpost-bench: outpost-agent stopped with {} (the figures stand: it ran throughout); "
               "its log, {}, ends:\n{}\n", describe_status(status), p.log().string(), log_tail(p.log()));

  double elapsed = std::chrono::duration<double>(end.at - start.at).count();
  uint64_t run_ns = 0;
  for (auto& [tid, t] : end.threads) {
    auto was = start.threads.find(tid);
    ThreadStat before = was == start.threads.end() ? ThreadStat{} : was->second;  // zeros: started meanwhile
    double rate = static_cast<double>(t.switches - std::min(t.switches, before.switches)) / elapsed;
    uint64_t ns = t.run_ns - std::min(t.run_ns, before.run_ns);
    f.threads.push_back({t.name, tid, rate, static_cast<double>(ns) / 1e9 / elapsed * 100});
    f.wakeups_per_s += rate;
    run_ns += ns;
  }
  bool all_stayed = std::all_of(start.threads.begin(), start.threads.end(),
                                [&](const auto& t) { return end.threads.count(t.first) != 0; });
  if (all_stayed && !end.threads.empty()) {
    f.cpu_source = "schedstat";
    f.cpu_percent = static_cast<double>(run_ns) / 1e9 / elapsed * 100;
  } else {
    f.cpu_source = "ticks";
    f.cpu_percent = static_cast<double>(end.cpu_ticks - start.cpu_ticks) /
                    static_cast<double>(sysconf(_SC_CLK_TCK)) / elapsed * 100;
  }
  std::stable_sort(f.threads.begin(), f.threads.end(),
                   [](const ThreadRate& a, const ThreadRate& b) { return a.wakeups_per_s > b.wakeups_per_s; });
  f.rows_per_s = rate(counters_start, counters_end, &Counters::rows);
  f.commits_per_s = rate(counters_start, counters_end, &Counters::commits);
  return f;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\')
      out += std::string("\\") + c;
    else if (static_cast<unsigned char>(c) < 0x20)
      out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
    else
      out += c;
  }
  return out + "\"";
}

std::string json_fields(const std::string& prefix, const Footprint& f) {
  std::string threads;
  for (auto& t : f.threads)
    threads += fmt::format("{}{{\"name\":{},\"tid\":{},\"wakeups_per_s\":{:.2f},\"cpu_percent\":{:.4f}}}",
                           threads.empty() ? "" : ",", json_string(t.name), t.tid, t.wakeups_per_s, t.cpu_percent);
  return fmt::format("\"{0}_cpu_percent\":{1:.3f},\"{0}_cpu_source\":\"{9}\",\"{0}_rss_bytes\":{2},\"{0}_pss_bytes\":{3},"
                     "\"{0}_anon_bytes\":{4},\"{0}_bpf_map_bytes\":{5},\"{0}_wakeups_per_s\":{6:.2f},"
                     "\"{0}_commits_per_s\":{7},\"{0}_threads\":[{8}]",
                     prefix, f.cpu_percent, f.memory.rss, f.memory.pss, f.memory.anon, f.memory.bpf_map,
                     f.wakeups_per_s, f.commits_per_s ? fmt::format("{:.2f}", *f.commits_per_s) : "null",
                     threads, f.cpu_source);
}

void print_text(const std::string& title, const Footprint& f) {
  auto mib = [](uint64_t bytes) { return static_cast<double>(bytes) / (1 << 20); };
  fmt::print("{}: CPU {:.3f} % of a core{}, RSS {:.1f} MiB (PSS {:.1f}, anonymous {:.1f}, BPF maps {:.1f}), "
             "{:.1f} wakeups/s{}{}\n",
             title, f.cpu_percent, f.cpu_source == "ticks" ? " (in 10 ms ticks: a thread ended)" : "",
             mib(f.memory.rss), mib(f.memory.pss), mib(f.memory.anon), mib(f.memory.bpf_map),
             f.wakeups_per_s, f.rows_per_s ? fmt::format(", {:.1f} rows/s", *f.rows_per_s) : "",
             f.commits_per_s ? fmt::format(", {:.1f} commits/s", *f.commits_per_s) : "");
  for (auto& t : f.threads)
    if (t.wakeups_per_s >= 0.05 || t.cpu_percent >= 0.0005)
      fmt::print("  {:<16} {:>7} {:>9.1f} wakeups/s {:>8.3f} % CPU\n", t.name, t.tid, t.wakeups_per_s, t.cpu_percent);
}

}  // namespace

int run_footprint_bench(const FootprintBenchOptions& o) {
  std::error_code ec;
  fs::path agent = o.agent.empty() ? fs::read_symlink("/proc/self/exe", ec).parent_path() / "outpost-agent"
                                   : fs::absolute(o.agent);
  if (!fs::is_regular_file(agent) || ::access(agent.c_str(), X_OK) != 0)
    throw std::runtime_error(fmt::format("no outpost-agent to run at {}{}", agent.string(),
                                         o.agent.empty() ? " (beside outpost-bench; give --agent)" : ""));
  fs::path outpostctl = agent.parent_path() / "outpostctl";
  if (::access(outpostctl.c_str(), X_OK) != 0) outpostctl.clear();  // rows/s unknown then

  WorkDir work(o.dir);
  const fs::path root = fs::absolute(work.path());  // the agent runs elsewhere: no relative paths
  fs::create_directories(root);
  const bool kept = !o.dir.empty();
  if (!o.json)
    fmt::print("outpost-bench footprint: {} with its built-in configuration, link offline; {} s each, in {}\n",
               agent.string(), o.seconds, root.string());

  // The built-in configuration and one more query: 10 rows/s.
  fs::path builtin = root / "builtin.yaml", with_query = root / "footprint-query.yaml";
  if (int status = run_to_end({agent.string(), "--print-default-config"}, root, builtin);
      !WIFEXITED(status) || WEXITSTATUS(status) != 0 || read_text(builtin).empty())
    throw std::runtime_error(fmt::format("{} --print-default-config failed ({})", agent.string(),
                                         describe_status(status)));
  {
    std::ofstream out(with_query);
    out << read_text(builtin) << "\n  - name: " << kClockQuery
        << "          # added by outpost-bench footprint\n"
           "    lane: events\n"
           "    source:\n"
           "      type: vql\n"
           "      query: SELECT * FROM clock(period=0.1)\n";
    if (!out) throw std::runtime_error("cannot write " + with_query.string());
  }

  // 100 queries of about a row per second each, at periods that do not line
  // up: what a commit interval is for (many sources trickling, rarely at once).
  fs::path trickle = root / "footprint-trickle.yaml";
  {
    std::ofstream out(trickle);
    out << read_text(builtin) << "\n";
    for (int i = 1; i <= kTrickleQueries; ++i)
      out << fmt::format("  - name: trickle{}\n    lane: events\n    source:\n      type: vql\n"
                         "      query: SELECT * FROM clock(period={:.4f})\n",
                         i, 0.5 + i * 0.0137);
    if (!out) throw std::runtime_error("cannot write " + trickle.string());
  }

  auto phase_args = [&](const fs::path& dir) {
    return std::vector<std::string>{"--set", "link=offline", "--set", "buffer.dir=" + (dir / "buffer").string()};
  };
  auto idle_args = phase_args(root / "idle");
  auto query_args = phase_args(root / "query");
  query_args.insert(query_args.begin(), {"-c", with_query.string()});

  Footprint idle = measure(agent, idle_args, root / "idle", kept, o.seconds, outpostctl);
  Footprint query = measure(agent, query_args, root / "query", kept, o.seconds, outpostctl);
  auto trickle_args = phase_args(root / "trickle");
  trickle_args.insert(trickle_args.begin(), {"-c", trickle.string()});
  Footprint ungrouped = measure(agent, trickle_args, root / "trickle-ungrouped", kept, o.seconds, outpostctl);
  trickle_args.insert(trickle_args.end(), {"--set", fmt::format("buffer.commit_interval_ms={}", kTrickleGroupMs)});
  Footprint grouped = measure(agent, trickle_args, root / "trickle", kept, o.seconds, outpostctl);

  if (o.json) {
    fmt::print("{{\"bench\":\"footprint\",\"seconds\":{},{},{},\"rows_per_s\":{},{},{}}}\n", o.seconds,
               json_fields("idle", idle), json_fields("query", query),
               query.rows_per_s ? fmt::format("{:.2f}", *query.rows_per_s) : "null",
               json_fields("trickle", grouped), json_fields("trickle_ungrouped", ungrouped));
  } else {
    print_text("idle", idle);
    print_text("with a 10 rows/s query", query);
    print_text(fmt::format("with {} queries of ~1 row/s, each append committed at once (the default)", kTrickleQueries),
               ungrouped);
    print_text(fmt::format("the same grouped (buffer.commit_interval_ms={})", kTrickleGroupMs), grouped);
  }
  return 0;
}

}  // namespace outpost::bench
