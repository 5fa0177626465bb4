// The host's own VQL plugins and functions (AgentOptions::plugins and
// ::functions): configured queries and run_query() call them; their rows come
// in slices; what they throw fails only their query; a parked stream runs
// when the host wakes it; bad definitions and calls are refused by name.

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <sstream>
#include <thread>

#include "tests/actor_test_util.hpp"
#include "tests/host_test_util.hpp"
#include "tests/temp_dir.hpp"

namespace outpost {
namespace {

using namespace std::chrono_literals;
using schemas::Json;
using testing::eventually;
using testing::Held;

int64_t integer(const Arguments& args, const std::string& name) {
  auto* v = args.find(name);
  if (!v || !std::holds_alternative<int64_t>(*v)) throw std::invalid_argument(name + ": expected an int");
  return std::get<int64_t>(*v);
}

// host_counter(count, burst): rows N = 0..count-1, up to the budget per
// call, or all at once when `burst`.
struct Counter : PluginStream {
  int64_t next_n = 0, count = 0;
  bool burst = false;
  std::atomic<int>* calls;
  Counter(const Arguments& args, std::atomic<int>* c) : count(integer(args, "count")), calls(c) {
    auto* b = args.find("burst");
    burst = b && std::get<bool>(*b);
  }
  PluginStep next(std::vector<Row>& rows, size_t budget) override {
    ++*calls;
    for (size_t made = 0; next_n < count && (burst || made < budget); ++made, ++next_n)
      rows.push_back({{"N", next_n}});
    return next_n < count ? PluginStep::more() : PluginStep::done();
  }
};

// host_broken(after): `after` rows, then it throws.
struct Broken : PluginStream {
  int64_t left;
  explicit Broken(const Arguments& args) : left(integer(args, "after")) {}
  PluginStep next(std::vector<Row>& rows, size_t) override {
    if (left-- <= 0) throw std::runtime_error("the feed broke");
    rows.push_back({{"Left", left}});
    return PluginStep::more();
  }
};

// host_ticker(): a row every 5 ms, forever.
struct Ticker : PluginStream {
  int64_t n = 0;
  PluginStep next(std::vector<Row>& rows, size_t) override {
    rows.push_back({{"Tick", n++}});
    return PluginStep::after(5ms);
  }
};

// Events a host thread hands to host_events() streams, waking them.
struct EventFeed {
  std::mutex mutex;
  std::deque<int64_t> events;
  std::vector<WakeCallback> wakes;  // every stream's, also of streams gone

  void add(int64_t e) {
    std::vector<WakeCallback> to_wake;
    {
      std::lock_guard<std::mutex> lock(mutex);
      events.push_back(e);
      to_wake = wakes;
    }
    for (auto& w : to_wake) w();
  }
};

struct Events : PluginStream {
  EventFeed& feed;
  explicit Events(EventFeed& f) : feed(f) {}
  PluginStep next(std::vector<Row>& rows, size_t budget) override {
    std::lock_guard<std::mutex> lock(feed.mutex);
    for (; budget > 0 && !feed.events.empty(); --budget) {
      rows.push_back({{"Event", feed.events.front()}});
      feed.events.pop_front();
    }
    return feed.events.empty() ? PluginStep::parked() : PluginStep::more();
  }
};

// A row with the arguments as the plugin saw them.
struct Echo : PluginStream {
  Row row;
  bool done = false;
  explicit Echo(const Arguments& args) {
    row.push_back({"Json", args.json()});
    for (auto& [name, value] : args.values()) row.push_back({name, value});
  }
  PluginStep next(std::vector<Row>& rows, size_t) override {
    rows.push_back(row);
    return PluginStep::done();
  }
};

struct HostPlugin : ::testing::Test {
  testing::TempDir tmp;
  std::atomic<int> counter_calls{0};
  EventFeed feed;

