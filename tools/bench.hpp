#pragma once
// Benchmarks report a figure and, measured in the same run, a baseline that
// does the same work with the bare library; the ratio is what we track.

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <sys/types.h>

namespace outpost::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// The directory a benchmark works in: the one given, or a new temp dir that
// is removed afterwards.
class WorkDir {
 public:
  explicit WorkDir(const std::filesystem::path& given);
  ~WorkDir();
  WorkDir(const WorkDir&) = delete;
  WorkDir& operator=(const WorkDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  bool owned_ = false;
};

// A number of a /proc status file's text ("voluntary_ctxt_switches", "VmRSS"
// in kB), as written; 0 when the line is not there.
uint64_t status_field(const std::string& status, const std::string& key);
// /proc/<pid>/status's `key` ("VmRSS", "RssAnon"), from kB to bytes; throws
// when the line is not there.
long proc_status_bytes(const std::string& key, const std::string& pid = "self");

// One thread of a process as /proc/<pid>/task/<tid>/ tells it.
struct ThreadStat {
  std::string name;        // comm
  uint64_t run_ns = 0;     // on-CPU time so far (schedstat's first field), ns
  uint64_t switches = 0;   // voluntary and nonvoluntary context switches so far
};
// Every thread of process `pid` ("self": this one) by thread id; one that ends
// while they are read is left out.
std::map<pid_t, ThreadStat> thread_stats(const std::string& pid = "self");

// A whole file's text ("" when it cannot be read).
std::string read_text(const std::filesystem::path& path);
// The last `n` lines of a log, for an error message ("(empty)" when none).
std::string log_tail(const std::filesystem::path& path, size_t n = 5);
// A wait status as words: "exit code 1", "signal 9 (Killed)".
std::string describe_status(int status);
// Starts `args` (args[0] an absolute path) in `cwd`, stdin from /dev/null,
// stdout (and stderr too when `with_stderr`) to `out`. Throws if it cannot.
pid_t spawn_process(const std::vector<std::string>& args, const std::filesystem::path& cwd,
                    const std::filesystem::path& out, bool with_stderr);
// Runs a short command to its end, its stdout in `out`; its wait status.
int run_to_end(const std::vector<std::string>& args, const std::filesystem::path& cwd,
               const std::filesystem::path& out);

struct BufferBenchOptions {
  std::filesystem::path dir;  // where the stores go; a temp dir when empty
  size_t records = 200000;
  size_t batch = 1000;
  size_t record_size = 256;
  int rounds = 3;  // store and baseline alternate; the median round counts
  bool json = false;
};

int run_buffer_bench(const BufferBenchOptions& options);

struct PipelineBenchOptions {
  std::filesystem::path dir;
  size_t queries = 100;
  size_t row_size = 256;
  size_t rows = 1000000;  // per round, for the pipeline and the baseline alike
  int rounds = 3;
  bool json = false;
};

int run_pipeline_bench(const PipelineBenchOptions& options);

struct QueriesBenchOptions {
  std::filesystem::path dir;
  size_t queries = 10000;
  bool json = false;
};

int run_queries_bench(const QueriesBenchOptions& options);

struct VqlBenchOptions {
  size_t rows = 1000000;
  int rounds = 3;
  bool json = false;
};

int run_vql_bench(const VqlBenchOptions& options);

struct SensorsBenchOptions {
  std::filesystem::path dir;
  size_t queries = 10000;
  double period_s = 0.1;  // the sensor's events come this often,
  int64_t per_tick = 1;   // this many at a time
  double seconds = 5;     // measured for this long
  bool json = false;
};

int run_sensors_bench(const SensorsBenchOptions& options);

struct E2EBenchOptions {
  std::filesystem::path dir;
  size_t queries = 100;
  size_t row_size = 256;
  size_t rows = 1000000;       // throughput phase
  double rate = 10000;         // rows/s in the latency phase
  double latency_seconds = 10;
  uint64_t backlog_mb = 1024;  // spooled while the collector is down
  bool tls = false;
  bool json = false;
};

int run_e2e_bench(const E2EBenchOptions& options);

struct EmbedBenchOptions {
  std::filesystem::path dir;
  size_t row_size = 256;
  size_t rows = 1000000;  // per round, for the host's pushes and the built-in query alike
  int rounds = 3;
  bool json = false;
};

int run_embed_bench(const EmbedBenchOptions& options);

struct KernelBenchOptions {
  std::string backend = "auto";  // auto, ebpf, proc_connector
  int workers = 0;               // storm threads; 0: one per core
  double seconds = 3;            // each phase
  int rounds = 3;                // off and on alternate; the medians count
  bool json = false;
};

int run_kernel_bench(const KernelBenchOptions& options);

struct FootprintBenchOptions {
  std::filesystem::path agent;  // the outpost-agent binary; default: beside outpost-bench
  std::filesystem::path dir;    // working directory (default: a new temp dir)
  double seconds = 30;          // each measurement
  bool json = false;
};

// The agent's own cost, as a new user meets it: `outpost-agent` with its
// default configuration (link offline), idle, then with one 10 rows/s clock
// query; CPU and RSS from /proc over `seconds`, and wakeups per second per
// thread (context switches).
int run_footprint_bench(const FootprintBenchOptions& options);

struct FleetBenchOptions {
  std::vector<size_t> agents{100};  // several: a sweep
  double rate = 10;                 // rows/s per agent
  int max_delay_ms = 0;
  double seconds = 20;  // the measured window
  double warmup = 3;
  unsigned threads = 2;
  double latency_target_ms = 1000;
  bool reconnect_storm = false;
  std::filesystem::path collector;  // default: beside outpost-bench
  std::vector<std::string> collector_args;  // more options for it
  std::string backend = "jsonl";  // or jetstream: NATS nodes started for each run
  unsigned collectors = 1;        // jetstream: collectors, agent i on collector i % collectors
  unsigned nats_nodes = 1;        // jetstream: 1, or a cluster of 3 (R=3)
  double kill_nats_node_at = -1;  // jetstream, 3 nodes: kill -9 one node this many seconds into the window
  std::filesystem::path dir;
  bool json = false;
};

int run_fleet_bench(const FleetBenchOptions& options);

}  // namespace outpost::bench
