// outpost-bench vql: the evaluator's speed on a filter query, against the
// same filter hand-written over the same rows; parse_json() of one object of
// 100,000 keys against the same keys in objects of 16.
// outpost-bench sensors: N query actors on one shared sensor, through the
// buffer actor: events fanned out per second and memory per query, against
// a bare fan-out into N queues.

#include <caf/all.hpp>
#include <fmt/format.h>
#include <re2/re2.h>
#include <spdlog/spdlog.h>

#include <malloc.h>

#include <thread>

#include "actors/buffer_actor.hpp"
#include "actors/file_link.hpp"
#include "actors/status.hpp"
#include "queries/agent_sources.hpp"
#include "tools/bench.hpp"
#include "tools/bench_queries.hpp"

namespace outpost::bench {
namespace {

using namespace vql;

// Process-like rows: Pid, Ppid, Name (one in 16 is "sshd"), Exe, CommandLine.
std::vector<Row> process_rows(size_t n) {
  static const char* const kNames[] = {"bash", "systemd", "cron", "nginx", "postgres", "python3", "node", "java",
                                       "containerd", "dockerd", "rsyslogd", "chronyd", "dbus-daemon", "agetty", "top",
                                       "sshd"};
  std::vector<Row> rows(n);
  for (size_t i = 0; i < n; ++i) {
    std::string name = kNames[i % 16];
    rows[i].set("Pid", static_cast<int64_t>(i % 50000));
    rows[i].set("Ppid", static_cast<int64_t>(1));
    rows[i].set("Name", name);
    rows[i].set("Exe", "/usr/bin/" + name);
    rows[i].set("CommandLine", "/usr/bin/" + name + " --flag value");
  }
  return rows;
}

// The rows above, in slices, as a plugin: synthetic_processes(rows=N).
class SyntheticProcesses : public RowStream {
 public:
  explicit SyntheticProcesses(std::shared_ptr<const std::vector<Row>> rows) : rows_(std::move(rows)) {}
  Step next(std::vector<Row>& out, size_t budget) override {
    for (; next_ < rows_->size() && budget > 0; --budget) out.push_back((*rows_)[next_++]);
    return next_ < rows_->size() ? Step::more() : Step::done();
  }

 private:
  std::shared_ptr<const std::vector<Row>> rows_;
  size_t next_ = 0;
};

// A sensor that sends `per_tick` events every `period`.
class TickScanner : public Scanner {
 public:
  TickScanner(std::chrono::milliseconds period, int64_t per_tick) : period_(period), per_tick_(per_tick) {}
  std::chrono::milliseconds period() const override { return period_; }
  void scan(std::vector<Row>& events) override {
    for (int64_t i = 0; i < per_tick_; ++i) {
      Row r;
      r.set("Seq", ++seq_);
      r.set("Name", "event");
      events.push_back(std::move(r));
    }
  }

