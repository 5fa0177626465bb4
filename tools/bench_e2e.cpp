// outpost-bench e2e: agent -> collector over loopback, both durable, in one
// process (the collector on its own kj thread). Throughput, row latency at a
// moderate rate, and the drain of a backlog spooled while the collector was
// down, with the latency of live rows during that drain.

#include <caf/all.hpp>
#include <fmt/format.h>
#include <kj/io.h>
#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <fstream>
#include <future>
#include <thread>

#include "actors/buffer_actor.hpp"
#include "actors/buffer_reader.hpp"
#include "actors/query_actor.hpp"
#include "actors/status.hpp"
#include "actors/test_sources.hpp"
#include "net/collector/collector_server.hpp"
#include "net/collector/collector_store.hpp"
#include "net/agent/net_link.hpp"
#include "tools/bench.hpp"
#include "tools/bench_queries.hpp"

namespace outpost::bench {
namespace fs = std::filesystem;

namespace {

// The collector, served from its own thread until destroyed.
class CollectorThread {
 public:
  CollectorThread(const fs::path& datadir, net::CollectorConfig config) {
    std::promise<uint16_t> bound;
    auto port = bound.get_future();
    thread_ = std::thread([&, config]() mutable {
      try {
        auto io = kj::setupAsyncIo();
        net::CollectorStore store(datadir);
        net::StorageWorker worker(store);
        net::CollectorServer server(io, config, store, worker);
        auto stop = kj::newPromiseAndCrossThreadFulfiller<void>();
        {
          std::lock_guard<std::mutex> lock(mutex_);
          stop_ = kj::mv(stop.fulfiller);
        }
        bound.set_value(server.start().wait(io.waitScope));
        stop.promise.wait(io.waitScope);
      } catch (...) {
        bound.set_exception(std::current_exception());
      }
    });
    port_ = port.get();
  }
  ~CollectorThread() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stop_) stop_->fulfill();
    }
    thread_.join();
  }
  uint16_t port() const { return port_; }

 private:
  std::mutex mutex_;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop_;
  std::thread thread_;
  uint16_t port_ = 0;
};

