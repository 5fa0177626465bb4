// The process tracker: its table (ids, parents, pid reuse, syncs, the
// memory bound, expiry), read through the process_tracker_* functions of a
// query of the same agent, and installed by process_tracker() from a query.

#include <gtest/gtest.h>

#include <caf/all.hpp>

#include <atomic>
#include <thread>

#include "actors/system_config.hpp"
#include "queries/engine.hpp"
#include "queries/process_tracker.hpp"
#include "tests/vql_test_util.hpp"

namespace outpost::vql {
namespace {

Timestamp at(int64_t seconds) { return Timestamp{seconds * 1'000'000'000}; }

Row named(const std::string& name) {
  Row data;
  data.set("Name", name);
  return data;
}

TrackerUpdate live(std::string pid, std::string ppid, int64_t start, const std::string& name) {
  return TrackerUpdate{std::move(pid), std::move(ppid), "", at(start), {}, named(name)};
}
TrackerUpdate started(std::string pid, std::string ppid, int64_t start, const std::string& name) {
  return TrackerUpdate{std::move(pid), std::move(ppid), "start", at(start), {}, named(name)};
}
TrackerUpdate exited(std::string pid, int64_t end) { return TrackerUpdate{std::move(pid), "", "exit", {}, at(end), {}}; }

// An agent's sensor hub with a tracker installed, and queries that read it.
class Tracker : public ::testing::Test {
 protected:
  explicit Tracker(TrackerOptions options = {}) : tracker(std::make_shared<ProcessTracker>(options)) {
    hub->trackers()->install(tracker);
  }
  ~Tracker() override {
    hub.reset();
    sys.await_all_actors_done();
  }

  std::vector<Row> run(const std::string& vql) {
    Engine engine(default_registry());
    Env env;
    env.sensors = hub.get();
    auto stream = engine.start(vql, {}, env);
    std::vector<Row> rows;
    for (int calls = 0; calls < 10'000; ++calls)
      if (stream->next(rows, 100).state == Step::State::done) return rows;
    ADD_FAILURE() << "the query never ended";
    return rows;
  }
  std::string one(const std::string& expr) {
    auto rows = run("SELECT " + expr + " AS X FROM scope()");
    if (rows.size() != 1) return "<" + std::to_string(rows.size()) + " rows>";
    std::string json = to_json(rows[0]);
    return json.substr(5, json.size() - 6);  // {"X":...}
  }
  std::string time(int64_t seconds) { return value_json(Value(at(seconds))); }

  AgentSystemConfig cfg;
  caf::actor_system sys{cfg};
  std::unique_ptr<SensorHub> hub = std::make_unique<SensorHub>(sys);
  std::shared_ptr<ProcessTracker> tracker;
};

// init(1) > sh(10) > {a(20) > b(21, exited), c(22)}, the first two from a sync.
class SmallTree : public Tracker {
 protected:
  SmallTree() {
    tracker->sync({live("1", "0", 100, "init"), live("10", "1", 100, "sh")}, at(150));
    tracker->update(started("20", "10", 200, "a"), at(200));
    tracker->update(started("21", "20", 201, "b"), at(201));
    tracker->update(started("22", "10", 202, "c"), at(202));
    tracker->update(exited("21", 205), at(205));
  }
};

TEST_F(SmallTree, ProcessesAreKnownByIdAndByPid) {
  EXPECT_EQ(one("process_tracker_get(id=21).Id"), "\"21-201\"");  // the bare pid: its latest process
  EXPECT_EQ(one("process_tracker_get(id='21-201').ParentId"), "\"20-200\"");
  EXPECT_EQ(one("process_tracker_get(id=21).EndTime"), time(205));
  EXPECT_EQ(one("process_tracker_get(id=22).EndTime"), time(0));  // running
  EXPECT_EQ(one("process_tracker_get(id=1).ParentId"), "\"0-?\"");  // a parent never seen
  EXPECT_EQ(one("process_tracker_get(id=10).Children"), "[\"20-200\",\"22-202\"]");
  EXPECT_EQ(one("process_tracker_get(id=21).Data"),
            "{\"Name\":\"b\",\"Pid\":\"21-201\",\"Ppid\":\"20-200\",\"StartTime\":" + time(201) +
                ",\"EndTime\":" + time(205) + "}");
  EXPECT_EQ(one("process_tracker_get(id='21-999')"), "null");
}

TEST_F(SmallTree, CallChainAndTreeFollowTheParents) {
  EXPECT_EQ(one("process_tracker_callchain(id=21).Id"), "[\"1-100\",\"10-100\",\"20-200\",\"21-201\"]");
  EXPECT_EQ(one("join(array=process_tracker_callchain(id=21).Data.Name, sep=' -> ')"), "\"init -> sh -> a -> b\"");
  auto rows = run("SELECT process_tracker_tree(id=1) AS X FROM scope()");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(tree_shape(*rows[0].find("X")), "init(sh(a(b) c))");
  auto pslist = run("SELECT Pid, Name, EndTime FROM process_tracker_pslist()");  // by start; exited ones too
  EXPECT_EQ(json_lines(pslist), (std::vector<std::string>{
                                    "{\"Pid\":\"1-100\",\"Name\":\"init\",\"EndTime\":" + time(0) + "}",
                                    "{\"Pid\":\"10-100\",\"Name\":\"sh\",\"EndTime\":" + time(0) + "}",
                                    "{\"Pid\":\"20-200\",\"Name\":\"a\",\"EndTime\":" + time(0) + "}",
                                    "{\"Pid\":\"21-201\",\"Name\":\"b\",\"EndTime\":" + time(205) + "}",
                                    "{\"Pid\":\"22-202\",\"Name\":\"c\",\"EndTime\":" + time(0) + "}"}));
}

TEST_F(Tracker, AReusedPidIsAnotherProcess) {
  tracker->update(started("1", "0", 10, "init"), at(10));
  tracker->update(started("30", "1", 300, "first"), at(300));
  tracker->update(exited("30", 301), at(301));
  tracker->update(started("30", "1", 400, "second"), at(400));
  tracker->update(started("31", "30", 401, "child"), at(401));
  EXPECT_EQ(one("process_tracker_get(id=30).Id"), "\"30-400\"");
  EXPECT_EQ(one("process_tracker_get(id='30-300').Data.Name"), "\"first\"");
  EXPECT_EQ(one("process_tracker_get(id='30-300').EndTime"), time(301));
  EXPECT_EQ(one("process_tracker_get(id=31).ParentId"), "\"30-400\"");
  EXPECT_EQ(one("process_tracker_get(id=1).Children"), "[\"30-300\",\"30-400\"]");
  // A sync finding the pid taken by a later process: the one before ended unseen, when last seen.
  tracker->sync({live("1", "0", 10, "init"), live("30", "1", 500, "third")}, at(505));
  EXPECT_EQ(one("process_tracker_get(id='30-400').EndTime"), time(400));
  EXPECT_EQ(one("process_tracker_get(id=30).Id"), "\"30-500\"");
}

TEST_F(Tracker, AnExecOfAProcessTheSyncFoundKeepsItsId) {
  tracker->sync({live("1", "0", 10, "init"), live("12", "1", 150, "sh")}, at(155));
  tracker->update(started("12", "1", 150, "python3"), at(160));  // exec: the same process, a new name
  EXPECT_EQ(one("process_tracker_get(id=12).Id"), "\"12-150\"");
  EXPECT_EQ(one("process_tracker_get(id=12).Data.Name"), "\"python3\"");
  EXPECT_EQ(run("SELECT * FROM process_tracker_pslist()").size(), 2u);
  // And the other way round: first seen at its exec, then by a sync with its real start.
  tracker->update(started("13", "12", 171, "ls"), at(171));
  tracker->sync({live("1", "0", 10, "init"), live("12", "1", 150, "python3"), live("13", "12", 170, "ls")}, at(172));
  EXPECT_EQ(one("process_tracker_get(id=13).Id"), "\"13-171\"");
  EXPECT_EQ(one("process_tracker_get(id=13).StartTime"), time(170));
  EXPECT_EQ(run("SELECT * FROM process_tracker_pslist()").size(), 3u);
  // A start well after the live one's: its exit was lost; another process.
  tracker->update(started("13", "1", 300, "later"), at(300));
  EXPECT_EQ(one("process_tracker_get(id=13).Id"), "\"13-300\"");
  EXPECT_EQ(one("process_tracker_get(id='13-171').EndTime"), time(172));
}

TEST_F(Tracker, ASyncEndsWhatItNoLongerSeesButNotWhatExitedWhileItRan) {
  tracker->sync({live("1", "0", 10, "init"), live("10", "1", 20, "a"), live("11", "1", 30, "b")}, at(100));
  tracker->update(exited("10", 205), at(205));  // during the next sync, which read /proc before
  tracker->sync({live("1", "0", 10, "init"), live("10", "1", 20, "a")}, at(200));
  EXPECT_EQ(one("process_tracker_get(id=11).EndTime"), time(100));  // when last seen
  EXPECT_EQ(one("process_tracker_get(id=10).EndTime"), time(205));
  EXPECT_EQ(one("process_tracker_get(id=1).EndTime"), time(0));
  tracker->sync({}, at(250));  // a sync query that listed nothing ends nothing
  EXPECT_EQ(one("process_tracker_get(id=1).EndTime"), time(0));
  // A zombie pslist still lists stays ended.
  tracker->update(exited("1", 290), at(290));
  tracker->sync({live("1", "0", 10, "init")}, at(300));
  EXPECT_EQ(one("process_tracker_get(id=1).EndTime"), time(290));
}

TEST_F(Tracker, ASyncEndsWhatItNoLongerSeesAfterTheWallClockWentBack) {
  tracker->sync({live("1", "0", 10, "init"), live("10", "1", 20, "a"), live("11", "1", 30, "b")}, at(1000));
  tracker->sync({live("1", "0", 10, "init"), live("10", "1", 20, "a")}, at(400));  // ten minutes back
  EXPECT_EQ(one("process_tracker_get(id=11).EndTime"), time(1000));  // when last seen
  EXPECT_EQ(one("process_tracker_get(id=10).EndTime"), time(0));
  // A process that started while a sync ran is not in its list, and lives on.
  auto began = tracker->sync_start();
  tracker->update(started("12", "1", 300, "late"), at(300));
  tracker->sync({live("1", "0", 10, "init"), live("10", "1", 20, "a")}, began);
  EXPECT_EQ(one("process_tracker_get(id=12).EndTime"), time(0));
  EXPECT_EQ(one("process_tracker_get(id=10).EndTime"), time(0));
}

class SmallTracker : public Tracker {
 protected:
  SmallTracker() : Tracker(TrackerOptions{100, std::chrono::seconds(3600)}) {}
};

TEST_F(SmallTracker, ChurnStaysWithinTheBoundAndEvictsExitedProcessesFirst) {
  tracker->sync({live("1", "0", 10, "init")}, at(10));
  size_t most = 0, most_bytes = 0;
  for (int i = 0; i < 10'000; ++i) {
    std::string pid = std::to_string(1000 + i % 5000);  // pids come back
    tracker->update(started(pid, "1", 100 + i, "p" + std::to_string(i)), at(100 + i));
    tracker->update(exited(pid, 100 + i), at(100 + i));
    most = std::max(most, tracker->size());
    most_bytes = std::max(most_bytes, tracker->bytes());
  }
  EXPECT_EQ(most, 100u);
  EXPECT_EQ(tracker->evicted(), 10'000u + 1 - 100);
  EXPECT_LE(most_bytes, 100 * (sizeof(TrackedProcess) + 1024));  // small data: well below the stated bound
  EXPECT_EQ(one("process_tracker_get(id=1).EndTime"), time(0));  // the live one stays
  EXPECT_EQ(one("len(list=process_tracker_get(id=1).Children)"), "99");  // no ids of evicted ones
  EXPECT_EQ(one("process_tracker_get(id=5999).Data.Name"), "\"p9999\"");
  // More live processes than the bound: the least recently seen go.
  for (int i = 0; i < 150; ++i) tracker->update(started(std::to_string(20000 + i), "1", 20000, "live"), at(20000));
  EXPECT_EQ(tracker->size(), 100u);
  EXPECT_EQ(one("process_tracker_get(id=20149).Data.Name"), "\"live\"");
  EXPECT_EQ(one("process_tracker_get(id=20049)"), "null");
}

// The owner updates while queries on other threads read: each read sees a
// whole table (every child it lists is there; never more than max_size).
TEST_F(SmallTracker, ReadersOnOtherThreadsSeeAWholeTable) {
  tracker->sync({live("1", "0", 10, "init")}, at(10));
  std::atomic<bool> done{false};
  std::atomic<int> reads{0}, broken{0};
  auto reader = [&] {
    while (!done) {
      tracker->read([&](const ProcessView& view) {
        size_t n = 0;
        view.each([&](const TrackedProcess& p) {
          ++n;
          for (auto& child : p.children)
            if (!view.find(child)) ++broken;
        });
        if (n > 100) ++broken;
      });
      if (run("SELECT * FROM process_tracker_pslist()").size() > 100) ++broken;
      ++reads;
    }
  };
  std::thread a(reader), b(reader);
  for (int i = 0; i < 5'000; ++i) {
    std::string pid = std::to_string(1000 + i);
    tracker->update(started(pid, i % 2 ? "1" : std::to_string(999 + i), 100 + i, "p"), at(100 + i));
    if (i % 3 == 0) tracker->update(exited(pid, 100 + i), at(100 + i));
  }
  done = true;
  a.join();
  b.join();
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(broken.load(), 0);
}

TEST_F(SmallTracker, DataIsCutToItsBound) {
  Row data;
  data.set("Name", "big");
  data.set("CommandLine", std::string(10'000, 'x'));
  data.set("Env", List(500, Value("a value")));
  tracker->update(TrackerUpdate{"5", "1", "start", at(5), {}, data}, at(5));
  std::string stored = one("process_tracker_get(id=5).Data");
  EXPECT_LE(stored.size(), ProcessTracker::kMaxDataBytes + 200) << stored.size();  // + Pid, Ppid, StartTime, EndTime
  EXPECT_EQ(one("process_tracker_get(id=5).Data.Name"), "\"big\"");
  EXPECT_EQ(one("process_tracker_get(id=5).Data.DataTruncated"), "true");
  EXPECT_EQ(one("process_tracker_get(id=5).Data.CommandLine =~ '^x{1000,}$'"), "true");
  EXPECT_LE(tracker->bytes(), sizeof(TrackedProcess) + 3 * 64 + 2 * ProcessTracker::kMaxDataBytes);
}

TEST_F(SmallTracker, ExitedProcessesExpire) {
  tracker->update(started("7", "1", 100, "short"), at(100));
  tracker->update(exited("7", 110), at(110));
  tracker->update(started("8", "1", 3000, "later"), at(3000));
  EXPECT_EQ(one("process_tracker_get(id=7).EndTime"), time(110));
  tracker->update(started("9", "1", 3711, "much later"), at(3711));  // 3601 s after 7 ended
  EXPECT_EQ(one("process_tracker_get(id=7)"), "null");
  EXPECT_EQ(one("process_tracker_get(id=8).Data.Name"), "\"later\"");
}

TEST_F(Tracker, SubscribersGetEveryUpdateInUpstreamsShape) {
  auto sub = tracker->subscribe();
  tracker->sync({live("1", "0", 10, "init")}, at(10));
  std::vector<Row> rows;
  ASSERT_EQ(sub->take(rows, 10), 1u);
  EXPECT_EQ(to_json(rows[0]), "{\"Id\":\"\",\"ParentId\":\"\",\"UpdateType\":\"sync\",\"StartTime\":" + time(0) +
                                  ",\"EndTime\":" + time(0) + ",\"Data\":{\"1-10\":" +
                                  one("process_tracker_get(id=1)") + "}}");
  tracker->update(started("20", "1", 20, "a"), at(20));
  tracker->update(exited("20", 21), at(21));
  ASSERT_EQ(sub->take(rows, 10), 2u);
  EXPECT_EQ(to_json(rows[1]), "{\"Id\":\"20\",\"ParentId\":\"1\",\"UpdateType\":\"start\",\"StartTime\":" + time(20) +
                                  ",\"EndTime\":" + time(0) + ",\"Data\":{\"Name\":\"a\"}}");
  EXPECT_EQ(to_string(*rows[2].find("UpdateType")), "exit");
  EXPECT_EQ(rows[2].find("update_type"), nullptr);  // Go's names only, as upstream
}

// process_tracker() in one query, as Linux.Events.TrackProcesses installs
// it; another query of the agent reads it; it goes when the first ends.
TEST(ProcessTrackerQuery, InstalledByOneQueryReadByAnotherUntilItEnds) {
  AgentSystemConfig cfg;
  caf::actor_system sys{cfg};
  auto hub = std::make_unique<SensorHub>(sys);
  Engine engine(default_registry());
  auto owner_env = std::make_unique<Env>();  // the query's, gone with it
  Env reader_env;
  owner_env->sensors = reader_env.sensors = hub.get();
  // Times near now: an exit older than a day (max_expiry) would be gone.
  int64_t base = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count() - 100;
  const std::string vql = R"(
    LET SyncQuery = SELECT * FROM foreach(row=[
        dict(id=1, parent_id=0, start_time=Base, data=dict(Name='init')),
        dict(id=10, parent_id=1, start_time=Base + 10, data=dict(Name='sh'))])
    LET UpdateQuery = SELECT * FROM foreach(row=[
        dict(id=20, parent_id=10, update_type='start', start_time=Base + 20, data=dict(Name='a')),
        dict(id=20, update_type='exit', end_time=Base + 30),
        dict(parent_id=10, update_type='start')])
    LET Tracker <= process_tracker(sync_query=SyncQuery, update_query=UpdateQuery, sync_period=600000)
    SELECT UpdateType, Id FROM process_tracker_updates())";
  auto owner = engine.start(vql, {Binding{"Base", Value(base), nullptr}}, *owner_env);
  std::vector<Row> rows;
  for (int i = 0; i < 100 && rows.size() < 2; ++i) owner->next(rows, 100);
  EXPECT_EQ(json_lines(rows), (std::vector<std::string>{"{\"UpdateType\":\"start\",\"Id\":\"20\"}",
                                                        "{\"UpdateType\":\"exit\",\"Id\":\"20\"}"}));
  auto reader = engine.start("SELECT join(array=process_tracker_callchain(id=20).Data.Name, sep=' > ') AS Chain, "
                             "process_tracker_get(id=20).EndTime AS End FROM scope()",
                             {}, reader_env);
  std::vector<Row> read;
  while (reader->next(read, 100).state != Step::State::done) {
  }
  ASSERT_EQ(read.size(), 1u);
  EXPECT_EQ(to_json(read[0]), "{\"Chain\":\"init > sh > a\",\"End\":" + value_json(Value(at(base + 30))) + "}");
  // A reader's process_tracker_updates() ends when the owner does.
  auto updates = engine.start("SELECT * FROM process_tracker_updates()", {}, reader_env);
  std::vector<Row> none;
  EXPECT_NE(updates->next(none, 100).state, Step::State::done);
  EXPECT_NE(hub->trackers()->get(), nullptr);
  owner.reset();
  owner_env.reset();
  EXPECT_EQ(hub->trackers()->get(), nullptr);
  EXPECT_EQ(updates->next(none, 100).state, Step::State::done);
  EXPECT_EQ(error_of_run([&] { engine.start("SELECT * FROM process_tracker_updates()", {}, reader_env)->next(none, 1); }),
            "process_tracker_updates(): no process tracker is installed (process_tracker() installs one, as "
            "Linux.Events.TrackProcesses does)");
  updates.reset();
  hub.reset();
  sys.await_all_actors_done();
}

TEST(ProcessTrackerQuery, WhatItCannotDoIsRefusedByName) {
  auto error = [](std::vector<std::pair<std::string, Value>> args) {
    Env env;  // no agent
    return error_of_run([&] { default_registry().function("process_tracker")->call(Args("process_tracker", args), env); });
  };
  EXPECT_EQ(error({}), "process_tracker(): only an agent's queries can install a tracker");
  EXPECT_EQ(error({{"cache", Value("/tmp/x")}}), "process_tracker(): cache: not supported by Outpost's tracker");
  EXPECT_EQ(error({{"max_size", Value(-1)}}), "process_tracker(): max_size: must be positive, got -1");
  EXPECT_EQ(error({{"max_expiry", Value(int64_t{10'000'000'000})}}),
            "process_tracker(): max_expiry: must be from 1 to 315360000 (10 years), got 10000000000");
  EXPECT_EQ(error({{"sync_query", Value("pslist")}}), "process_tracker(): sync_query: expected a query, got string");
}

}  // namespace
}  // namespace outpost::vql
