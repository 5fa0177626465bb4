// The library as a host uses it: only include/outpost/outpost.hpp, real
// buffers in temporary directories, rows read back from the file link.

#include <gtest/gtest.h>

#include <dirent.h>
#include <signal.h>

#include <algorithm>
#include <set>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <mutex>
#include <thread>

#include "outpost/outpost.hpp"
#include "schemas/json_reader.hpp"
#include "tests/temp_dir.hpp"

namespace outpost {
namespace {

using namespace std::chrono_literals;
using schemas::Json;

bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit = 30s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

// Entries of a /proc/self directory: the process's threads or descriptors.
size_t count_entries(const char* dir) {
  size_t n = 0;
  if (DIR* d = opendir(dir)) {
    while (auto* e = readdir(d)) n += e->d_name[0] != '.';
    closedir(d);
  }
  return n;
}

// The process's threads once a stopped agent's have all exited: CAF 0.17
// lets its actor system end while a detached actor's thread is still
// returning, so right after stop() one may still be listed. The fewest seen
// over half a second.
size_t settled_threads() {
  size_t n = count_entries("/proc/self/task");
  for (int i = 0; i < 50; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    n = std::min(n, count_entries("/proc/self/task"));
  }
  return n;
}

struct AgentApi : ::testing::Test {
  testing::TempDir tmp;

