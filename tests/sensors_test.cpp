// Shared sensors and the event plugins, with real inotify, real files, real
// processes and (as root) a real mount.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <caf/all.hpp>

#include <fstream>
#include <thread>

#include "queries/agent_sources.hpp"
#include "queries/sensors.hpp"
#include "tests/temp_dir.hpp"

namespace outpost::vql {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Events a test hands to the sensor, one batch per scan.
struct Script {
  std::mutex mutex;
  std::vector<int64_t> pending;
  bool fail = false;  // the next scan throws
  void add(int64_t n) {
    std::lock_guard<std::mutex> lock(mutex);
    pending.push_back(n);
  }
};

class ScriptedScanner : public Scanner {
 public:
  explicit ScriptedScanner(std::shared_ptr<Script> s) : script_(std::move(s)) {}
  std::chrono::milliseconds period() const override { return 5ms; }
  void scan(std::vector<Row>& events) override {
    std::lock_guard<std::mutex> lock(script_->mutex);
    if (script_->fail) throw std::runtime_error("scripted failure");
    for (auto n : script_->pending) {
      Row r;
      r.set("N", n);
      events.push_back(std::move(r));
    }
    script_->pending.clear();
  }

 private:
  std::shared_ptr<Script> script_;
};

struct SensorTest : ::testing::Test {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  std::unique_ptr<SensorHub> hub = std::make_unique<SensorHub>(sys);
  Engine engine{default_registry()};
  testing::TempDir tmp;

  ~SensorTest() override {
    hub.reset();
    sys.await_all_actors_done();
  }

