// Shared sensors and the event plugins, with real inotify, real files, real
// processes and (as root) a real mount.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <caf/all.hpp>

#include <algorithm>
#include <condition_variable>
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
  bool refuse_sevens = false;  // from the next scan on, N = 7 cannot come
  // While closed, a scan waits at the gate before it takes `pending`.
  std::condition_variable gate;
  bool gate_closed = false;
  bool at_gate = false;  // a scan waits there
  void add(int64_t n) {
    std::lock_guard<std::mutex> lock(mutex);
    pending.push_back(n);
  }
  void set_gate(bool closed) {
    std::lock_guard<std::mutex> lock(mutex);
    gate_closed = closed;
    gate.notify_all();
  }
};

class ScriptedScanner : public Scanner {
 public:
  explicit ScriptedScanner(std::shared_ptr<Script> s) : script_(std::move(s)) {}
  std::chrono::milliseconds period() const override { return 5ms; }
  void scan(std::vector<Row>& events) override {
    std::unique_lock<std::mutex> lock(script_->mutex);
    script_->at_gate = true;
    script_->gate.notify_all();
    script_->gate.wait(lock, [&] { return !script_->gate_closed; });
    script_->at_gate = false;
    if (script_->fail) throw std::runtime_error("scripted failure");
    for (auto n : script_->pending) {
      Row r;
      r.set("N", n);
      events.push_back(std::move(r));
    }
    script_->pending.clear();
    if (script_->refuse_sevens && refusals_.empty()) {
      Refusal r;
      r.example.set("N", int64_t{7});
      r.why = "no sevens here";
      refusals_.push_back(std::move(r));
    }
  }
  const std::vector<Refusal>& refusals() const override { return refusals_; }

 private:
  std::shared_ptr<Script> script_;
  std::vector<Refusal> refusals_;
};

