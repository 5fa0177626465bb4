// The process tracker fed by the kernel, as Linux.Events.TrackProcesses
// runs it in an agent: a process tree this test builds (running, exited,
// then all ended) is what another query reads, through both backends; and
// the tracker stays within MaxSize under a storm of short processes.

#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <caf/all.hpp>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <iostream>
#include <thread>

#include "actors/system_config.hpp"
#include "queries/artifacts.hpp"
#include "queries/engine.hpp"
#include "queries/process_tracker.hpp"
#include "tests/vql_test_util.hpp"

extern char** environ;

namespace outpost::vql {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// `script` run by /bin/sh in a process group of its own; its pid.
pid_t spawn_sh(const std::string& script) {
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  std::string sh = "/bin/sh", c = "-c", text = script;
  char* argv[] = {sh.data(), c.data(), text.data(), nullptr};
  pid_t pid = 0;
  if (posix_spawn(&pid, argv[0], nullptr, &attr, argv, environ) != 0) pid = 0;
  posix_spawnattr_destroy(&attr);
  return pid;
}

// A tree node's shape with each level's children sorted by name: processes
// started within a clock tick of each other have no order to test. A process
// without a name shows as `unnamed`.
std::string sorted_shape(const Value& node, const std::string& unnamed = "?") {
  auto d = node.as_dict();
  if (!d) return "?";
  std::string out = to_string(*d->find("name"));
  if (out.empty()) out = unnamed;
  auto children = d->find("children");
  if (!children || children->is_null()) return out;
  std::vector<std::string> parts;
  for (auto& child : *children->as_list()) parts.push_back(sorted_shape(child, unnamed));
  std::sort(parts.begin(), parts.end());
  out += "(";
  for (auto& p : parts) out += (out.back() == '(' ? "" : " ") + p;
  return out + ")";
}

// Names of the tree's processes that have ended / still run.
void ended_and_running(const Value& node, std::multiset<std::string>& ended, std::multiset<std::string>& running) {
  auto d = node.as_dict();
  if (!d) return;
  auto data = d->find("data")->as_dict();
  auto end = data->find("EndTime")->as_timestamp();
  (end && end->ns != 0 ? ended : running).insert(to_string(*d->find("name")));
  if (auto children = d->find("children"); children && children->as_list())
    for (auto& child : *children->as_list()) ended_and_running(child, ended, running);
}

struct TrackProcesses : ::testing::TestWithParam<ProcessBackend> {
  AgentSystemConfig cfg;
  caf::actor_system sys{cfg};
  std::unique_ptr<SensorHub> hub;
  Engine engine{default_registry(), &ArtifactRepository::builtin()};
  Env owner_env, reader_env;
  std::unique_ptr<RowStream> owner;

  TrackProcesses() {
    SensorSettings settings;
    settings.process_events.backend = GetParam();
    hub = std::make_unique<SensorHub>(sys, settings);
    owner_env.sensors = reader_env.sensors = hub.get();
  }
  ~TrackProcesses() override {
    owner.reset();
    owner_env.background.clear();  // the tracker and its queries: gone with the query, as in an agent
    hub.reset();
    sys.await_all_actors_done();
  }

  // Starts the artifact; true once its updates show a process of ours
  // starting (the sensor sees events from then on); false and why when the
  // backend cannot start here.
  bool start(int64_t max_size, std::string& why) {
    try {
      open_process_events({GetParam()});
    } catch (const std::exception& e) {
      why = e.what();
      return false;
    }
    owner = engine.start("SELECT * FROM Artifact.Linux.Events.TrackProcesses(AlsoForwardUpdates=true, MaxSize=" +
                             std::to_string(max_size) + ", SyncPeriod=3600)",
                         {}, owner_env);
    for (auto deadline = Clock::now() + 20s; Clock::now() < deadline;) {
      pid_t marker = spawn_sh("exit 0");
      ::waitpid(marker, nullptr, 0);
      for (auto until = Clock::now() + 300ms; Clock::now() < until;) {
        std::vector<Row> rows;
        owner->next(rows, 10000);
        for (auto& r : rows)
          if (auto id = r.find("Id"); id && to_string(*id) == std::to_string(marker)) return true;
        std::this_thread::sleep_for(10ms);
      }
    }
    ADD_FAILURE() << "the tracker never saw a process start";
    return false;
  }

  // The reader's value of `expr`, the owner pulled first (as its agent would).
  Value read(const std::string& expr) {
    std::vector<Row> rows;
    owner->next(rows, 100000);
    auto reader = engine.start("SELECT " + expr + " AS X FROM scope()", {}, reader_env);
    rows.clear();
    while (reader->next(rows, 100).state != Step::State::done) {
    }
    return rows.size() == 1 ? *rows[0].find("X") : Value();
  }