  std::vector<PluginDef> plugins() {
    return {
        {"host_counter", "rows N = 0..count-1", {{"count", "int", true, ""}, {"burst", "bool", false, ""}}, false,
         [this](const Arguments& a, WakeCallback) { return std::make_unique<Counter>(a, &counter_calls); }},
        {"host_broken", "fails", {{"after", "int", true, ""}}, false,
         [](const Arguments& a, WakeCallback) { return std::make_unique<Broken>(a); }},
        {"host_ticker", "a row every 5 ms", {}, true,
         [](const Arguments&, WakeCallback) { return std::make_unique<Ticker>(); }},
        {"host_events", "the feed's events", {}, true,
         [this](const Arguments&, WakeCallback wake) {
           std::lock_guard<std::mutex> lock(feed.mutex);
           feed.wakes.push_back(std::move(wake));
           return std::make_unique<Events>(feed);
         }},
        {"host_echo", "its arguments", {{"*", "any", false, ""}}, false,
         [](const Arguments& a, WakeCallback) { return std::make_unique<Echo>(a); }},
    };
  }
  std::vector<FunctionDef> functions() {
    return {
        {"host_parity", "even or odd", {{"n", "int", true, ""}},
         [](const Arguments& a) -> Value { return std::string(integer(a, "n") % 2 ? "odd" : "even"); }},
        {"host_explode", "throws what is not an exception", {}, [](const Arguments&) -> Value { throw 42; }},
    };
  }

  AgentOptions options(const std::string& queries, Sink sink) {
    AgentOptions o;
    o.origin = "host-plugin.yaml";
    o.config_yaml = "buffer: {dir: " + tmp.path("buf").string() + ", limit: 64MiB}\n" +
                    "link: {type: host}\n"
                    "inspector: {socket: ~}\n"
                    "event_table: []\n"
                    "queries:\n" +
                    queries;
    o.sink = std::move(sink);
    o.plugins = plugins();
    o.functions = functions();
    return o;
  }
};

// The rows of query `id` the sink was handed, each record once by its seq.
std::vector<Json> rows_of(Held& held, uint64_t id) {
  std::map<std::pair<std::string, uint64_t>, std::string> records;
  {
    std::lock_guard<std::mutex> lock(held.mutex);
    for (auto& [batch, ack] : held.batches)
      for (auto& r : batch.records) records[{batch.lane, r.seq}] = r.json;
  }
  std::vector<Json> out;
  for (auto& [key, json] : records) {
    std::istringstream lines(json);
    for (std::string line; std::getline(lines, line);) {
      auto j = Json::parse(line);
      if (j.has("row") && j["query_id"].u() == id) out.push_back(j["row"]);
    }
  }
  return out;
}

TEST_F(HostPlugin, QueriesCallTheHostsPluginAndFunctionAndGetEveryRowInSlices) {
  Held held;
  held.auto_ack = true;
  Agent agent(options("  - name: counted\n"
                      "    id: 7\n"
                      "    source: {type: vql, query: 'SELECT N, host_parity(n=N) AS Parity FROM host_counter(count=5000)'}\n",
                      held.sink()));
  ASSERT_TRUE(agent.start());
  ASSERT_TRUE(eventually([&] { return rows_of(held, 7).size() >= 5000; }));
  auto rows = rows_of(held, 7);
  ASSERT_EQ(rows.size(), 5000u);
  for (size_t i = 0; i < rows.size(); ++i) {
    ASSERT_EQ(rows[i]["N"].u(), i);
    ASSERT_EQ(rows[i]["Parity"].s, i % 2 ? "odd" : "even");
  }
  EXPECT_GT(counter_calls.load(), 1);  // a slice at a time, never the whole at once

  // In one call, rows beyond the budget wait for the next: all of them come, in order.
  std::vector<int64_t> seen;
  auto r = agent.run_query("SELECT N FROM host_counter(count=3000, burst=true)", [&](const std::string& row) {
    seen.push_back(static_cast<int64_t>(Json::parse(row)["N"].n));
    return true;
  });
  ASSERT_TRUE(r) << r.message;
  ASSERT_EQ(seen.size(), 3000u);
  for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], static_cast<int64_t>(i));
  EXPECT_TRUE(agent.stop());
}

