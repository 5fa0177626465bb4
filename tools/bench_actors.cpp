// The actor benchmarks: the whole pipeline (queries -> buffer actor -> file
// link) against the bare store, and the memory a query actor costs.

#include <caf/all.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <malloc.h>

#include <fstream>
#include <thread>

#include "actors/buffer_actor.hpp"
#include "actors/file_link.hpp"
#include "actors/query_actor.hpp"
#include "actors/status.hpp"
#include "actors/test_sources.hpp"
#include "tools/bench.hpp"
#include "tools/bench_queries.hpp"

namespace outpost::bench {
namespace fs = std::filesystem;
using persistence::BufferStore;

namespace {

std::shared_ptr<BufferStore> open_store(const fs::path& dir) {
  persistence::StoreOptions options;  // 1 GiB limit, as the agent's default
  options.dir = dir;
  options.sync = persistence::SyncPolicy::full;
  return std::make_shared<BufferStore>(options);
}

// The agent without queries: buffer actor, file link, both wired up.
struct Agent : BenchSystem {
  buffer_actor buf;
  link_actor link;
  std::vector<query_actor> queries;

  Agent(const fs::path& dir, bool online) {
    buf = sys.spawn<caf::detached>(buffer, open_store(dir / "buffer"));
    link = sys.spawn(file_link, buf, (dir / "delivered.jsonl").string(), online);
    caf::anon_send(buf, set_link_atom::value, link);
  }

  void start(const QuerySpec& spec) {
    queries.push_back(sys.spawn(query, std::make_shared<const QuerySpec>(spec), buf, wake, kTestSources));
  }

  // Stops the queries (they hand over), waits for all of them, then the rest.
  void stop() {
    for (auto& q : queries) {
      self->monitor(q);
      caf::anon_send(q, hand_over_atom::value);  // no answer: it would sit in our mailbox
    }
    size_t down = 0;
    self->receive_for(down, queries.size())([](caf::down_msg&) {});
    queries.clear();
    self->send_exit(link, caf::exit_reason::user_shutdown);
    self->send(buf, close_atom::value);
    self->send_exit(wake, caf::exit_reason::user_shutdown);
  }
};

struct PipelineRound {
  double rows_per_s = 0;
  uint64_t commits = 0, appends = 0, paused_ms = 0, backlog_bytes = 0, bytes_delivered = 0;
};

// Each query produces its share of `rows`; the round lasts until the last
// one has had all of its rows committed and has ended.
PipelineRound pipeline_round(const fs::path& dir, size_t rows, const PipelineBenchOptions& o) {
  Agent agent(dir, true);
  auto start = Clock::now();
  for (size_t i = 0; i < o.queries; ++i) {
    auto q = bench_query(i + 1, "Bench.Pipeline", SourceSpec::Kind::synthetic);
    q.source.rate = 0;  // as fast as the pipeline takes them
    q.source.row_size = o.row_size;
    q.source.max_rows = rows / o.queries + (i < rows % o.queries ? 1 : 0);
    agent.start(q);
  }
  // A query's pause time is sampled every 100 ms while it runs.
  std::vector<uint64_t> paused_ms(o.queries);
  for (auto& q : agent.queries) agent.self->monitor(q);
  auto next_sample = Clock::now();
  for (size_t down = 0; down < o.queries;) {
    if (Clock::now() >= next_sample) {
      for (size_t i = 0; i < o.queries; ++i) try {
          paused_ms[i] = count(request_status(agent.self, agent.queries[i]), "paused_ms_total");
        } catch (const std::runtime_error&) {  // it has ended: keep its last sample
        }
      next_sample = Clock::now() + std::chrono::milliseconds(100);
    }
    agent.self->receive(
        [&](caf::down_msg& d) {
          if (d.reason)
            throw std::runtime_error("a query failed: " + agent.sys.render(d.reason));
          ++down;
        },
        caf::after(std::chrono::milliseconds(100)) >> [] {});
  }
  PipelineRound r;
  r.rows_per_s = rows / seconds_since(start);
  agent.queries.clear();
  auto buf = request_status(agent.self, agent.buf);
  r.commits = count(buf, "commits");
  r.appends = count(buf, "appends");
  r.backlog_bytes = count(buf, "live_bytes");
  r.bytes_delivered = count(request_status(agent.self, agent.link), "bytes_written");
  for (auto ms : paused_ms) r.paused_ms += ms;
  agent.stop();
  return r;
}

// The same rows as the queries make, encoded once up front, appended by the
// bare store one batch of 1000 rows (one record) per fsynced transaction.
double baseline_round(const fs::path& dir, size_t rows, const PipelineBenchOptions& o) {
  constexpr size_t kRows = 1000;
  SourceSpec spec;
  spec.kind = SourceSpec::Kind::synthetic;
  spec.row_size = o.row_size;
  auto source = make_test_source(spec);
  schemas::RowBatchWriter writer(1, "Bench.Pipeline", "bench-1", Lane::EVENTS, source->columns());
  while (writer.row_count() < kRows) source->pull(writer, kRows - writer.row_count());
  auto encoded = writer.finish();
  auto bytes = encoded.bytes();

  auto store = open_store(dir);
  size_t batches = (rows + kRows - 1) / kRows;
  auto start = Clock::now();
  for (size_t i = 0; i < batches; ++i) {
    persistence::RecordIn record{1, schemas::now_ns(), bytes};
    auto result = store->append(Lane::EVENTS, kj::ArrayPtr<const persistence::RecordIn>(&record, 1));
    if (!result.ok()) throw std::runtime_error("baseline append refused: " + result.reason);
  }
  return batches * kRows / seconds_since(start);
}

long heap_bytes() {
  auto info = mallinfo2();
  return static_cast<long>(info.uordblks + info.hblkhd);
}

// A line of /proc/self/status, such as "VmRSS" or "RssAnon", in bytes.
long proc_status_bytes(const std::string& key) {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind(key + ":", 0) == 0) return std::stol(line.substr(key.size() + 1)) * 1024;
  throw std::runtime_error("no " + key + " in /proc/self/status");
}

long rss_bytes() { return proc_status_bytes("VmRSS"); }

}  // namespace