struct SensorTest : ::testing::Test {
  AgentSystemConfig cfg;  // its registry: actors() lists the sensors
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
  // Pokes the sensor's subject (`poke(n)`, n = 1, 2, ...) until the row the
  // last poke makes comes (`made(row, n)`): then the sensor watches, and its
  // baseline is taken. Each poke waits up to `window` for its row. Rows seen
  // meanwhile are dropped; false after 10 s.
  bool until_watching(RowStream& s, const std::function<void(int)>& poke,
                      const std::function<bool(const Row&, int)>& made, std::chrono::milliseconds window = 500ms) {
    std::vector<Row> first;
    s.next(first, 1000);  // a query subscribes when it first runs
    for (int n = 1, tries = static_cast<int>(10s / window); n <= tries; ++n) {
      poke(n);
      std::vector<Row> rows;
      for (auto until = Clock::now() + window; Clock::now() < until;) {
        if (s.next(rows, 1000).state == Step::State::done) return false;
        for (auto& r : rows)
          if (made(r, n)) return true;
        std::this_thread::sleep_for(10ms);
      }
    }
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
  // Subscribed, a query gets every event from then on.
  while (streams.size() < kQueries) streams.push_back(hub->subscribe("scripted()", make, envs[streams.size()], kQueue));
  EXPECT_EQ(hub->running(), 1u) << "one sensor for all subscribers";
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

// A subscription counts from when subscribe() returns: an event after that
// reaches the new subscriber, also from a scan that was underway then (the
// watch of a drive starts before its listing, so no file falls between).
TEST_F(SensorTest, ASubscriberGetsEveryEventAfterSubscribingAlsoFromAScanUnderwayThen) {
  auto script = std::make_shared<Script>();
  auto make = [script] { return std::make_unique<ScriptedScanner>(script); };
  Env first_env, second_env;
  auto first = hub->subscribe("scripted()", make, first_env, 10);
  script->set_gate(true);
  struct Open {
    Script& s;
    ~Open() { s.set_gate(false); }  // a failed assertion must not leave the sensor's thread waiting
  } open{*script};
  {
    std::unique_lock<std::mutex> lock(script->mutex);
    ASSERT_TRUE(script->gate.wait_for(lock, 10s, [&] { return script->at_gate; })) << "no scan came";
  }
  auto second = hub->subscribe("scripted()", make, second_env, 10);
  script->add(1);
  script->set_gate(false);
  auto one = [](const std::vector<Row>& r) { return has(r, "N", int64_t{1}); };
  EXPECT_TRUE(one(pull_until(*second, one))) << "the subscriber that came during the scan";
  EXPECT_TRUE(one(pull_until(*first, one)));
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

// A source that opens without some of its events (the tcp group without
// accept's program): the queries that want them fail with why, now or when
// they subscribe later; the others go on.
TEST_F(SensorTest, AQueryWantingAnEventTheSourceRefusesFailsWithWhyAndTheOthersGoOn) {
  auto script = std::make_shared<Script>();
  auto make = [script] { return std::make_unique<ScriptedScanner>(script); };
  auto over = [](int64_t at_least, bool or_seven) {
    return [at_least, or_seven](const Row& r) {
      auto n = r.find("N") ? r.find("N")->as_int() : nullptr;
      return n && (*n >= at_least || (or_seven && *n == 7));
    };
  };
  Env sevens_env, others_env, late_env;
  auto sevens = hub->subscribe("scripted()", make, sevens_env, 10, over(100, true));
  auto others = hub->subscribe("scripted()", make, others_env, 10, over(100, false));
  std::vector<Row> got;
  for (auto deadline = Clock::now() + 10s; got.empty() && Clock::now() < deadline; std::this_thread::sleep_for(5ms)) {
    script->add(100);  // until both subscriptions are in
    others->next(got, 1000);
  }
  ASSERT_FALSE(got.empty());
  {
    std::lock_guard<std::mutex> lock(script->mutex);
    script->refuse_sevens = true;
  }
  std::string error;
  for (auto deadline = Clock::now() + 10s; error.empty() && Clock::now() < deadline; std::this_thread::sleep_for(5ms)) {
    try {
      std::vector<Row> rows;
      sevens->next(rows, 1000);
    } catch (const QueryError& e) {
      error = e.what();
    }
  }
  EXPECT_EQ(error, "scripted(): no sevens here");
  got.clear();
  script->add(101);
  auto rows = pull_until(*others, [](const std::vector<Row>& r) { return has(r, "N", int64_t{101}); });
  EXPECT_TRUE(has(rows, "N", int64_t{101})) << "the subscriber that wants no seven still gets its events";
  auto late = hub->subscribe("scripted()", make, late_env, 10, over(1000, true));
  try {
    pull_until(*late, [](const std::vector<Row>&) { return false; });
    ADD_FAILURE() << "a late subscriber wanting a seven was not refused";
  } catch (const QueryError& e) {
    EXPECT_STREQ(e.what(), "scripted(): no sevens here");
  }
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

// actors() lists the sensors with their own status: two queries with the
// same arguments share one, which counts both as its subscribers.
TEST_F(SensorTest, ActorsListsASharedSensorWithItsSubscribers) {
  auto dir = tmp.path("d");
  std::filesystem::create_directories(dir);
  Env a, b;
  std::vector<Row> rows;
  auto s1 = start("SELECT * FROM watch_directory(path='" + dir.string() + "')", a);
  auto s2 = start("SELECT * FROM watch_directory(path='" + dir.string() + "')", b);
  s1->next(rows, 1);
  s2->next(rows, 1);
  auto subscribers = [&]() -> int64_t {
    Env me;
    me.system = &sys;
    auto q = start("SELECT Kind, Status FROM actors(kind='sensor')", me);
    auto listed = pull_until(*q, [](const std::vector<Row>& r) { return !r.empty(); });
    if (listed.size() != 1) return -1;
    EXPECT_TRUE(equal(*listed[0].find("Kind"), Value("sensor")));
    auto* status = listed[0].find("Status")->as_dict();
    if (!status) return -2;  // it did not answer
    EXPECT_NE(to_string(*status->find("key")).find(dir.string()), std::string::npos);
    return *status->find("subscribers")->as_int();
  };
  auto deadline = Clock::now() + 10s;
  int64_t n = subscribers();
  while (n != 2 && Clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
    n = subscribers();
  }
  EXPECT_EQ(n, 2);

  // Outside an agent's actor system there are no actors to list: an error says so.
  Env none;
  try {
    start("SELECT * FROM actors()", none)->next(rows, 10);
    ADD_FAILURE() << "actors() ran without an actor system";
  } catch (const QueryError& e) {
    EXPECT_STREQ(e.what(), "actors(): this query runs outside an agent's actor system, so there are no actors to list");
  }
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
  // Marker directories until one is reported: the watches are set.
  auto marker = [&](int n) { return dir / ("marker-" + std::to_string(n)); };
  ASSERT_TRUE(until_watching(
      *s, [&](int n) { std::filesystem::create_directories(marker(n)); },
      [&](const Row& r, int n) { return to_string(*r.find("FullPath")) == marker(n).string(); }));
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
  auto append = [&](const std::filesystem::path& p, const std::string& text) {
    std::ofstream(p, std::ios::app) << text;
  };
  // Marker lines until one comes: the first scan (at the end) has been.
  ASSERT_TRUE(until_watching(
      *s, [&](int n) { append(log, "marker " + std::to_string(n) + "\n"); },
      [&](const Row& r, int n) { return to_string(*r.find("Line")) == "marker " + std::to_string(n); }));
  std::vector<Row> rows;
  append(log, "one\ntw");
  std::this_thread::sleep_for(300ms);  // likely a scan between the halves (either way one row)
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
  // Truncation to the same size: told by the mtime, so the rewrite must
  // come a clock tick after the last read.
  std::this_thread::sleep_for(300ms);
  std::ofstream(log, std::ios::trunc) << "five\n";
  auto after = pull_until(*s, [](auto& r) { return !r.empty(); });
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(to_string(*after[0].find("Line")), "five");
  EXPECT_FALSE(has(rows, "Line", Value("old line before the start")));
}

TEST_F(SensorTest, WatchSyslogFollowsEachOfItsFiles) {
  auto auth = tmp.path("auth.log"), secure = tmp.path("secure");
  std::ofstream(auth) << "before\n";
  std::ofstream(secure) << "before\n";
  Env env;
  auto s = start("SELECT Line FROM watch_syslog(filename=['" + auth.string() + "', '" + secure.string() + "'])", env);
  auto append = [&](const std::filesystem::path& p, const std::string& text) {
    std::ofstream(p, std::ios::app) << text;
  };
  ASSERT_TRUE(until_watching(
      *s, [&](int n) { append(auth, "marker " + std::to_string(n) + "\n"); },
      [&](const Row& r, int n) { return to_string(*r.find("Line")) == "marker " + std::to_string(n); }));
  ASSERT_TRUE(until_watching(
      *s, [&](int n) { append(secure, "mark " + std::to_string(n) + "\n"); },
      [&](const Row& r, int n) { return to_string(*r.find("Line")) == "mark " + std::to_string(n); }));
  append(auth, "sshd: one\n");
  append(secure, "sshd: two\n");
  auto rows = pull_until(*s, [](auto& r) { return r.size() >= 2; });
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_TRUE(has(rows, "Line", Value("sshd: one")));
  EXPECT_TRUE(has(rows, "Line", Value("sshd: two")));
  EXPECT_FALSE(has(rows, "Line", Value("before")));
}

TEST_F(SensorTest, WatchProcessesSeesARealChildStartAndExit) {
  Env env;
  auto s = start("SELECT Action, Pid, Name FROM watch_processes(period=0.1)", env);
  // Children until one is seen starting (one started before the baseline
  // was taken is part of it, and is not reported).
  std::vector<pid_t> children;
  auto reap = [&] {
    for (pid_t c : children) {
      kill(c, SIGKILL);
      waitpid(c, nullptr, 0);
    }
    children.clear();
  };
  ASSERT_TRUE(until_watching(
      *s,
      [&](int) {
        pid_t child = fork();
        if (child == 0) {
          execl("/bin/sleep", "sleep", "30", nullptr);
          _exit(127);
        }
        children.push_back(child);
      },
      [&](const Row& r, int) {
        return to_string(*r.find("Action")) == "started" && equal(*r.find("Pid"), Value(int64_t{children.back()}));
      },
      1s))
      << "no child's start was seen";
  pid_t child = children.back();
  children.pop_back();
  reap();  // the earlier ones
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  auto exits = pull_until(*s, [&](auto& r) {
    for (auto& row : r)
      if (to_string(*row.find("Action")) == "exited" && equal(*row.find("Pid"), Value(int64_t{child}))) return true;
    return false;
  });
  bool exited = false;
  for (auto& row : exits)
    exited |= to_string(*row.find("Action")) == "exited" && equal(*row.find("Pid"), Value(int64_t{child}));
  EXPECT_TRUE(exited);
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
  std::string markers;  // mount lines a test added to see the sensor's baseline taken
  // Adds a mount of /mnt/marker-n (removable: a drive with nothing on it);
  // returns its mount point.
  std::string add_marker(int n, bool removable = false) {
    std::string point = "/mnt/marker-" + std::to_string(n);
    markers += std::to_string(200 + n) + " 22 " + (removable ? "8:17" : "8:1") + " / " + point +
               " rw - vfat /dev/sdc" + std::to_string(n) + " rw\n";
    return point;
  }
  void write(bool stick) {
    std::ofstream out(mountinfo, std::ios::trunc);
    out << "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n" << markers;
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
  ASSERT_TRUE(until_watching(
      *s,
      [&](int n) {
        fake.add_marker(n);
        fake.write(false);
      },
      [&](const Row& r, int n) { return to_string(*r.find("MountPoint")) == "/mnt/marker-" + std::to_string(n); }));
  std::vector<Row> rows;
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
  Env env;
  auto s = start("SELECT Action, MountPoint, FSType, Removable FROM watch_mounts(period=0.1)", env);
  // Mounted before the baseline was taken, it is not reported: then another
  // mount point, until one is.
  auto point = [&](int n) { return tmp.path("mnt-" + std::to_string(n)); };
  std::vector<Row> rows;
  int mounts = 0;
  bool mounted = until_watching(
      *s,
      [&](int n) {
        std::filesystem::create_directories(point(n));
        ASSERT_EQ(mount("outpost-test", point(n).c_str(), "tmpfs", 0, "size=1m"), 0) << strerror(errno);
        mounts = n;
      },
      [&](const Row& r, int n) {
        if (to_string(*r.find("MountPoint")) != point(n).string()) return false;
        rows.push_back(r);
        return true;
      },
      1s);
  for (int n = 1; n <= mounts; ++n) umount(point(n).c_str());
  ASSERT_TRUE(mounted);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(to_string(*rows[0].find("Action")), "added");
  EXPECT_EQ(to_string(*rows[0].find("FSType")), "tmpfs");
  EXPECT_FALSE(*rows[0].find("Removable")->as_bool());
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
  // Marker drives, each with a file, until one is listed: the baseline is taken.
  ASSERT_TRUE(until_watching(
      *s,
      [&](int n) {
        std::filesystem::path point = tmp.path("marker-" + std::to_string(n));
        std::filesystem::create_directories(point);
        std::ofstream(point / "m.txt") << "m";
        std::string line = std::to_string(200 + n) + " 22 8:17 / " + point.string() + " rw - vfat /dev/sdc rw\n";
        fake.markers += line;
        fake.write(false);
      },
      [&](const Row& r, int n) {
        return to_string(*r.find("FullPath")) == (tmp.path("marker-" + std::to_string(n)) / "m.txt").string();
      },
      2500ms));
  fake.write(true);
  auto rows = pull_until(*s, [](auto& r) { return r.size() >= 2; });
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
  // The drive's watch started before its listing: a file copied now is reported.
  auto copied = fake.drive / "docs" / "copied.pdf";
  std::ofstream(copied) << "exfiltrated";
  auto more = pull_until(*s, [&](auto& r) { return has(r, "FullPath", Value(copied.string())); });
  ASSERT_TRUE(has(more, "FullPath", Value(copied.string())));
  EXPECT_EQ(to_string(*more[0].find("Event")), "created");
}

}  // namespace
}  // namespace outpost::vql