TEST_F(HostPlugin, WhatAPluginThrowsFailsOnlyItsQueryAndWhatAFunctionThrowsOnlyItsRow) {
  Held held;
  held.auto_ack = true;
  Agent agent(options("  - name: flaky\n"
                      "    id: 1\n"
                      "    source: {type: vql, query: 'SELECT * FROM host_broken(after=3)'}\n"
                      "  - name: steady\n"
                      "    id: 2\n"
                      "    source: {type: vql, query: 'SELECT * FROM host_ticker()'}\n",
                      held.sink()));
  ASSERT_TRUE(agent.start());
  auto flaky = [&] { return testing::status_of(agent, "supervisor")["query"]["flaky"]; };
  ASSERT_TRUE(eventually([&] { return flaky()["restarts"].u() >= 2; }));
  EXPECT_EQ(flaky()["last_error"].s, "host_broken(): the feed broke");
  // The other query goes on: its ticks keep coming after the failures.
  size_t ticks = rows_of(held, 2).size();
  ASSERT_TRUE(eventually([&] { return rows_of(held, 2).size() >= ticks + 20; }));

  // Run once, the failure is the call's answer, with the plugin's name.
  auto r = agent.run_query("SELECT * FROM host_broken(after=1)", [](const std::string&) { return true; });
  EXPECT_EQ(r.code, Errc::query_failed);
  EXPECT_EQ(r.message, "host_broken(): the feed broke");
  // A function's failure is Velociraptor's row error: NULL, a warning in the log, and the query goes on.
  std::vector<std::string> rows;
  r = agent.run_query("SELECT host_explode() AS X FROM info()", [&](const std::string& row) {
    rows.push_back(row);
    return true;
  });
  EXPECT_TRUE(r) << r.message;
  EXPECT_EQ(rows, (std::vector<std::string>{"{\"X\":null}"}));
  r = agent.run_query("SELECT * FROM host_counter(count='many')", [](const std::string&) { return true; });
  EXPECT_EQ(r.code, Errc::query_failed);
  EXPECT_EQ(r.message, "host_counter(): count: expected an int");
  EXPECT_TRUE(agent.stop());
}

TEST_F(HostPlugin, AParkedPluginRunsWhenTheHostWakesIt) {
  Held held;
  held.auto_ack = true;
  Agent agent(options("  - name: watched\n"
                      "    id: 3\n"
                      "    source: {type: vql, query: 'SELECT Event FROM host_events()'}\n",
                      held.sink()));
  ASSERT_TRUE(agent.start());
  ASSERT_TRUE(eventually([&] {
    std::lock_guard<std::mutex> lock(feed.mutex);
    return !feed.wakes.empty();  // the query's stream is open
  }));
  std::thread host([&] {
    for (int64_t e = 0; e < 50; ++e) {
      feed.add(e);
      std::this_thread::sleep_for(1ms);
    }
  });
  host.join();
  ASSERT_TRUE(eventually([&] { return rows_of(held, 3).size() >= 50; }));
  auto rows = rows_of(held, 3);
  ASSERT_EQ(rows.size(), 50u);
  for (size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(rows[i]["Event"].u(), i);

  EXPECT_TRUE(agent.stop());

  // Run once (in an agent not started), parked on this thread: the host's thread wakes it.
  AgentOptions o;
  o.plugins = plugins();
  Agent once(o);
  std::thread later([&] {
    for (int64_t e = 100; e < 105; ++e) {
      std::this_thread::sleep_for(5ms);
      feed.add(e);  // wakes the stopped agent's stream too, which is gone: nothing happens
    }
  });
  std::vector<int64_t> seen;
  QueryOptions five;
  five.max_rows = 5;
  auto r = once.run_query("SELECT Event FROM host_events()", [&](const std::string& row) {
    seen.push_back(static_cast<int64_t>(Json::parse(row)["Event"].n));
    return true;
  }, five);
  later.join();
  ASSERT_TRUE(r) << r.message;
  EXPECT_EQ(seen, (std::vector<int64_t>{100, 101, 102, 103, 104}));
  feed.add(200);  // both streams gone
}

TEST_F(HostPlugin, ArgumentsArriveEvaluatedAndAsJson) {
  Agent agent(AgentOptions{});
  AgentOptions o;
  o.plugins = plugins();
  Agent with(o);
  std::vector<Json> rows;
  auto r = with.run_query("SELECT * FROM host_echo(s='x', i=1+2, l=[1, 'a'], d=dict(k=true), n=NULL)",
                          [&](const std::string& row) {
                            rows.push_back(Json::parse(row));
                            return true;
                          });
  ASSERT_TRUE(r) << r.message;
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["Json"].s, R"({"s":"x","i":3,"l":[1,"a"],"d":{"k":true},"n":null})");
  EXPECT_EQ(rows[0]["s"].s, "x");
  EXPECT_EQ(rows[0]["i"].n, 3);
  EXPECT_EQ(rows[0]["l"].s, R"([1,"a"])");  // a list as its JSON text
  EXPECT_EQ(rows[0]["d"].s, R"({"k":true})");
  // Without the host's plugins, the same agent's VQL does not know the name.
  r = agent.run_query("SELECT * FROM host_echo()", [](const std::string&) { return true; });
  EXPECT_EQ(r.code, Errc::invalid_query);
  EXPECT_NE(r.message.find("unknown plugin host_echo()"), std::string::npos) << r.message;
}