int run_pipeline_bench(const PipelineBenchOptions& o) {
  spdlog::set_level(spdlog::level::warn);
  WorkDir work(o.dir);
  if (o.rows < o.queries) throw std::invalid_argument("--rows must be at least --queries");
  if (!o.json)
    fmt::print("outpost-bench pipeline: {} queries, {} rows of {} bytes per round, sync=full, file "
               "sink, {} rounds, in {}\n",
               o.queries, o.rows, o.row_size, o.rounds, work.path().string());
  std::vector<double> rates, baselines, ratios;
  PipelineRound last;
  for (int r = 0; r < o.rounds; ++r) {
    auto round_dir = work.path() / fmt::format("round-{}", r);
    baselines.push_back(baseline_round(round_dir / "bare", o.rows, o));
    last = pipeline_round(round_dir / "agent", o.rows, o);
    rates.push_back(last.rows_per_s);
    ratios.push_back(last.rows_per_s / baselines.back());
    fs::remove_all(round_dir);
    if (!o.json)
      fmt::print("  round {}: pipeline {:.0f} rows/s ({} appends in {} commits, queries paused {} ms "
                 "in all, {} MB delivered, {} MB backlog); bare store {:.0f} rows/s\n",
                 r + 1, last.rows_per_s, last.appends, last.commits, last.paused_ms,
                 last.bytes_delivered / 1000000, last.backlog_bytes / 1000000, baselines.back());
  }
  double rate = median(rates), baseline = median(baselines), ratio = median(ratios);
  if (o.json) {
    fmt::print(
        "{{\"bench\":\"pipeline\",\"queries\":{},\"rows\":{},\"row_size\":{},\"rounds\":{},"
        "\"rows_per_s\":{:.0f},\"baseline_rows_per_s\":{:.0f},\"ratio\":{:.3f},\"commits\":{},"
        "\"appends\":{},\"paused_ms_total\":{},\"bytes_delivered\":{},\"backlog_bytes\":{}}}\n",
        o.queries, o.rows, o.row_size, o.rounds, rate, baseline, ratio, last.commits, last.appends,
        last.paused_ms, last.bytes_delivered, last.backlog_bytes);
  } else {
    fmt::print("pipeline: {:>10.0f} rows/s committed (median round)\n", rate);
    fmt::print("baseline: {:>10.0f} rows/s (bare store, 1000-row batches, fsync per commit)\n",
               baseline);
    fmt::print("ratio:    {:>10.3f}  (median of per-round ratios; target >= 0.8)\n", ratio);
  }
  return 0;
}