  // Pulls until `enough` says so or 10 s pass; returns every row seen.
  std::vector<Row> pull_until(RowStream& s, const std::function<bool(const std::vector<Row>&)>& enough) {
    std::vector<Row> rows;
    auto deadline = Clock::now() + 10s;
    while (!enough(rows) && Clock::now() < deadline) {
      Step step = s.next(rows, 1000);
      if (step.state == Step::State::done) break;
      if (step.state != Step::State::more) std::this_thread::sleep_for(10ms);
    }
    return rows;
  }
  static bool has(const std::vector<Row>& rows, const std::string& column, const Value& v) {
    for (auto& r : rows)
      if (auto x = r.find(column); x && equal(*x, v)) return true;
    return false;
  }
  std::unique_ptr<RowStream> start(const std::string& vql, Env& env) {
    env.sensors = hub.get();
    return engine.start(vql, {}, env);
  }
};

TEST_F(SensorTest, TenThousandSubscribersShareOneSensorAndAPausedOneOnlyLosesItsOwnEvents) {
  auto script = std::make_shared<Script>();
  auto make = [script] { return std::make_unique<ScriptedScanner>(script); };
  constexpr size_t kQueries = 10000, kQueue = 10, kEvents = 25;
  std::vector<Env> envs(kQueries);
  std::vector<std::unique_ptr<RowStream>> streams;
  std::vector<std::vector<Row>> got(kQueries);
  // A subscription reaches the sensor as a message, and gets the events from
  // then on: warm-up events until `last` has one show that all before it are in.
  auto subscribe_up_to = [&](size_t last) {
    while (streams.size() <= last) streams.push_back(hub->subscribe("scripted()", make, envs[streams.size()], kQueue));
    for (auto deadline = Clock::now() + 10s; got[last].empty() && Clock::now() < deadline;) {
      script->add(-1);
      std::this_thread::sleep_for(5ms);
      for (size_t i = 0; i <= last; ++i) streams[i]->next(got[i], 1000);
    }
    ASSERT_FALSE(got[last].empty()) << "subscriber " << last << " never got an event";
  };
  subscribe_up_to(kQueries - 2);
  subscribe_up_to(kQueries - 1);  // the one that will be "paused"
  EXPECT_EQ(hub->running(), 1u) << "one sensor for all subscribers";
  for (auto& g : got) g.clear();
  envs.back().dropped_events = 0;
  // Every subscriber but the last takes its events as they come.
  auto take_all = [&] {
    for (size_t i = 0; i + 1 < kQueries; ++i) streams[i]->next(got[i], 1000);
  };
  for (int64_t n = 1; n <= static_cast<int64_t>(kEvents); ++n) {
    script->add(n);
    auto deadline = Clock::now() + 10s;
    while (got[0].size() < static_cast<size_t>(n) && Clock::now() < deadline) {
      take_all();
      std::this_thread::sleep_for(1ms);
    }
  }
  // The sensor pushes to one subscriber after another: wait for the last.
  auto deadline = Clock::now() + 10s;
  while (got[kQueries - 2].size() < kEvents && Clock::now() < deadline) {
    take_all();
    std::this_thread::sleep_for(1ms);
  }
  for (size_t i = 0; i + 1 < kQueries; ++i) {
    ASSERT_EQ(got[i].size(), kEvents) << "subscriber " << i;
    EXPECT_EQ(envs[i].dropped_events, 0u);
  }
  // The paused one finds its queue's worth, in order, and the rest counted.
  std::vector<Row> paused;
  streams.back()->next(paused, 1000);
  ASSERT_EQ(paused.size(), kQueue);
  for (size_t i = 0; i < kQueue; ++i) EXPECT_EQ(*paused[i].find("N")->as_int(), static_cast<int64_t>(i) + 1);
  EXPECT_EQ(envs.back().dropped_events, kEvents - kQueue);
  // The last subscriber leaving stops the sensor.
  streams.resize(1);
  EXPECT_EQ(hub->running(), 1u);
  streams.clear();
  EXPECT_EQ(hub->running(), 0u);
}

// A query restarted after its sensor failed joins the same (failed) sensor
// while another query still holds it: it must get the error, not wait forever.
TEST_F(SensorTest, ASensorThatFailedRefusesLateSubscribersWithItsError) {
  auto script = std::make_shared<Script>();
  auto make = [script] { return std::make_unique<ScriptedScanner>(script); };
  Env first_env, late_env;
  auto first = hub->subscribe("scripted()", make, first_env, 10);
  {
    std::lock_guard<std::mutex> lock(script->mutex);
    script->fail = true;
  }
  auto fails = [&](RowStream& s) {
    std::vector<Row> rows;
    for (auto deadline = Clock::now() + 10s; Clock::now() < deadline; std::this_thread::sleep_for(5ms)) {
      try {
        s.next(rows, 1000);
      } catch (const QueryError& e) {
        return std::string(e.what());
      }
    }
    return std::string("no error within 10 s");
  };
  EXPECT_NE(fails(*first).find("scripted failure"), std::string::npos);
  auto late = hub->subscribe("scripted()", make, late_env, 10);
  EXPECT_EQ(hub->running(), 1u) << "the failed sensor is still held by the first query";
  EXPECT_NE(fails(*late).find("scripted failure"), std::string::npos);
}

TEST_F(SensorTest, APeriodThatIsNotANumberIsRefused) {
  Env env;
  EXPECT_THROW(
      {
        auto s = start("SELECT * FROM clock(period=1e308 * 10 - 1e308 * 10)", env);
        std::vector<Row> rows;
        s->next(rows, 1);
      },
      QueryError);
}

TEST_F(SensorTest, SameArgumentsShareASensorOtherArgumentsDoNot) {
  auto dir = tmp.path("d");
  std::filesystem::create_directories(dir);
  Env a, b, c;
  std::vector<Row> rows;
  auto s1 = start("SELECT * FROM watch_directory(path='" + dir.string() + "', recursive=FALSE)", a);
  auto s2 = start("SELECT * FROM watch_directory(recursive=FALSE, path='" + dir.string() + "')", b);
  s1->next(rows, 1);  // a query subscribes when it first runs
  s2->next(rows, 1);
  EXPECT_EQ(hub->running(), 1u);
  auto s3 = start("SELECT * FROM watch_directory(path='" + dir.string() + "', recursive=TRUE)", c);
  s3->next(rows, 1);
  EXPECT_EQ(hub->running(), 2u);
  s1.reset();
  s3.reset();
  EXPECT_EQ(hub->running(), 1u);
}

TEST_F(SensorTest, DistinctArgumentsCannotStartMoreThanTheSensorLimit) {
  auto script = std::make_shared<Script>();
  auto make = [script] { return std::make_unique<ScriptedScanner>(script); };
  std::vector<Env> envs(kMaxSensors + 2);
  std::vector<std::unique_ptr<RowStream>> streams;
  for (size_t i = 0; i < kMaxSensors; ++i)
    streams.push_back(hub->subscribe("scripted(" + std::to_string(i) + ")", make, envs[i]));
  EXPECT_THROW(hub->subscribe("scripted(new)", make, envs[kMaxSensors]), QueryError);
  EXPECT_NO_THROW(streams.push_back(hub->subscribe("scripted(0)", make, envs[kMaxSensors + 1])))
      << "a running sensor still takes subscribers";
  streams.erase(streams.begin() + 1);  // one sensor stops: a new one may start
  EXPECT_NO_THROW(streams.push_back(hub->subscribe("scripted(new)", make, envs[kMaxSensors])));
}

TEST_F(SensorTest, WatchDirectoryReportsCreatesChangesMovesAndDeletesRecursively) {
  auto dir = tmp.path("watched");
  std::filesystem::create_directories(dir / "sub");
  Env env;
  auto s = start("SELECT Action, FullPath, IsDir FROM watch_directory(path='" + dir.string() + "', recursive=TRUE)",
                 env);
  std::vector<Row> none;
  s->next(none, 10);                  // subscribes
  std::this_thread::sleep_for(100ms);  // the sensor has set its watches
  std::ofstream(dir / "a.txt") << "x";
  std::ofstream(dir / "sub" / "b.txt") << "y";
  std::filesystem::create_directories(dir / "new");
  std::ofstream(dir / "new" / "c.txt") << "z";  // in a directory made after the watch started
  std::filesystem::rename(dir / "a.txt", dir / "sub" / "a2.txt");
  std::filesystem::remove(dir / "sub" / "b.txt");
  auto rows = pull_until(*s, [&](auto& r) { return has(r, "FullPath", Value((dir / "sub" / "b.txt").string())) &&
                                                    has(r, "FullPath", Value((dir / "new" / "c.txt").string())) &&
                                                    has(r, "Action", Value("deleted")); });
  auto seen = [&](const char* action, const std::filesystem::path& p) {
    for (auto& r : rows)
      if (to_string(*r.find("Action")) == action && to_string(*r.find("FullPath")) == p.string()) return true;
    return false;
  };
  EXPECT_TRUE(seen("created", dir / "a.txt"));
  EXPECT_TRUE(seen("created", dir / "sub" / "b.txt"));
  EXPECT_TRUE(seen("created", dir / "new"));
  EXPECT_TRUE(seen("created", dir / "new" / "c.txt"));
  EXPECT_TRUE(seen("moved_from", dir / "a.txt"));
  EXPECT_TRUE(seen("moved_to", dir / "sub" / "a2.txt"));
  EXPECT_TRUE(seen("deleted", dir / "sub" / "b.txt"));
  // The watched directory going away ends the stream.
  std::filesystem::remove_all(dir);
  bool ended = false;
  auto deadline = Clock::now() + 10s;
  while (!ended && Clock::now() < deadline) {
    ended = s->next(rows, 1000).state == Step::State::done;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(ended);
}

TEST_F(SensorTest, TailFollowsAppendsRotationAndTruncation) {
  auto log = tmp.path("auth.log");
  std::ofstream(log) << "old line before the start\n";
  Env env;
  auto s = start("SELECT Line FROM tail(filename='" + log.string() + "')", env);
  std::vector<Row> rows;
  s->next(rows, 10);
  std::this_thread::sleep_for(300ms);  // the first scan starts at the end
  auto append = [&](const std::filesystem::path& p, const std::string& text) {
    std::ofstream(p, std::ios::app) << text;
  };
  append(log, "one\ntw");
  std::this_thread::sleep_for(300ms);
  append(log, "o\n");
  rows = pull_until(*s, [](auto& r) { return r.size() >= 2; });
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(to_string(*rows[0].find("Line")), "one");
  EXPECT_EQ(to_string(*rows[1].find("Line")), "two") << "a line written in two parts is one row";
  // Rotation: the old file gets a last line after the rename, then a new file starts.
  std::filesystem::rename(log, tmp.path("auth.log.1"));
  append(tmp.path("auth.log.1"), "three\n");
  append(log, "four\n");
  auto more = pull_until(*s, [](auto& r) { return r.size() >= 2; });
  ASSERT_EQ(more.size(), 2u);
  EXPECT_EQ(to_string(*more[0].find("Line")), "three");
  EXPECT_EQ(to_string(*more[1].find("Line")), "four");
  // Truncation: read again from the start.
  std::this_thread::sleep_for(300ms);
  std::ofstream(log, std::ios::trunc) << "five\n";
  auto after = pull_until(*s, [](auto& r) { return !r.empty(); });
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(to_string(*after[0].find("Line")), "five");
  EXPECT_FALSE(has(rows, "Line", Value("old line before the start")));
}

TEST_F(SensorTest, WatchProcessesSeesARealChildStartAndExit) {
  Env env;
  auto s = start("SELECT Action, Pid, Name FROM watch_processes(period=0.1)", env);
  std::vector<Row> rows;
  s->next(rows, 10);
  std::this_thread::sleep_for(300ms);  // the baseline is taken
  pid_t child = fork();
  if (child == 0) {
    execl("/bin/sleep", "sleep", "30", nullptr);
    _exit(127);
  }
  rows = pull_until(*s, [&](auto& r) { return has(r, "Pid", Value(int64_t{child})); });
  ASSERT_TRUE(has(rows, "Pid", Value(int64_t{child}))) << "the child's start was not seen";
  for (auto& r : rows)  // other processes of the machine come and go meanwhile
    if (equal(*r.find("Pid"), Value(int64_t{child}))) {
      EXPECT_EQ(to_string(*r.find("Action")), "started");
    }
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  auto exits = pull_until(*s, [&](auto& r) {
    for (auto& row : r)
      if (to_string(*row.find("Action")) == "exited" && equal(*row.find("Pid"), Value(int64_t{child}))) return true;
    return false;
  });
  EXPECT_TRUE(has(exits, "Action", Value("exited")));
}

// A mount table and a /sys the test writes: a USB stick appears and goes.
struct FakeMounts {
  std::filesystem::path mountinfo, sys, drive;
  explicit FakeMounts(const testing::TempDir& tmp)
      : mountinfo(tmp.path("mountinfo")), sys(tmp.path("sys")), drive(tmp.path("media/usb stick")) {
    std::filesystem::create_directories(sys / "dev" / "block" / "8:17");
    std::ofstream(sys / "dev" / "block" / "8:17" / "removable") << "1\n";
    std::filesystem::create_directories(sys / "dev" / "block" / "8:1");
    std::ofstream(sys / "dev" / "block" / "8:1" / "removable") << "0\n";
    write(false);
  }
  std::shared_ptr<const Paths> paths() const {
    Paths p;
    p.mountinfo = mountinfo;
    p.sys = sys;
    return std::make_shared<const Paths>(p);
  }
  void write(bool stick) {
    std::ofstream out(mountinfo, std::ios::trunc);
    out << "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n";
    if (stick) {
      std::string escaped = drive.string();
      escaped.replace(escaped.find(' '), 1, "\\040");
      out << "90 22 8:17 / " << escaped << " rw,nosuid - vfat /dev/sdb1 rw\n";
    }
  }
};

TEST_F(SensorTest, WatchMountsReportsAddedAndRemovedWithRemovableFromSys) {
  FakeMounts fake(tmp);
  Env env;
  env.paths = fake.paths();
  auto s = start("SELECT Action, MountPoint, Source, Removable FROM watch_mounts(period=0.1)", env);
  std::vector<Row> rows;
  s->next(rows, 10);
  std::this_thread::sleep_for(300ms);
  fake.write(true);
  rows = pull_until(*s, [](auto& r) { return !r.empty(); });
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(to_json(rows[0]), "{\"Action\":\"added\",\"MountPoint\":\"" + fake.drive.string() +
                                  "\",\"Source\":\"/dev/sdb1\",\"Removable\":true}");
  fake.write(false);
  rows = pull_until(*s, [](auto& r) { return !r.empty(); });
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(to_string(*rows[0].find("Action")), "removed");
}

TEST_F(SensorTest, WatchMountsSeesARealTmpfsMountWhenRoot) {
  if (geteuid() != 0) GTEST_SKIP() << "mounting needs root";
  auto point = tmp.path("mnt");
  std::filesystem::create_directories(point);
  Env env;
  auto s = start("SELECT Action, MountPoint, FSType, Removable FROM watch_mounts(period=0.1)", env);
  std::vector<Row> rows;
  s->next(rows, 10);
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(mount("outpost-test", point.c_str(), "tmpfs", 0, "size=1m"), 0) << strerror(errno);
  rows = pull_until(*s, [&](auto& r) { return has(r, "MountPoint", Value(point.string())); });
  umount(point.c_str());
  ASSERT_TRUE(has(rows, "MountPoint", Value(point.string())));
  for (auto& r : rows)
    if (to_string(*r.find("MountPoint")) == point.string()) {
      EXPECT_EQ(to_string(*r.find("Action")), "added");
      EXPECT_EQ(to_string(*r.find("FSType")), "tmpfs");
      EXPECT_FALSE(*r.find("Removable")->as_bool());
    }
}

TEST_F(SensorTest, ThumbdriveArtifactListsADrivesFilesThenReportsNewOnes) {
  FakeMounts fake(tmp);
  std::filesystem::create_directories(fake.drive / "docs");
  std::ofstream(fake.drive / "docs" / "plan.txt") << "secret";
  std::ofstream(fake.drive / "photo.jpg") << "jpeg";
  Env env;
  env.paths = fake.paths();
  env.sensors = hub.get();
  SourceSpec spec;
  spec.kind = SourceSpec::Kind::artifact;
  spec.name = "Linux.Detection.Thumbdrives.List";
  spec.parameters = {{"Period", "1"}};
  auto p = prepare(spec, ArtifactRepository::builtin(), engine);
  EXPECT_TRUE(p.event);
  auto s = engine.start(*p.queries[0], p.parameters, env);
  std::vector<Row> rows;
  s->next(rows, 10);
  std::this_thread::sleep_for(1500ms);  // the baseline: no drive yet
  fake.write(true);
  rows = pull_until(*s, [](auto& r) { return r.size() >= 2; });
  ASSERT_EQ(rows.size(), 2u);
  std::set<std::string> listed;
  for (auto& r : rows) {
    EXPECT_EQ(to_string(*r.find("Event")), "present");
    EXPECT_EQ(to_string(*r.find("Drive")), fake.drive.string());
    EXPECT_EQ(to_string(*r.find("Device")), "/dev/sdb1");
    listed.insert(to_string(*r.find("FullPath")));
  }
  EXPECT_EQ(listed, (std::set<std::string>{(fake.drive / "docs" / "plan.txt").string(),
                                           (fake.drive / "photo.jpg").string()}));
  std::this_thread::sleep_for(300ms);  // the drive's watch is set
  std::ofstream(fake.drive / "docs" / "copied.pdf") << "exfiltrated";
  auto more = pull_until(*s, [&](auto& r) { return has(r, "FullPath", Value((fake.drive / "docs" / "copied.pdf").string())); });
  ASSERT_TRUE(has(more, "FullPath", Value((fake.drive / "docs" / "copied.pdf").string())));
  EXPECT_EQ(to_string(*more[0].find("Event")), "created");
}

}  // namespace
}  // namespace outpost::vql
