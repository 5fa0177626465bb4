// outpost-bench embed: the library's host path (push() into a host query,
// the host's sink as the link) against the built-in path (a synthetic query
// into the same sink), the same rows through the same durable buffer, in
// the same run. Public API only.

#include <fmt/format.h>

#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <string>

#include "outpost/outpost.hpp"
#include "tools/bench.hpp"

namespace outpost::bench {
namespace {

// Counts the rows of the query with id 1 that reach the sink; acknowledges at once.
struct Counter {
  std::mutex mutex;
  std::condition_variable more;
  uint64_t rows = 0;
  Sink sink() {
    return [this](const SinkBatch& batch, SinkAck ack) {
      uint64_t n = 0;
      for (auto& r : batch.records)
        if (r.query_id == 1) n += r.rows;
      ack();
      std::lock_guard<std::mutex> lock(mutex);
      rows += n;
      more.notify_all();
    };
  }
  void wait_for(uint64_t n) {
    std::unique_lock<std::mutex> lock(mutex);
    if (!more.wait_for(lock, std::chrono::minutes(10), [&] { return rows >= n; }))
      throw std::runtime_error(fmt::format("only {} of {} rows reached the sink in 10 minutes", rows, n));
  }
};

std::string config(const std::filesystem::path& dir, const std::string& source) {
  return fmt::format(
      "buffer: {{dir: {}, limit: 1GiB}}\nlink: host\ninspector: {{socket: ~}}\nevent_table: []\n"
      "queries:\n  - name: rows\n    id: 1\n    source: {}\n",
      dir.string(), source);
}

void check(const Result& r, const char* what) {
  if (!r) throw std::runtime_error(fmt::format("{}: {}: {}", what, to_string(r.code), r.message));
}

// Rows per second from start() returning to the last row in the sink.
double host_round(const EmbedBenchOptions& o, const std::filesystem::path& dir) {
  Counter counter;
  AgentOptions options;
  options.config_yaml = config(dir, "{type: host}");
  options.sink = counter.sink();
  Agent agent(options);
  check(agent.start(), "start");
  std::string data(o.row_size, 'x');
  auto start = Clock::now();
  for (uint64_t n = 1; n <= o.rows; ++n) {
    // The synthetic query's columns (Seq, Time, Data); Time as nanoseconds.
    Row row{{"Seq", n}, {"Time", static_cast<int64_t>(Clock::now().time_since_epoch().count())}, {"Data", data}};
    Result pushed;
    while ((pushed = agent.push("rows", row)).code == Errc::would_block)
      agent.wait_writable("rows", std::chrono::seconds(60));
    check(pushed, "push");
  }
  counter.wait_for(o.rows);
  double s = seconds_since(start);
  check(agent.stop(), "stop");
  return o.rows / s;
}

double builtin_round(const EmbedBenchOptions& o, const std::filesystem::path& dir) {
  Counter counter;
  AgentOptions options;
  options.config_yaml =
      config(dir, fmt::format("{{type: synthetic, rate: 0, row_size: {}, max_rows: {}}}", o.row_size, o.rows));
  options.sink = counter.sink();
  Agent agent(options);
  check(agent.start(), "start");
  auto start = Clock::now();
  counter.wait_for(o.rows);
  double s = seconds_since(start);
  check(agent.stop(), "stop");
  return o.rows / s;
}

}  // namespace

int run_embed_bench(const EmbedBenchOptions& o) {
  WorkDir work(o.dir);
  std::vector<double> host, builtin;
  for (int round = 0; round < o.rounds; ++round) {  // alternating, each in a fresh buffer
    builtin.push_back(builtin_round(o, work.path() / fmt::format("builtin-{}", round)));
    host.push_back(host_round(o, work.path() / fmt::format("host-{}", round)));
  }
  double h = median(host), b = median(builtin), ratio = h / b;
  if (o.json) {
    fmt::print("{{\"bench\":\"embed\",\"rows\":{},\"row_size\":{},\"rounds\":{},\"host_rows_per_s\":{:.0f},"
               "\"builtin_rows_per_s\":{:.0f},\"ratio\":{:.3f},\"within_10_percent\":{}}}\n",
               o.rows, o.row_size, o.rounds, h, b, ratio, ratio >= 0.9 ? "true" : "false");
  } else {
    fmt::print("embed: {} rows of {} bytes, median of {} rounds\n", o.rows, o.row_size, o.rounds);
    fmt::print("  host push() -> host sink: {:>10.0f} rows/s\n", h);
    fmt::print("  built-in query -> sink:   {:>10.0f} rows/s (baseline)\n", b);
    fmt::print("  ratio {:.3f} ({})\n", ratio, ratio >= 0.9 ? "within 10%" : "MORE THAN 10% SLOWER");
  }
  return 0;
}

}  // namespace outpost::bench