  // An agent with one synthetic query `name` (id `id`) delivering to `<dir>/delivered.jsonl`.
  AgentOptions options(const std::string& dir, const std::string& name = "syn", int id = 7,
                       const std::string& extra = "") {
    AgentOptions o;
    o.origin = dir + ".yaml";
    o.config_yaml = "buffer: {dir: " + tmp.path(dir + "/buf").string() + ", limit: 64MiB}\n" +
                    "link: {type: file, path: " + tmp.path(dir + "/delivered.jsonl").string() + "}\n" +
                    "inspector: {socket: ~}\n"
                    "event_table: []\n"
                    "queries:\n"
                    "  - name: " + name + "\n"
                    "    id: " + std::to_string(id) + "\n"
                    "    source: {type: synthetic, rate: 2000, row_size: 32}\n" + extra;
    return o;
  }
  // Rows of query `id` delivered into `<dir>/delivered.jsonl`.
  uint64_t delivered(const std::string& dir, int id) {
    std::ifstream in(tmp.path(dir + "/delivered.jsonl"));
    std::string line, key = "\"query_id\":" + std::to_string(id) + ",";
    uint64_t n = 0;
    while (std::getline(in, line)) n += line.find(key) != std::string::npos;
    return n;
  }
};

TEST_F(AgentApi, TwoAgentsRunSideBySideInOneProcess) {
  Agent a(options("a", "alpha", 1)), b(options("b", "beta", 2));
  auto ra = a.start();
  ASSERT_TRUE(ra) << ra.message;
  auto rb = b.start();
  ASSERT_TRUE(rb) << rb.message;
  ASSERT_TRUE(eventually([&] { return delivered("a", 1) > 100 && delivered("b", 2) > 100; }));
  // Each delivers only its own query's rows, and lists only its own actors.
  EXPECT_EQ(delivered("a", 2), 0u);
  EXPECT_EQ(delivered("b", 1), 0u);
  auto names = [](const std::string& json) {
    std::set<std::string> s;
    for (auto& actor : Json::parse(json).a) s.insert(actor["Kind"].s + ":" + actor["Name"].s);
    return s;
  };
  auto sa = names(a.status_json()), sb = names(b.status_json());
  EXPECT_TRUE(sa.count("query:alpha") && !sa.count("query:beta")) << a.status_json();
  EXPECT_TRUE(sb.count("query:beta") && !sb.count("query:alpha")) << b.status_json();
  EXPECT_TRUE(sa.count("buffer:") && sa.count("link:") && sa.count("supervisor:")) << a.status_json();
  auto stopped = a.stop();
  EXPECT_TRUE(stopped) << stopped.message;
  // b runs on after a has stopped.
  uint64_t before = delivered("b", 2);
  ASSERT_TRUE(eventually([&] { return delivered("b", 2) > before + 100; }));
  EXPECT_TRUE(b.stop());
  EXPECT_EQ(a.status_json(), "[]");
}

// A hundred starts and stops, each stop from another thread than its start,
// leave no thread and no descriptor behind.
TEST_F(AgentApi, StartStopCyclesLeaveNoThreadOrDescriptorBehind) {
  { Agent warm(options("warm")); ASSERT_TRUE(warm.start()); ASSERT_TRUE(warm.stop()); }  // one-time initialisation
  size_t threads = settled_threads(), fds = count_entries("/proc/self/fd");
  for (int i = 0; i < 100; ++i) {
    Agent agent(options("cycle"));
    auto r = agent.start();
    ASSERT_TRUE(r) << "cycle " << i << ": " << r.message;
    if (i % 10 == 0) {  // it runs: its query is among its actors
      auto status = agent.status_json();
      EXPECT_NE(status.find("\"syn\":{"), std::string::npos) << status;
    }
    std::thread([&] { r = agent.stop(); }).join();
    ASSERT_TRUE(r) << "cycle " << i << ": " << r.message;
  }
  EXPECT_TRUE(eventually([&] { return count_entries("/proc/self/task") <= threads; }))
      << count_entries("/proc/self/task") << " threads, " << threads << " before";
  EXPECT_EQ(count_entries("/proc/self/fd"), fds);
}

TEST_F(AgentApi, StopBeforeStartTwiceAndFromAnotherThread) {
  Agent never(options("never"));
  EXPECT_TRUE(never.stop());
  EXPECT_TRUE(never.stop());
  EXPECT_TRUE(never.wait());
  auto r = never.start();
  EXPECT_EQ(r.code, Errc::already_started) << r.message;

  Agent agent(options("run"));
  ASSERT_TRUE(agent.start());
  EXPECT_EQ(agent.start().code, Errc::already_started);
  std::atomic<bool> waited{false};
  Result waited_result;
  std::thread waiter([&] {
    waited_result = agent.wait();
    waited = true;
  });
  ASSERT_TRUE(eventually([&] { return delivered("run", 7) > 0; }));
  EXPECT_FALSE(waited);
  std::thread stopper([&] { EXPECT_TRUE(agent.stop()); });
  stopper.join();
  waiter.join();
  EXPECT_TRUE(waited_result) << waited_result.message;
  EXPECT_TRUE(agent.stop());  // again: nothing left to do
  EXPECT_EQ(agent.start().code, Errc::already_started);
}

// A shutdown that cannot finish in time is forced: every actor ends, every
// thread is gone, and the buffer opens again.
TEST_F(AgentApi, AStopPastItsDeadlineEndsEveryActor) {
  { Agent warm(options("warm")); ASSERT_TRUE(warm.start()); ASSERT_TRUE(warm.stop()); }
  size_t threads = settled_threads();
  {
    Agent agent(options("forced"));
    ASSERT_TRUE(agent.start());
    ASSERT_TRUE(eventually([&] { return delivered("forced", 7) > 0; }));
    auto r = agent.stop(0ms);  // the supervisor cannot even have read its shutdown
    EXPECT_EQ(r.code, Errc::timeout) << r.message;
    EXPECT_NE(r.message.find("did not finish within 0 ms"), std::string::npos) << r.message;
    EXPECT_EQ(agent.status_json(), "[]");
  }
  EXPECT_TRUE(eventually([&] { return count_entries("/proc/self/task") <= threads; }))
      << count_entries("/proc/self/task") << " threads, " << threads << " before";
  Agent again(options("forced"));
  auto r = again.start();
  EXPECT_TRUE(r) << r.message;
  uint64_t before = delivered("forced", 7);
  ASSERT_TRUE(eventually([&] { return delivered("forced", 7) > before; }));
  EXPECT_TRUE(again.stop());
}

TEST_F(AgentApi, ABadConfigurationOrBufferIsRefusedNamingWhatAndWhere) {
  auto o = options("bad");
  o.config_yaml += "    batch: {rows: many}\n";
  Agent bad(o);
  auto r = bad.start();
  EXPECT_EQ(r.code, Errc::invalid_config);
  EXPECT_NE(r.message.find("bad.yaml"), std::string::npos) << r.message;
  EXPECT_EQ(bad.check().code, Errc::invalid_config);
  EXPECT_TRUE(bad.stop());

  auto v = options("vql", "q", 1);
  auto at = v.config_yaml.find("{type: synthetic");
  v.config_yaml = v.config_yaml.substr(0, at) + "{type: vql, query: 'SELECT FROM'}\n";
  Agent bad_vql(v);
  r = bad_vql.start();
  EXPECT_EQ(r.code, Errc::invalid_config);
  EXPECT_NE(r.message.find("query q"), std::string::npos) << r.message;

  // The buffer's directory cannot be made: a file stands where it would be.
  std::ofstream(tmp.path("file")) << "x";
  auto f = options("io");
  f.overrides = {"buffer.dir=" + tmp.path("file/buf").string()};
  Agent io(f);
  r = io.start();
  EXPECT_EQ(r.code, Errc::io) << r.message;
  EXPECT_NE(r.message.find(tmp.path("file").string()), std::string::npos) << r.message;
  EXPECT_TRUE(io.wait());
}

TEST_F(AgentApi, OneShotQueriesHandRowsToTheCaller) {
  Agent agent(options("oneshot"));
  std::vector<std::string> rows;
  auto collect = [&](const std::string& row) {
    rows.push_back(row);
    return true;
  };
  auto r = agent.run_query("SELECT _value AS x, _value * 3 AS y, N AS n FROM foreach(row=[1, 2, 3, 4, 5])", collect,
                           {{{"N", "three"}}, 0});
  ASSERT_TRUE(r) << r.message;
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_EQ(Json::parse(rows[4])["y"].n, 15);
  EXPECT_EQ(Json::parse(rows[4])["n"].s, "three");

  const std::string twenty = "SELECT _value FROM foreach(row=[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20])";
  rows.clear();
  EXPECT_TRUE(agent.run_query(twenty, collect, {{}, 3}));
  EXPECT_EQ(rows.size(), 3u);
  rows.clear();
  EXPECT_TRUE(agent.run_query(twenty, [&](const std::string& row) {
    rows.push_back(row);
    return rows.size() < 2;
  }));
  EXPECT_EQ(rows.size(), 2u);

  r = agent.run_query("SELECT FROM", collect);
  EXPECT_EQ(r.code, Errc::invalid_query) << r.message;
  r = agent.run_artifact("No.Such.Artifact", collect);
  EXPECT_EQ(r.code, Errc::invalid_query) << r.message;
  EXPECT_NE(r.message.find("No.Such.Artifact"), std::string::npos) << r.message;
}

// In a running agent a one-shot query sees its actors; an event query runs
// until the agent is asked to stop.
TEST_F(AgentApi, AQueryInARunningAgentSeesItsActorsAndEndsWithIt) {
  Agent agent(options("inside"));
  ASSERT_TRUE(agent.start());
  std::vector<std::string> kinds;
  auto r = agent.run_query("SELECT Kind FROM actors(status=FALSE)", [&](const std::string& row) {
    kinds.push_back(Json::parse(row)["Kind"].s);
    return true;
  });
  ASSERT_TRUE(r) << r.message;
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "buffer"), kinds.end());

