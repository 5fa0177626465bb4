// The actor benchmarks: the whole pipeline (queries -> buffer actor -> file
// link) against the bare store, and the memory a query actor costs.

#include <caf/all.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <malloc.h>
#include <sys/resource.h>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "actors/buffer_actor.hpp"
#include "actors/file_link.hpp"
#include "actors/query_actor.hpp"
#include "actors/status.hpp"
#include "actors/test_sources.hpp"
#include "net/agent/inspector_server.hpp"
#include "schemas/inspector.capnp.h"
#include "tools/bench.hpp"
#include "tools/bench_queries.hpp"

namespace outpost::bench {
namespace fs = std::filesystem;
using persistence::BufferStore;

namespace {

std::shared_ptr<BufferStore> open_store(const fs::path& dir,
                                        persistence::SyncPolicy sync = persistence::SyncPolicy::full) {
  persistence::StoreOptions options;  // 1 GiB limit, as the agent's default
  options.dir = dir;
  options.sync = sync;
  return std::make_shared<BufferStore>(options);
}

// The agent without queries: buffer actor, file link, both wired up.
struct Agent : BenchSystem {
  buffer_actor buf;
  link_actor link;
  std::vector<query_actor> queries;

  Agent(const fs::path& dir, bool online, bool counters = true,
        persistence::SyncPolicy sync = persistence::SyncPolicy::full)
      : BenchSystem(counters) {
    buf = sys.spawn<caf::detached>(buffer, open_store(dir / "buffer", sync));
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

// Polls for up to 10 s.
bool eventually_true(const std::function<bool()>& done) {
  for (int i = 0; i < 1000; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// How much of the inspector's instrumentation a pipeline round runs with.
enum class Instrumentation { off, counters, watched };

// An inspector client as outpostctl top is one: histograms on, every actor's
// counters and status fetched twice a second, on a thread of its own.
class Watcher {
 public:
  Watcher(caf::actor_system& sys, ActorRegistry& registry, const fs::path& socket)
      : server_(net::InspectorContext{sys, registry, nullptr, supervisor_actor{}, spec(socket), "bench"}),
        thread_([this, socket] { run(socket.string()); }) {}
  ~Watcher() {
    stop_ = true;
    thread_.join();
  }
  uint64_t polls() const { return polls_; }

 private:
  static InspectorSpec spec(const fs::path& socket) {
    InspectorSpec s;
    s.socket = socket.string();
    return s;
  }
  void run(const std::string& socket) {
    auto io = kj::setupAsyncIo();
    auto stream = io.provider->getNetwork().parseAddress("unix:" + socket).wait(io.waitScope)->connect().wait(io.waitScope);
    capnp::TwoPartyClient client(*stream);
    auto inspector = client.bootstrap().castAs<inspector::Inspector>();
    auto watch = inspector.watchRequest();
    watch.setSeconds(3600);
    watch.send().wait(io.waitScope);
    while (!stop_) {
      auto req = inspector.actorsRequest();
      req.setWithStatus(true);
      req.send().wait(io.waitScope);
      ++polls_;
      io.provider->getTimer().afterDelay(500 * kj::MILLISECONDS).wait(io.waitScope);
    }
  }
  net::InspectorServer server_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> polls_{0};
  std::thread thread_;
};

// The time one message costs an actor with an empty handler: n messages sent
// from outside, handled one by one. The difference between modes is what
// the instrumentation adds to every message any actor handles.
struct sink_state {
  static inline const char* name = "bench-sink";
  uint64_t seen = 0;
};

caf::behavior sink(instrumented_actor<sink_state, caf::event_based_actor>* self) {
  return {[=](int) { ++self->state.seen; }, [=](caf::get_atom) { return self->state.seen; }};
}

double ns_per_message(Instrumentation mode, size_t n) {
  BenchSystem bs(mode != Instrumentation::off);
  if (mode == Instrumentation::watched) bs.cfg.registry->set_watching(true);
  auto a = bs.sys.spawn(sink);
  auto start = Clock::now();
  for (size_t i = 0; i < n; ++i) caf::anon_send(a, 1);
  uint64_t seen = 0;
  while (seen < n)
    bs.self->request(a, caf::infinite, caf::get_atom::value).receive([&](uint64_t s) { seen = s; }, [](caf::error&) {});
  double ns = seconds_since(start) * 1e9 / n;
  caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(bs.wake, caf::exit_reason::user_shutdown);
  return ns;
}

// CPU seconds (user and system, every thread) this process has used.
double cpu_seconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return s(u.ru_utime) + s(u.ru_stime);
}

struct PipelineRound {
  double rows_per_s = 0;
  double cpu_s = 0;       // the process's CPU time during the round
  uint64_t messages = 0;  // handled by the agent's actors (0 with counters off)
  uint64_t commits = 0, appends = 0, paused_ms = 0, backlog_bytes = 0, bytes_delivered = 0;
};

// Each query produces its share of `rows`; the round lasts until the last
// one has had all of its rows committed and has ended.
PipelineRound pipeline_round(const fs::path& dir, size_t rows, const PipelineBenchOptions& o,
                             Instrumentation mode = Instrumentation::counters,
                             persistence::SyncPolicy sync = persistence::SyncPolicy::full) {
  Agent agent(dir, true, mode != Instrumentation::off, sync);
  std::unique_ptr<Watcher> watcher;
  if (mode == Instrumentation::watched) {
    watcher = std::make_unique<Watcher>(agent.sys, *agent.cfg.registry, dir / "i.sock");
    if (!eventually_true([&] { return agent.cfg.registry->watching(); }))
      throw std::runtime_error("the inspector client did not start watching");
  }
  auto start = Clock::now();
  double cpu_start = cpu_seconds();
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
  r.cpu_s = cpu_seconds() - cpu_start;
  r.messages = agent.cfg.registry->handled_by_exited();
  for (auto& e : agent.cfg.registry->live()) r.messages += e.metrics->handled.load();
  agent.queries.clear();
  auto buf = request_status(agent.self, agent.buf);
  r.commits = count(buf, "commits");
  r.appends = count(buf, "appends");
  r.backlog_bytes = count(buf, "live_bytes");
  r.bytes_delivered = count(request_status(agent.self, agent.link), "bytes_written");
  for (auto ms : paused_ms) r.paused_ms += ms;
  watcher.reset();
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
  std::vector<double> rates, baselines, ratios, uncounted, counted, watched, costs, watched_costs;
  std::vector<double> messages;  // handled per CPU second, counters on
  PipelineRound last;
  for (int r = 0; r < o.rounds; ++r) {
    auto round_dir = work.path() / fmt::format("round-{}", r);
    baselines.push_back(baseline_round(round_dir / "bare", o.rows, o));
    last = pipeline_round(round_dir / "agent", o.rows, o);
    rates.push_back(last.rows_per_s);
    ratios.push_back(last.rows_per_s / baselines.back());
    // The instrumentation's cost: the same round with the actors' counters
    // off, on (as the agent runs), and on with an inspector client watching;
    // in an order that turns each round, so none is always first; without
    // fsync, whose latency varies far more than what is measured here.
    // The first run after the fsynced ones is slower whatever its mode: a
    // run whose figure is not kept goes first.
    pipeline_round(round_dir / "nosync-warmup", o.rows, o, Instrumentation::counters, persistence::SyncPolicy::none);
    // Wall-clock rates here swing by 3x between runs of the same mode (this
    // machine is shared), so the cost is taken from CPU time: the same rows
    // took cpu[mode] seconds of the process's CPU.
    double rate[3], cpu[3];
    for (int i = 0; i < 3; ++i) {
      int m = (r + i) % 3;
      auto round = pipeline_round(round_dir / fmt::format("nosync-{}", m), o.rows, o, static_cast<Instrumentation>(m),
                                  persistence::SyncPolicy::none);
      rate[m] = round.rows_per_s;
      cpu[m] = round.cpu_s;
      if (m == 1) messages.push_back(static_cast<double>(round.messages) / round.cpu_s);
    }
    uncounted.push_back(rate[0]);
    counted.push_back(rate[1]);
    watched.push_back(rate[2]);
    costs.push_back(1 - cpu[0] / cpu[1]);
    watched_costs.push_back(1 - cpu[0] / cpu[2]);
    fs::remove_all(round_dir);
    if (!o.json)
      fmt::print("  round {}: pipeline {:.0f} rows/s ({} appends in {} commits, queries paused {} ms "
                 "in all, {} MB delivered, {} MB backlog); bare store {:.0f} rows/s; without fsync: "
                 "counters off {:.0f}, on {:.0f}, watched {:.0f} rows/s\n",
                 r + 1, last.rows_per_s, last.appends, last.commits, last.paused_ms,
                 last.bytes_delivered / 1000000, last.backlog_bytes / 1000000, baselines.back(),
                 uncounted.back(), counted.back(), watched.back());
  }
  double rate = median(rates), baseline = median(baselines), ratio = median(ratios);
  double cost = median(costs), watched_cost = median(watched_costs);
  std::vector<double> per_message[3];
  for (int r = 0; r < 5; ++r)
    for (int i = 0; i < 3; ++i) {
      int m = (r + i) % 3;
      per_message[m].push_back(ns_per_message(static_cast<Instrumentation>(m), 500000));
    }
  double off_ns = median(per_message[0]), counted_ns = median(per_message[1]), watched_ns = median(per_message[2]);
  // What the per-message overhead adds up to at the pipeline's message rate.
  double derived = median(messages) * (counted_ns - off_ns) / 1e9;
  double watched_derived = median(messages) * (watched_ns - off_ns) / 1e9;
  if (o.json) {
    fmt::print(
        "{{\"bench\":\"pipeline\",\"queries\":{},\"rows\":{},\"row_size\":{},\"rounds\":{},"
        "\"rows_per_s\":{:.0f},\"baseline_rows_per_s\":{:.0f},\"ratio\":{:.3f},\"commits\":{},"
        "\"appends\":{},\"paused_ms_total\":{},\"bytes_delivered\":{},\"backlog_bytes\":{},"
        "\"nosync_uncounted_rows_per_s\":{:.0f},\"nosync_counted_rows_per_s\":{:.0f},"
        "\"nosync_watched_rows_per_s\":{:.0f},\"measured_instrumentation_cost\":{:.3f},"
        "\"measured_watched_instrumentation_cost\":{:.3f},\"message_ns\":{:.1f},\"message_overhead_ns\":{:.1f},"
        "\"watched_message_overhead_ns\":{:.1f},\"messages_per_cpu_s\":{:.0f},"
        "\"instrumentation_cost\":{:.4f},\"watched_instrumentation_cost\":{:.4f}}}\n",
        o.queries, o.rows, o.row_size, o.rounds, rate, baseline, ratio, last.commits, last.appends,
        last.paused_ms, last.bytes_delivered, last.backlog_bytes, median(uncounted), median(counted), median(watched), cost,
        watched_cost, off_ns, counted_ns - off_ns, watched_ns - off_ns, median(messages), derived, watched_derived);
  } else {
    fmt::print("pipeline: {:>10.0f} rows/s committed (median round)\n", rate);
    fmt::print("baseline: {:>10.0f} rows/s (bare store, 1000-row batches, fsync per commit)\n",
               baseline);
    fmt::print("ratio:    {:>10.3f}  (median of per-round ratios; target >= 0.8)\n", ratio);
    fmt::print("measured: {:.3f} with counters, {:.3f} watched, in CPU time for the same rows (within this "
               "machine's noise); without fsync: counters off {:.0f}, on {:.0f}, watched {:.0f} rows/s (medians "
               "of per-round figures)\n",
               cost, watched_cost, median(uncounted), median(counted), median(watched));
    fmt::print("per message: {:.0f} ns uncounted, +{:.0f} ns with counters, +{:.0f} ns watched (an empty "
               "handler, medians of 5); the pipeline handles {:.0f} messages per CPU second\n",
               off_ns, counted_ns - off_ns, watched_ns - off_ns, median(messages));
    fmt::print("instrumentation cost: {:.4f} with counters (target < 0.03), {:.4f} watched (target < 0.10): "
               "the overhead per message times the pipeline's messages per CPU second\n",
               derived, watched_derived);
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