 private:
  std::chrono::milliseconds period_;
  int64_t per_tick_;
  int64_t seq_ = 0;
};

Registry bench_registry(std::shared_ptr<const std::vector<Row>> rows) {
  Registry r = default_registry();
  r.add(PluginSpec{"synthetic_processes", "", {}, false,
                   [rows](const Args&, Env&) { return std::make_unique<SyntheticProcesses>(rows); }});
  r.add(PluginSpec{"bench_events", "", {{"period", "seconds", false, ""}, {"per_tick", "int", false, ""}}, true,
                   [](const Args& a, Env& env) {
                     auto period = std::chrono::milliseconds(static_cast<int64_t>(a.find("period")->number().value() * 1000));
                     int64_t per_tick = a.integer("per_tick").value_or(1);
                     return env.sensors->subscribe(sensor_key(a), [period, per_tick] {
                       return std::make_unique<TickScanner>(period, per_tick);
                     }, env);
                   }});
  return r;
}


// parse_json()'s keys per second over `keys` keys in objects of
// `per_object` keys each (median of `rounds`).
double json_keys_per_s(Engine& engine, size_t keys, size_t per_object, int rounds) {
  std::vector<std::string> texts;
  for (size_t done = 0; done < keys; done += per_object) {
    std::string t = "{";
    for (size_t i = 0; i < per_object; ++i) t += fmt::format("{}\"key{}\":{}", i ? "," : "", done + i, i);
    texts.push_back(t + "}");
  }
  auto query = engine.compile("SELECT len(list=parse_json(data=Text)) AS N FROM scope()");
  std::vector<double> rates;
  for (int round = 0; round < rounds; ++round) {
    size_t seen = 0;
    auto start = Clock::now();
    for (auto& t : texts) {
      Env env;
      auto stream = engine.start(query, {{"Text", Value(t), nullptr}}, env);
      std::vector<Row> out;
      while (stream->next(out, 16).state != Step::State::done) {
      }
      seen += static_cast<size_t>(*out.at(0).find("N")->as_int());
    }
    if (seen != keys) throw std::runtime_error(fmt::format("parse_json() gave {} keys of {}", seen, keys));
    rates.push_back(keys / seconds_since(start));
  }
  return median(rates);
}

}  // namespace

int run_vql_bench(const VqlBenchOptions& o) {
  auto rows = std::make_shared<const std::vector<Row>>(process_rows(o.rows));
  Registry registry = bench_registry(rows);
  Engine engine(registry);
  auto query = engine.compile("SELECT * FROM synthetic_processes() WHERE Name =~ 'ssh' AND Pid > 100");
  std::vector<double> rates, baselines;
  size_t matched = 0, expected = 0;
  for (int round = 0; round < o.rounds; ++round) {
    // Baseline: the same filter over the same rows, by hand (a row copied
    // out as the plugin does, a regex match, a comparison).
    RE2::Options options;
    options.set_case_sensitive(false);
    RE2 re("ssh", options);
    auto start = Clock::now();
    expected = 0;
    for (auto& row : *rows) {
      Row copy = row;
      auto name = copy.find("Name")->as_string();
      if (RE2::PartialMatch(*name, re) && *copy.find("Pid")->as_int() > 100) ++expected;
    }
    baselines.push_back(rows->size() / seconds_since(start));

    Env env;
    auto stream = engine.start(query, {}, env);
    start = Clock::now();
    matched = 0;
    std::vector<Row> out;
    for (;;) {
      out.clear();
      Step step = stream->next(out, 1024);
      matched += out.size();
      if (step.state == Step::State::done) break;
    }
    rates.push_back(rows->size() / seconds_since(start));
  }
  if (matched != expected) throw std::runtime_error(fmt::format("the query matched {} rows, the baseline {}", matched, expected));
  double rate = median(rates), baseline = median(baselines);
  // A hostile file's wide object against the same keys in narrow objects: a
  // dict quadratic in its keys would make the wide one thousands of times
  // slower (37 s for these keys before the index), a linear one a few.
  constexpr size_t kJsonKeys = 100'000, kNarrow = 16;
  double narrow = json_keys_per_s(engine, kJsonKeys, kNarrow, o.rounds);
  double wide = json_keys_per_s(engine, kJsonKeys, kJsonKeys, o.rounds);
  if (o.json)
    fmt::print("{{\"bench\":\"vql\",\"rows\":{},\"matched\":{},\"rows_per_s\":{:.0f},\"baseline_rows_per_s\":{:.0f},"
               "\"ratio\":{:.3f},\"json_wide_keys_per_s\":{:.0f},\"json_narrow_keys_per_s\":{:.0f},\"json_wide_ratio\":{:.3f}}}\n",
               o.rows, matched, rate, baseline, rate / baseline, wide, narrow, wide / narrow);
  else
    fmt::print("outpost-bench vql: SELECT * FROM <{} process rows> WHERE Name =~ 'ssh' AND Pid > 100\n"
               "engine:   {:>10.0f} rows/s ({} matched; median of {} rounds)\n"
               "baseline: {:>10.0f} rows/s (the same filter written by hand over the same rows)\n"
               "ratio:    {:>10.3f}\n"
               "parse_json(), one object of {} keys: {:>10.0f} keys/s\n"
               "baseline, objects of {} keys:           {:>10.0f} keys/s\n"
               "ratio:    {:>10.3f}\n",
               o.rows, rate, matched, o.rounds, baseline, rate / baseline, kJsonKeys, wide, kNarrow, narrow,
               wide / narrow);
  return 0;
}

int run_sensors_bench(const SensorsBenchOptions& o) {
  spdlog::set_level(spdlog::level::warn);
  WorkDir work(o.dir);
  Registry registry = bench_registry(std::make_shared<const std::vector<Row>>());
  Engine engine(registry);
  auto query = std::make_shared<const ast::Query>(
      engine.compile(fmt::format("SELECT * FROM bench_events(period={}, per_tick={})", o.period_s, o.per_tick)));

  // Baseline: one event pushed into N bare queues and taken back out.
  std::vector<std::shared_ptr<Subscription>> queues;
  for (size_t i = 0; i < o.queries; ++i) queues.push_back(std::make_shared<Subscription>());
  auto event = std::make_shared<const Row>(Row());
  auto start = Clock::now();
  uint64_t bare = 0;
  std::vector<Row> taken;
  while (seconds_since(start) < 1) {
    for (auto& q : queues) q->push(event);
    for (auto& q : queues) q->take(taken, 10);
    bare += queues.size();
    taken.clear();
  }
  double bare_per_s = bare / seconds_since(start);
  queues.clear();

  BenchSystem bs;
  persistence::StoreOptions store;
  store.dir = work.path() / "buffer";
  auto buf = bs.sys.spawn<caf::detached>(buffer, std::make_shared<persistence::BufferStore>(store));
  auto link = bs.sys.spawn(file_link, buf, (work.path() / "delivered.jsonl").string(), true);
  caf::anon_send(buf, set_link_atom::value, link);
  SensorHub hub(bs.sys);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  long empty_rss = proc_status_bytes("VmRSS"), empty_anon = proc_status_bytes("RssAnon");
  size_t empty_heap = mallinfo2().uordblks;
  SourceFactory sources{[&](const QuerySpec&) -> std::unique_ptr<Source> {
    return std::make_unique<VqlSource>(engine, std::vector<std::shared_ptr<const ast::Query>>{query},
                                       std::vector<Binding>{}, default_paths(), &hub);
  }};
  std::vector<query_actor> actors;
  for (size_t i = 0; i < o.queries; ++i)
    actors.push_back(bs.sys.spawn(outpost::query, std::make_shared<const QuerySpec>(bench_query(i + 1, "Bench.Sensor", SourceSpec::Kind::vql)),
                                  buf, bs.wake, sources));
  auto committed = [&] {
    uint64_t rows = 0, dropped = 0;
    for (auto& q : actors) {
      auto s = request_status(bs.self, q);
      rows += count(s, "rows_committed");
      dropped += count(s, "dropped_at_source");
    }
    return std::make_pair(rows, dropped);
  };
  std::this_thread::sleep_for(std::chrono::seconds(2));  // every query subscribed and running
  auto before = committed();
  start = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
  auto after = committed();
  double elapsed = seconds_since(start);
  long busy_rss = proc_status_bytes("VmRSS"), busy_anon = proc_status_bytes("RssAnon");
  double heap_per_query = (static_cast<double>(mallinfo2().uordblks) - static_cast<double>(empty_heap)) / o.queries;
  double per_s = (after.first - before.first) / elapsed;
  double rss_per_query = static_cast<double>(busy_rss - empty_rss) / o.queries;
  double anon_per_query = static_cast<double>(busy_anon - empty_anon) / o.queries;
  size_t sensors = hub.running();
  for (auto& q : actors) caf::anon_send_exit(q, caf::exit_reason::user_shutdown);
  actors.clear();
  bs.self->send_exit(link, caf::exit_reason::user_shutdown);
  bs.self->send(buf, close_atom::value);
  bs.self->send_exit(bs.wake, caf::exit_reason::user_shutdown);
  if (o.json)
    fmt::print("{{\"bench\":\"sensors\",\"queries\":{},\"sensors\":{},\"events_per_tick\":{},\"period_s\":{},"
               "\"events_fanned_out_per_s\":{:.0f},\"baseline_fan_out_per_s\":{:.0f},\"ratio\":{:.3g},"
               "\"dropped_at_source\":{},\"rss_bytes_per_query\":{:.0f},\"anon_bytes_per_query\":{:.0f},\"heap_bytes_per_query\":{:.0f}}}\n",
               o.queries, sensors, o.per_tick, o.period_s, per_s, bare_per_s, per_s / bare_per_s,
               after.second, rss_per_query, anon_per_query, heap_per_query);
  else
    fmt::print("outpost-bench sensors: {} queries on {} sensor(s), {} events every {} s\n"
               "fan-out:  {:>10.0f} events/s reached the buffer, committed ({} dropped at the source)\n"
               "baseline: {:>10.0f} events/s pushed into and taken from {} bare queues\n"
               "memory:   {:>10.0f} bytes of RSS per query (query actor, VQL stream, subscription), "
               "{:.0f} of them anonymous, {:.0f} malloc'd and in use\n",
               o.queries, sensors, o.per_tick, o.period_s, per_s, after.second, bare_per_s, o.queries,
               rss_per_query, anon_per_query, heap_per_query);
  return 0;
}

}  // namespace outpost::bench