  std::atomic<int> ticks{0};
  Result ended;
  std::thread events([&] {
    ended = agent.run_query("SELECT * FROM clock(period=0.01)", [&](const std::string&) {
      ++ticks;
      return true;
    });
  });
  ASSERT_TRUE(eventually([&] { return ticks > 2; }));
  agent.request_stop();
  events.join();
  EXPECT_TRUE(ended) << ended.message;
  EXPECT_TRUE(agent.wait());
}

// Threads of this process with this name (CAF 0.17 names its scheduler's
// workers "caf.multiplexer").
size_t threads_named(const std::string& name) {
  size_t n = 0;
  if (DIR* d = opendir("/proc/self/task")) {
    while (auto* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream comm(std::string("/proc/self/task/") + e->d_name + "/comm");
      std::string line;
      n += std::getline(comm, line) && line == name;
    }
    closedir(d);
  }
  return n;
}

TEST_F(AgentApi, TheHostChoosesTheNumberOfWorkerThreads) {
  for (unsigned workers : {2u, 7u}) {
    auto dir = "w" + std::to_string(workers);
    auto o = options(dir);
    o.worker_threads = workers;
    Agent agent(o);
    ASSERT_TRUE(agent.start());
    ASSERT_TRUE(eventually([&] { return delivered(dir, 7) > 10; }));  // running
    EXPECT_EQ(threads_named("caf.multiplexer"), workers);
    EXPECT_TRUE(agent.stop());
    EXPECT_TRUE(eventually([&] { return threads_named("caf.multiplexer") == 0; }));
  }
}