TEST_F(HostPlugin, RefusedDefinitionsAndCallsNameWhatIsWrong) {
  // start() refuses the definitions (invalid_config), run_query() too (invalid_query), with the same message.
  auto start_with = [&](std::vector<PluginDef> plugins, std::vector<FunctionDef> functions,
                        const std::string& vql = "SELECT * FROM info()") {
    AgentOptions o = options("  - name: q\n    source: {type: vql, query: '" + vql + "'}\n", [](auto&&, auto) {});
    o.plugins = std::move(plugins);
    o.functions = std::move(functions);
    Agent agent(o);
    return agent.start();
  };
  auto refused = [&](std::vector<PluginDef> plugins, std::vector<FunctionDef> functions) {
    auto r = start_with(plugins, functions);
    AgentOptions o;
    o.plugins = std::move(plugins);
    o.functions = std::move(functions);
    auto once = Agent(o).run_query("SELECT * FROM info()", [](const std::string&) { return true; });
    EXPECT_EQ(r.code, Errc::invalid_config);
    EXPECT_EQ(once.code, Errc::invalid_query);
    EXPECT_EQ(once.message, r.message);
    return r.message;
  };
  auto opener = [](const Arguments&, WakeCallback) -> std::unique_ptr<PluginStream> { return nullptr; };
  EXPECT_EQ(refused({{"info", "", {}, false, opener}}, {}),
            "AgentOptions: plugin info: the name is taken (a built-in's, or given twice)");
  EXPECT_EQ(refused({{"host_x", "", {}, false, opener}, {"host_x", "", {}, false, opener}}, {}),
            "AgentOptions: plugin host_x: the name is taken (a built-in's, or given twice)");
  EXPECT_EQ(refused({{"host-x", "", {}, false, opener}}, {}),
            "AgentOptions: plugin 'host-x': not a name VQL can call (letters, digits and '_')");
  EXPECT_EQ(refused({}, {{"host_f", "", {}, nullptr}}), "AgentOptions: function host_f: no call()");
  EXPECT_EQ(refused({}, {{"host_f", "", {{"a", "", false, ""}, {"a", "", false, ""}},
                          [](const Arguments&) -> Value { return nullptr; }}}),
            "AgentOptions: function host_f: argument a is given twice");
  // A query naming an argument the plugin does not take, or leaving out a required one.
  auto r = start_with(plugins(), {}, "SELECT * FROM host_counter(count=1, nope=2)");
  EXPECT_EQ(r.code, Errc::invalid_config);
  EXPECT_NE(r.message.find("query q"), std::string::npos) << r.message;
  EXPECT_NE(r.message.find("nope"), std::string::npos) << r.message;
  r = start_with(plugins(), {}, "SELECT * FROM host_counter()");
  EXPECT_EQ(r.code, Errc::invalid_config);
  EXPECT_NE(r.message.find("count"), std::string::npos) << r.message;
  // open() that gives no stream fails the query, naming the plugin.
  AgentOptions o;
  o.plugins = {{"host_null", "", {}, false, opener}};
  Agent agent(o);
  r = agent.run_query("SELECT * FROM host_null()", [](const std::string&) { return true; });
  EXPECT_EQ(r.code, Errc::query_failed);
  EXPECT_EQ(r.message, "host_null(): open() gave no stream");
}

}  // namespace
}  // namespace outpost