  // Pulls until `done` holds for `expr`'s value (20 s at most); its last value.
  Value until(const std::string& expr, const std::function<bool(const Value&)>& done) {
    Value v;
    for (auto deadline = Clock::now() + 20s; Clock::now() < deadline; std::this_thread::sleep_for(20ms))
      if (done(v = read(expr))) break;
    return v;
  }
};

TEST_P(TrackProcesses, AnotherQueryReadsTheTreeTheTestBuiltWithItsExitedProcesses) {
  std::string why;
  if (!start(10'000, why)) GTEST_SKIP() << why;
  // sh > {sleep, true (exits), sh > {sleep, true (exits)}}.
  pid_t root = spawn_sh("sleep 60 & /bin/true; /bin/sh -c 'sleep 60 & /bin/true; wait' & wait");
  ASSERT_GT(root, 0);
  const std::string tree = "process_tracker_tree(id=" + std::to_string(root) + ")";
  // The proc connector names a process from /proc, which a process as short as
  // /bin/true may have left by then: its name is unknown (its parent is not:
  // the fork told it).
  auto shape = [&](const Value& v) {
    return sorted_shape(v, GetParam() == ProcessBackend::proc_connector ? "true" : "?");
  };
  const std::string expected = "sh(sh(sleep true) sleep true)";
  // The whole tree, and both /bin/true ended (their exits may come a moment after their starts).
  std::multiset<std::string> ended, running;
  Value t = until(tree, [&](const Value& v) {
    ended.clear();
    running.clear();
    ended_and_running(v, ended, running);
    return shape(v) == expected && ended.size() == 2;
  });
  EXPECT_EQ(shape(t), expected) << value_json(t);
  EXPECT_EQ(ended.size(), 2u);
  EXPECT_EQ(running, (std::multiset<std::string>{"sh", "sh", "sleep", "sleep"}));
  // The root's parent is this process, which the first sync found.
  Value chain = read("process_tracker_callchain(id=" + std::to_string(root) + ").Data.Pid");
  ASSERT_TRUE(chain.as_list() && chain.as_list()->size() >= 2) << value_json(chain);
  std::string parent = to_string((*chain.as_list())[chain.as_list()->size() - 2]);
  EXPECT_EQ(parent.substr(0, parent.find('-')), std::to_string(::getpid()));

  // All of them gone: the same tree, every process ended.
  ::kill(-root, SIGKILL);
  ::waitpid(root, nullptr, 0);
  t = until(tree, [&](const Value& v) {
    std::multiset<std::string> e, r;
    ended_and_running(v, e, r);
    return r.empty() && e.size() == 6;
  });
  EXPECT_EQ(shape(t), expected);
  ended.clear();
  running.clear();
  ended_and_running(t, ended, running);
  EXPECT_EQ(running.size(), 0u) << value_json(t);
  EXPECT_EQ(owner_env.dropped_events, 0u);
}

TEST_P(TrackProcesses, AStormOfShortProcessesStaysWithinMaxSize) {
  std::string why;
  // Room for every process running now and 200 more: the live ones must
  // not be what makes room (however many a machine runs).
  size_t live_now = 0;
  for (auto& entry : std::filesystem::directory_iterator("/proc"))
    live_now += std::isdigit(static_cast<unsigned char>(entry.path().filename().string()[0])) ? 1 : 0;
  const size_t max_size = live_now + 200;
  if (!start(static_cast<int64_t>(max_size), why)) GTEST_SKIP() << why;
  auto tracker = hub->trackers()->get();
  ASSERT_TRUE(tracker);
  size_t most = 0;
  pid_t storm = spawn_sh("i=0; while [ $i -lt 1000 ]; do /bin/true; i=$((i+1)); done");
  ASSERT_GT(storm, 0);
  for (bool running = true; running;) {
    running = ::waitpid(storm, nullptr, WNOHANG) == 0;
    std::vector<Row> rows;
    owner->next(rows, 100000);
    most = std::max(most, tracker->size());
    std::this_thread::sleep_for(5ms);
  }
  // Its last processes have reached the tracker: it has evicted the first ones.
  Value evicted = until("process_tracker_get(id=" + std::to_string(storm) + ").EndTime", [&](const Value& v) {
    most = std::max(most, tracker->size());
    return v.as_timestamp() && v.as_timestamp()->ns != 0;
  });
  EXPECT_TRUE(evicted.as_timestamp() && evicted.as_timestamp()->ns != 0);
  EXPECT_LE(most, max_size);
  std::cout << "tracker: " << tracker->size() << " processes, " << tracker->bytes() << " bytes\n";
  EXPECT_GE(tracker->evicted(), 700u);
  EXPECT_LE(tracker->bytes(), max_size * (sizeof(TrackedProcess) + 3 * 64 + ProcessTracker::kMaxDataBytes));
  // This process, live, is kept: exited ones go first.
  EXPECT_EQ(to_string(read("process_tracker_get(id=" + std::to_string(::getpid()) + ").EndTime")),
            to_string(Value(Timestamp{})));
}

INSTANTIATE_TEST_SUITE_P(Backends, TrackProcesses,
                         ::testing::Values(ProcessBackend::ebpf, ProcessBackend::proc_connector),
                         [](const auto& info) { return std::string(backend_name(info.param)); });

}  // namespace
}  // namespace outpost::vql