// The process's SIGPIPE disposition is the host's: an agent with every
// network thread (its link's, its inspector's, its metrics listener's) leaves
// it as it found it, whether the default or the host's own handler.
void host_handler(int) {}

TEST_F(AgentApi, TheHostsSigpipeDispositionIsLeftAlone) {
  for (auto handler : {SIG_DFL, &host_handler}) {
    struct sigaction set {}, after {};
    set.sa_handler = handler;
    ASSERT_EQ(sigaction(SIGPIPE, &set, nullptr), 0);
    auto dir = std::string(handler == SIG_DFL ? "dfl" : "own");
    auto o = options(dir);
    o.overrides = {"link.type=collector", "link.address=127.0.0.1:1", "link.insecure=true",
                   "inspector.socket=" + tmp.path(dir + "/i.sock").string(), "inspector.metrics=127.0.0.1:0"};
    Agent agent(o);
    ASSERT_TRUE(agent.start());
    // Its threads are up once the inspector answers actors() and the link has tried to connect.
    ASSERT_TRUE(eventually([&] { return agent.status_json().find("\"failed_attempts\":") != std::string::npos; }));
    ASSERT_EQ(sigaction(SIGPIPE, nullptr, &after), 0);
    EXPECT_EQ(after.sa_handler, handler) << dir;
    EXPECT_TRUE(agent.stop());
  }
  signal(SIGPIPE, SIG_DFL);
}

// What a LogSink received.
struct Lines {
  std::mutex mutex;
  std::vector<LogLine> lines;
  LogSink sink() {
    return [this](const LogLine& line) {
      std::lock_guard<std::mutex> lock(mutex);
      lines.push_back(line);
    };
  }
  // The lines containing `text`.
  std::vector<LogLine> with(const std::string& text) {
    std::lock_guard<std::mutex> lock(mutex);
    std::vector<LogLine> out;
    for (auto& l : lines)
      if (l.message.find(text) != std::string::npos) out.push_back(l);
    return out;
  }
};

TEST_F(AgentApi, EachAgentsLogGoesToItsHostSinkAtItsLevel) {
  Lines la, lb, lc;
  auto oa = options("a", "alpha", 1), ob = options("b", "beta", 2);
  oa.log_sink = la.sink();
  ob.log_sink = lb.sink();
  // c logs warnings and worse; its query fails after 10 rows.
  auto oc = options("c", "gamma", 3);
  auto source = oc.config_yaml.find("row_size: 32}");
  ASSERT_NE(source, std::string::npos);
  oc.config_yaml.replace(source, 13, "row_size: 32, fail_after: 10}");
  oc.overrides = {"log.level=warn"};
  oc.log_sink = lc.sink();
  Agent a(oa), b(ob), c(oc);
  ASSERT_TRUE(a.start());
  ASSERT_TRUE(b.start());
  ASSERT_TRUE(c.start());
  ASSERT_TRUE(eventually([&] { return !lc.with("query gamma failed").empty(); }));
  EXPECT_TRUE(a.stop());
  EXPECT_TRUE(b.stop());
  EXPECT_TRUE(c.stop());

  // Lines of the agent's actors, of its threads, and of the host's thread inside stop().
  for (auto* l : {&la, &lb}) {
    EXPECT_FALSE(l->with("agent running").empty());
    EXPECT_FALSE(l->with("supervisor: stopping").empty());
    EXPECT_FALSE(l->with("agent stopped").empty());
  }
  EXPECT_FALSE(la.with("query alpha stopped").empty());
  EXPECT_TRUE(la.with("beta").empty() && la.with("gamma").empty());
  EXPECT_FALSE(lb.with("query beta stopped").empty());
  EXPECT_TRUE(lb.with("alpha").empty() && lb.with("gamma").empty());
  auto failed = lc.with("query gamma failed");
  ASSERT_FALSE(failed.empty());
  EXPECT_EQ(failed[0].level, LogLevel::error);
  EXPECT_GT(failed[0].time_ns, 0);
  EXPECT_NE(failed[0].thread, 0u);
  EXPECT_TRUE(lc.with("agent running").empty()) << "an info line below its level";
  EXPECT_TRUE(lc.with("alpha").empty() && lc.with("beta").empty());
}

}  // namespace
}  // namespace outpost