int run_queries_bench(const QueriesBenchOptions& o) {
  spdlog::set_level(spdlog::level::warn);
  WorkDir work(o.dir);
  Agent agent(work.path(), true);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  long empty_rss = rss_bytes(), empty_anon = proc_status_bytes("RssAnon"), empty_heap = heap_bytes(),
       empty_file = proc_status_bytes("RssFile");

  auto start = Clock::now();
  for (size_t i = 0; i < o.queries; ++i) {
    auto q = bench_query(i + 1, "Bench.Clock", SourceSpec::Kind::clock);
    q.source.period = std::chrono::seconds(1);
    agent.start(q);
  }
  double start_s = seconds_since(start);
  // Every query ticks at once, then each second: wait until each has stored
  // at least two rows, so that all of them have done real work.
  uint64_t appends = 0;
  auto deadline = Clock::now() + std::chrono::seconds(120);
  while ((appends = count(request_status(agent.self, agent.buf), "appends")) < 2 * o.queries) {
    if (Clock::now() > deadline)
      throw std::runtime_error(fmt::format("only {} appends from {} queries after 120 s", appends,
                                           o.queries));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // Measure between two ticks, when the queries are idle.
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  long busy_rss = rss_bytes(), busy_anon = proc_status_bytes("RssAnon"), busy_heap = heap_bytes(),
       busy_file = proc_status_bytes("RssFile");
  start = Clock::now();
  agent.stop();
  double stop_s = seconds_since(start);
  double per_query = static_cast<double>(busy_rss - empty_rss) / o.queries;
  double anon_per_query = static_cast<double>(busy_anon - empty_anon) / o.queries;
  double heap_per_query = static_cast<double>(busy_heap - empty_heap) / o.queries;
  double file_per_query = static_cast<double>(busy_file - empty_file) / o.queries;
  if (o.json) {
    fmt::print("{{\"bench\":\"queries\",\"queries\":{},\"empty_rss_bytes\":{},\"rss_bytes\":{},"
               "\"rss_bytes_per_query\":{:.0f},\"anon_bytes_per_query\":{:.0f},"
               "\"heap_bytes_per_query\":{:.0f},\"file_bytes_per_query\":{:.0f},\"start_s\":{:.3f},\"stop_s\":{:.3f},\"appends\":{}}}\n",
               o.queries, empty_rss, busy_rss, per_query, anon_per_query, heap_per_query, file_per_query, start_s, stop_s, appends);
  } else {
    fmt::print("outpost-bench queries: {} clock queries (1 s period), file link online\n", o.queries);
    fmt::print("RSS: {} bytes empty, {} bytes running: {:.0f} bytes per query (target < 2048)\n",
               empty_rss, busy_rss, per_query);
    fmt::print("of which anonymous memory {:.0f} bytes (malloc'd and in use {:.0f}), file-backed "
               "(the buffer's LMDB map) {:.0f} bytes per query\n",
               anon_per_query, heap_per_query, file_per_query);
    fmt::print("started in {:.3f} s, stopped (every batch handed over) in {:.3f} s\n", start_s, stop_s);
  }
  return 0;
}

}  // namespace outpost::bench