// Reads the lines the files of an artifact folder gain, and the delay of
// each row: now - its Time. Woken by inotify and cheap per row, so that the
// delay measured is the pipeline's, not a polling interval's or this
// reader's (it shares the machine's two cores with what it measures).
class RowTail {
 public:
  explicit RowTail(fs::path dir) : dir_(std::move(dir)), inotify_(inotify_init1(IN_CLOEXEC)) {
    fs::create_directories(dir_);
    if (inotify_ < 0 || inotify_add_watch(inotify_, dir_.c_str(), IN_MODIFY | IN_CREATE) < 0)
      throw std::system_error(errno, std::generic_category(), "inotify on " + dir_.string());
  }
  // Until the files change, or `limit`.
  void wait(std::chrono::milliseconds limit) {
    pollfd p{inotify_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(limit.count())) <= 0) return;
    char events[4096];
    while (read(inotify_, events, sizeof events) == sizeof events) {
    }
  }

  void poll(std::vector<double>& delays_ms) {
    for (auto& e : fs::directory_iterator(dir_)) {
      auto [it, added] = files_.try_emplace(e.path().string());
      if (added) it->second.fd = kj::AutoCloseFd(open(e.path().c_str(), O_RDONLY | O_CLOEXEC));
      if (it->second.fd >= 0) read_lines(it->second, delays_ms);
    }
  }

 private:
  struct File {
    kj::AutoCloseFd fd;
    std::string partial;  // a line still being written
  };

  void read_lines(File& f, std::vector<double>& delays_ms) {
    char buf[1 << 16];
    for (ssize_t n; (n = read(f.fd, buf, sizeof buf)) > 0;) {
      int64_t now = schemas::now_ns();
      f.partial.append(buf, static_cast<size_t>(n));
      size_t start = 0;
      for (size_t end; (end = f.partial.find('\n', start)) != std::string::npos; start = end + 1) {
        std::string_view line(f.partial.data() + start, end - start);
        auto pos = line.find("\"Time\":\"");
        if (pos != std::string_view::npos && line.size() >= pos + 8 + 29)
          delays_ms.push_back((now - parse_time(line.substr(pos + 8, 29))) / 1e6);
      }
      f.partial.erase(0, start);
    }
  }

  // 2026-11-27T22:13:38.306335881Z; the date and time to the second are
  // converted once per second of rows.
  int64_t parse_time(std::string_view t) {
    if (t.substr(0, 19) != second_text_) {
      second_text_ = std::string(t.substr(0, 19));
      struct tm tm = {};
      strptime(second_text_.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
      second_ns_ = static_cast<int64_t>(timegm(&tm)) * 1000000000;
    }
    int64_t frac = 0;
    for (char c : t.substr(20, 9)) frac = frac * 10 + (c - '0');
    return second_ns_ + frac;
  }

  fs::path dir_;
  kj::AutoCloseFd inotify_;
  std::map<std::string, File> files_;
  std::string second_text_;
  int64_t second_ns_ = 0;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

// The distribution as JSON: [p0, p1, ..., p100] in ms (the plots' CDF).
std::string percentiles_json(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  std::string out = "[";
  for (int p = 0; v.size() && p <= 100; ++p)
    out += fmt::format("{}{:.2f}", p ? "," : "", v[std::min(v.size() - 1, v.size() * p / 100)]);
  return out + "]";
}

struct Agent : BenchSystem {
  buffer_actor buf;
  net_link_actor link;

  Agent(const fs::path& dir, net::ClientConfig client) {
    persistence::StoreOptions o;
    o.dir = dir;
    o.sync = persistence::SyncPolicy::full;
    o.limit_bytes = 2ull << 30;
    auto store = std::make_shared<persistence::BufferStore>(o);
    buf = sys.spawn<caf::detached>(buffer, store);
    auto reader = sys.spawn<caf::detached>(buffer_reader, store, buf);
    link = sys.spawn(net::net_link, buf, reader, std::move(client));
    caf::anon_send(buf, set_link_atom::value, link_actor{link});
  }
  ~Agent() {
    self->send_exit(link, caf::exit_reason::user_shutdown);
    self->send(buf, close_atom::value);
    self->send_exit(wake, caf::exit_reason::user_shutdown);
  }

  std::vector<query_actor> start(size_t n, const std::string& artifact, Lane lane, double rate,
                                 uint64_t max_rows, size_t row_size) {
    std::vector<query_actor> out;
    for (size_t i = 0; i < n; ++i) {
      auto q = bench_query(next_id++, artifact, SourceSpec::Kind::synthetic);
      q.lane = lane;
      q.source.rate = rate;
      q.source.max_rows = max_rows;
      q.source.row_size = row_size;
      out.push_back(sys.spawn(query, std::make_shared<const QuerySpec>(q), buf, wake, kTestSources));
    }
    return out;
  }
  void stop(const std::vector<query_actor>& queries) {
    for (auto& q : queries) self->send_exit(q, caf::exit_reason::user_shutdown);
  }
  uint64_t buffered_bytes() { return count(request_status(self, buf), "live_bytes"); }
  bool online() { return caf::get_or(request_status(self, link), "state", std::string()) == "online"; }

  uint64_t next_id = 1;
};

void wait_until(const std::function<bool()>& done, const char* what, std::chrono::seconds limit) {
  auto deadline = Clock::now() + limit;
  while (!done()) {
    if (Clock::now() > deadline) throw std::runtime_error(std::string("timed out waiting for ") + what);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// The baseline: the collector's store alone, storing the same rows as
// 1,000-row records in uploads of about 1 MiB, one store() (one fsync) each.
double store_baseline(const fs::path& dir, const E2EBenchOptions& o) {
  SourceSpec spec;
  spec.kind = SourceSpec::Kind::synthetic;
  spec.row_size = o.row_size;
  auto source = make_test_source(spec);
  schemas::RowBatchWriter writer(1, "Bench.Baseline", "baseline", Lane::EVENTS, source->columns());
  while (writer.row_count() < 1000) source->pull(writer, 1000 - writer.row_count());
  auto record = writer.finish();
  size_t per_upload = std::max<size_t>(1, (1u << 20) / record.size());
  net::CollectorStore store(dir);
  uint64_t seq = 0, rows = 0;
  auto start = Clock::now();
  while (rows < o.rows) {
    net::Upload up;
    up.agent = "baseline";
    up.after = seq;
    for (size_t i = 0; i < per_upload; ++i) up.records.push_back({++seq, record.bytes()});
    auto results = store.store({up});
    if (!results[0].error.empty()) throw std::runtime_error("baseline store: " + results[0].error);
    rows += per_upload * 1000;
  }
  return rows / seconds_since(start);
}

}  // namespace

int run_e2e_bench(const E2EBenchOptions& o) {
  spdlog::set_level(spdlog::level::warn);
  WorkDir work(o.dir);
  net::CollectorConfig server;
  server.port = 0;
  net::ClientConfig client;
  if (o.tls) {
    auto certs = work.path() / "certs";
    std::string script = OUTPOST_CERTS;
    if (std::system((script + " init " + certs.string() + " >/dev/null && " + script + " agent " +
                     certs.string() + " bench-agent").c_str()) != 0)
      throw std::runtime_error("outpost-certs failed");
    server.tls = {(certs / "ca.pem").string(), (certs / "collector.pem").string(),
                  (certs / "collector.key").string(), false};
    client.tls = {(certs / "ca.pem").string(), (certs / "bench-agent.pem").string(),
                  (certs / "bench-agent.key").string(), false};
  } else {
    server.tls.insecure = client.tls.insecure = true;
    client.claimed_id = "bench-agent";
  }
  client.backoff = {std::chrono::milliseconds(20), std::chrono::milliseconds(200)};
  fs::path data = work.path() / "collector";
  auto collector = std::make_unique<CollectorThread>(data, server);
  server.port = client.port = collector->port();
  Agent agent(work.path() / "buffer", client);
  wait_until([&] { return agent.online(); }, "the link to connect", std::chrono::seconds(30));

  // 1. Throughput: every row produced, stored by the collector, acked.
  auto start = Clock::now();
  // Done when every query has ended (all its rows committed) and the buffer
  // is empty (all of them stored by the collector and acked).
  auto producers =
      agent.start(o.queries, "Bench.Throughput", Lane::EVENTS, 0, o.rows / o.queries, o.row_size);
  for (auto& q : producers) agent.self->monitor(q);
  size_t ended = 0;
  agent.self->receive_for(ended, producers.size())([](caf::down_msg&) {});
  wait_until([&] { return agent.buffered_bytes() == 0; }, "the throughput rows to drain",
             std::chrono::seconds(600));
  double rows_per_s = (o.rows / o.queries * o.queries) / seconds_since(start);
  double baseline_rows_per_s = store_baseline(work.path() / "baseline", o);

  // 2. Latency at a moderate rate.
  std::vector<double> delays;
  RowTail latency_tail(data / "bench-agent" / "Bench.Latency");
  auto latency_queries =
      agent.start(o.queries, "Bench.Latency", Lane::EVENTS, o.rate / o.queries, 0, o.row_size);
  auto until = Clock::now() + std::chrono::duration<double>(o.latency_seconds);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // warm-up
  latency_tail.poll(delays);
  delays.clear();
  while (Clock::now() < until) {
    latency_tail.wait(std::chrono::milliseconds(50));
    latency_tail.poll(delays);
  }
  agent.stop(latency_queries);
  double p50 = percentile(delays, 0.5), p99 = percentile(delays, 0.99);
  size_t latency_rows = delays.size();

  // 3. Backlog: spool while the collector is down, then drain with live rows flowing.
  collector.reset();
  uint64_t target = o.backlog_mb << 20;
  auto spool = agent.start(o.queries, "Bench.Backlog", Lane::RESULTS, 0, 0, o.row_size);
  wait_until([&] { return agent.buffered_bytes() >= target; }, "the backlog to spool",
             std::chrono::seconds(600));
  agent.stop(spool);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  uint64_t backlog = agent.buffered_bytes();
  RowTail live_tail(data / "bench-agent" / "Bench.Live");
  std::vector<double> live_delays;
  start = Clock::now();
  collector = std::make_unique<CollectorThread>(data, server);
  // Live rows made while the collector was still starting would measure
  // the reconnection, not the drain.
  wait_until([&] { return agent.online(); }, "the link to reconnect", std::chrono::seconds(30));
  auto live = agent.start(10, "Bench.Live", Lane::EVENTS, 100, 0, o.row_size);
  std::string drain_curve = fmt::format("[[0,{}]", backlog);  // [s, bytes still buffered] every 0.1 s
  auto next_point = start + std::chrono::milliseconds(100);
  while (agent.buffered_bytes() > (1u << 20)) {
    live_tail.wait(std::chrono::milliseconds(20));
    live_tail.poll(live_delays);
    if (Clock::now() >= next_point) {
      drain_curve += fmt::format(",[{:.2f},{}]", seconds_since(start), agent.buffered_bytes());
      next_point += std::chrono::milliseconds(100);
    }
    if (seconds_since(start) > 900) throw std::runtime_error("the backlog did not drain in 15 min");
  }
  double drain_s = seconds_since(start);
  drain_curve += fmt::format(",[{:.2f},{}]]", drain_s, agent.buffered_bytes());
  agent.stop(live);
  double drain_mb_per_s = backlog / 1e6 / drain_s;
  double live_p99 = percentile(live_delays, 0.99);

  if (o.json) {
    fmt::print(
        "{{\"bench\":\"e2e\",\"tls\":{},\"queries\":{},\"row_size\":{},\"rows\":{},\"rows_per_s\":{:.0f},"
        "\"baseline_rows_per_s\":{:.0f},\"ratio\":{:.3f},"
        "\"rate\":{},\"latency_rows\":{},\"latency_p50_ms\":{:.2f},\"latency_p99_ms\":{:.2f},"
        "\"backlog_bytes\":{},\"backlog_drain_mb_per_s\":{:.1f},\"live_rows\":{},\"live_p99_ms\":{:.2f},"
        "\"latency_percentiles_ms\":{},\"live_percentiles_ms\":{},\"drain_curve\":{}}}\n",
        o.tls, o.queries, o.row_size, o.rows, rows_per_s, baseline_rows_per_s,
        rows_per_s / baseline_rows_per_s, o.rate, latency_rows, p50, p99, backlog,
        drain_mb_per_s, live_delays.size(), live_p99, percentiles_json(delays), percentiles_json(live_delays),
        drain_curve);
  } else {
    fmt::print("outpost-bench e2e ({}): {} queries, {}-byte rows, agent and collector durable\n",
               o.tls ? "TLS" : "plaintext", o.queries, o.row_size);
    fmt::print("throughput: {:>10.0f} rows/s end to end (target >= 300k)\n", rows_per_s);
    fmt::print("baseline:   {:>10.0f} rows/s: the collector's store alone, same rows, 1 MiB "
               "uploads, one fsync each; ratio {:.3f}\n",
               baseline_rows_per_s, rows_per_s / baseline_rows_per_s);
    fmt::print("latency at {} rows/s: p50 {:.2f} ms, p99 {:.2f} ms over {} rows (target p99 < 5)\n",
               o.rate, p50, p99, latency_rows);
    fmt::print("backlog of {} MB drained at {:.1f} MB/s (target >= 150); live rows p99 {:.2f} ms "
               "over {} rows (target < 50)\n",
               backlog / 1000000, drain_mb_per_s, live_p99, live_delays.size());
  }
  return 0;
}

}  // namespace outpost::bench
