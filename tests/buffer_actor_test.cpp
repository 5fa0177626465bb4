#include <gtest/gtest.h>

#include <atomic>
#include <mutex>

#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include "actors/buffer_actor.hpp"
#include "actors/buffer_reader.hpp"
#include "persistence/record_format.hpp"
#include "tests/actor_test_util.hpp"
#include "tests/temp_dir.hpp"

namespace outpost {
namespace {
using namespace outpost::testing;

struct BufferActorTest : ::testing::Test {
  TempDir tmp;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  buffer_actor buf;

  void start(uint64_t limit, BufferOptions options = {}) {
    persistence::StoreOptions o;
    o.dir = tmp.path("buf");
    o.limit_bytes = limit;
    o.sync = persistence::SyncPolicy::full;
    sys = std::make_unique<caf::actor_system>(cfg);
    buf = sys->spawn<caf::detached>(buffer_with, std::make_shared<persistence::BufferStore>(o), options);
  }
  ~BufferActorTest() override {
    if (buf) caf::anon_send(buf, close_atom::value);
    sys->await_all_actors_done();
  }
};

// Fires `n` appends without waiting and counts the answers.
void producer(caf::event_based_actor* self, buffer_actor buf, int n, size_t size,
              std::atomic<int>* answered) {
  for (int i = 0; i < n; ++i)
    self->request(buf, caf::infinite, append_atom::value, Lane::EVENTS, make_record(size))
        .then([=](uint64_t) { ++*answered; });
}

TEST_F(BufferActorTest, ConcurrentAppendsShareCommits) {
  start(1ull << 30);
  std::atomic<int> answered{0};
  for (int p = 0; p < 50; ++p) sys->spawn(producer, buf, 200, 200, &answered);
  ASSERT_TRUE(eventually([&] { return answered == 50 * 200; }));
  caf::scoped_actor self{*sys};
  auto s = status_of(self, buf);
  EXPECT_EQ(count(s, "appends"), 10000);
  EXPECT_EQ(count(s, "lanes.events.records"), 10000);
  EXPECT_LE(count(s, "commits") * 10, count(s, "appends")) << caf::to_string(s);
}

TEST_F(BufferActorTest, FullBufferHoldsAppendsUntilAcksFreeSpace) {
  uint64_t per_record = 0;
  {
    auto probe = make_record(1000);
    per_record = persistence::record_format::accounted_bytes(probe.encoded->size());
  }
  start(per_record * 10);  // room for exactly ten records
  std::atomic<int> answered{0};
  sys->spawn(producer, buf, 25, 1000, &answered);
  caf::scoped_actor self{*sys};
  ASSERT_TRUE(eventually([&] { return answered == 10; }));
  ASSERT_TRUE(eventually([&] { return count(status_of(self, buf), "pending_appends") == 15; }));
  auto s = status_of(self, buf);
  EXPECT_TRUE(caf::get_or(s, "stalled", false));
  EXPECT_EQ(answered, 10);  // nothing refused, nothing dropped: they wait

  // Ack the four oldest: exactly four more get in.
  BufferedRecords head;
  self->request(buf, std::chrono::seconds(10), read_atom::value, Lane::EVENTS, uint64_t{0},
                uint64_t{4}, uint64_t{1} << 20)
      .receive([&](BufferedRecords r) { head = r; }, [&](caf::error&) { FAIL(); });
  ASSERT_EQ(head->size(), 4u);
  self->request(buf, std::chrono::seconds(10), ack_atom::value, Lane::EVENTS, head->back().seq)
      .receive([&](uint64_t freed) { EXPECT_EQ(freed, 4 * per_record); },
               [&](caf::error&) { FAIL(); });
  ASSERT_TRUE(eventually([&] { return answered == 14; }));
  EXPECT_EQ(count(status_of(self, buf), "pending_appends"), 11);

  // Drain the rest as it comes: the other 21 are stored, each exactly once.
  uint64_t after = 0, delivered = 0;
  ASSERT_TRUE(eventually([&] {
    self->request(buf, std::chrono::seconds(10), read_atom::value, Lane::EVENTS, after,
                  uint64_t{100}, uint64_t{1} << 20)
        .receive(
            [&](BufferedRecords r) {
              if (r->empty()) return;
              for (auto& rec : *r) {
                EXPECT_GT(rec.seq, after);
                after = rec.seq;
              }
              delivered += r->size();
              self->request(buf, std::chrono::seconds(10), ack_atom::value, Lane::EVENTS, after)
                  .receive([](uint64_t) {}, [](caf::error&) {});
            },
            [&](caf::error&) {});
    return delivered == 21;
  }));
  EXPECT_EQ(answered, 25);
}

// A cancel that refuses the only waiting appends, of a query with nothing
// stored, ends the wait: later acks free space and a new append must get in
// (the buffer stayed stalled with nothing waiting, and every later append
// waited for good).
TEST_F(BufferActorTest, ACancelThatEmptiesTheWaitLetsLaterAppendsIn) {
  uint64_t per_record = 0;
  {
    auto probe = make_record(1000);
    per_record = persistence::record_format::accounted_bytes(probe.encoded->size());
  }
  start(per_record * 4);
  caf::scoped_actor self{*sys};
  for (int i = 0; i < 4; ++i)  // query 1 fills the buffer
    self->request(buf, std::chrono::seconds(10), append_atom::value, Lane::EVENTS, make_record(1000, 1))
        .receive([](uint64_t) {}, [&](caf::error& e) { FAIL() << caf::to_string(e); });
  // Query 2's append waits for space; its cancel refuses it.
  std::atomic<int> refused{0};
  sys->spawn([&](caf::event_based_actor* p) {
    p->request(buf, caf::infinite, append_atom::value, Lane::EVENTS, make_record(1000, 2))
        .then([](uint64_t) {}, [&](caf::error&) { ++refused; });
  });
  ASSERT_TRUE(eventually([&] { return count(status_of(self, buf), "pending_appends") == 1; }));
  self->request(buf, std::chrono::seconds(10), purge_atom::value, uint64_t{2})
      .receive([](uint64_t n) { EXPECT_EQ(n, 1u); }, [&](caf::error& e) { FAIL() << caf::to_string(e); });
  ASSERT_TRUE(eventually([&] { return refused == 1; }));
  // The link acks query 1's records; then a new append must be stored.
  BufferedRecords stored;
  self->request(buf, std::chrono::seconds(10), read_atom::value, Lane::EVENTS, uint64_t{0},
                uint64_t{10}, uint64_t{1} << 20)
      .receive([&](BufferedRecords r) { stored = r; }, [&](caf::error&) { FAIL(); });
  ASSERT_EQ(stored->size(), 4u);
  self->request(buf, std::chrono::seconds(10), ack_atom::value, Lane::EVENTS, stored->back().seq)
      .receive([](uint64_t) {}, [&](caf::error& e) { FAIL() << caf::to_string(e); });
  bool stored_new = false;
  self->request(buf, std::chrono::seconds(30), append_atom::value, Lane::EVENTS, make_record(1000, 3))
      .receive([&](uint64_t) { stored_new = true; },
               [&](caf::error& e) { ADD_FAILURE() << caf::to_string(e); });
  EXPECT_TRUE(stored_new) << "the append after the cancel and the acks was never stored";
  EXPECT_FALSE(caf::get_or(status_of(self, buf), "stalled", true));
}

TEST_F(BufferActorTest, AcksArrivingTogetherShareATransaction) {
  start(1ull << 30);
  caf::scoped_actor self{*sys};
  std::vector<uint64_t> seqs;
  for (int i = 0; i < 100; ++i)
    self->request(buf, std::chrono::seconds(10), append_atom::value, Lane::EVENTS, make_record(100))
        .receive([&](uint64_t seq) { seqs.push_back(seq); }, [&](caf::error&) { FAIL(); });
  int64_t before = count(status_of(self, buf), "store_commits");
  std::vector<decltype(self->request(buf, caf::infinite, ack_atom::value, Lane::EVENTS, uint64_t{0}))> acks;
  for (auto seq : seqs) acks.push_back(self->request(buf, std::chrono::seconds(10), ack_atom::value, Lane::EVENTS, seq));
  for (auto& a : acks) a.receive([](uint64_t) {}, [&](caf::error&) { FAIL(); });
  auto s = status_of(self, buf);
  EXPECT_EQ(count(s, "lanes.events.records"), 0);
  EXPECT_EQ(count(s, "acks"), 100);
  EXPECT_LE(count(s, "store_commits") - before, 5) << "acks were not gathered into few transactions";
}

TEST_F(BufferActorTest, EventAppendsGetFreedSpaceBeforeBulkOnes) {
  uint64_t per_record = persistence::record_format::accounted_bytes(make_record(1000).encoded->size());
  start(per_record * 3);
  caf::scoped_actor self{*sys};
  std::vector<uint64_t> stored;
  for (int i = 0; i < 3; ++i)
    self->request(buf, std::chrono::seconds(10), append_atom::value, Lane::RESULTS, make_record(1000))
        .receive([&](uint64_t seq) { stored.push_back(seq); }, [&](caf::error&) { FAIL(); });
  // Full: two bulk appends wait, then an event one.
  std::atomic<int> bulk{0}, events{0};
  auto append = [&](Lane lane, std::atomic<int>* answered) {
    sys->spawn([=](caf::event_based_actor* a) {
      a->request(buf, caf::infinite, append_atom::value, lane, make_record(1000))
          .then([=](uint64_t) { ++*answered; });
    });
  };
  append(Lane::RESULTS, &bulk);
  append(Lane::RESULTS, &bulk);
  ASSERT_TRUE(eventually([&] { return count(status_of(self, buf), "pending_appends") == 2; }));
  append(Lane::EVENTS, &events);
  ASSERT_TRUE(eventually([&] { return count(status_of(self, buf), "pending_appends") == 3; }));
  // Room for one: the event append takes it.
  self->request(buf, std::chrono::seconds(10), ack_atom::value, Lane::RESULTS, stored[0])
      .receive([](uint64_t) {}, [&](caf::error&) { FAIL(); });
  ASSERT_TRUE(eventually([&] { return events == 1; }));
  EXPECT_EQ(bulk, 0);
  EXPECT_EQ(count(status_of(self, buf), "pending_appends"), 2);
}

TEST_F(BufferActorTest, ReaderServesTheSameRecordsAndEndsWithTheBuffer) {
  persistence::StoreOptions o;
  o.dir = tmp.path("buf");
  auto store = std::make_shared<persistence::BufferStore>(o);
  sys = std::make_unique<caf::actor_system>(cfg);
  buf = sys->spawn<caf::detached>(buffer, store);
  auto reader = sys->spawn<caf::detached>(buffer_reader, store, buf);
  caf::scoped_actor self{*sys};
  for (int i = 0; i < 3; ++i)
    self->request(buf, std::chrono::seconds(10), append_atom::value, Lane::EVENTS, make_record(10 + i))
        .receive([](uint64_t) {}, [&](caf::error&) { FAIL(); });
  auto read = [&](auto& from) {
    std::vector<std::pair<uint64_t, size_t>> out;
    self->request(from, std::chrono::seconds(10), read_atom::value, Lane::EVENTS, uint64_t{0},
                  uint64_t{100}, uint64_t{1} << 20)
        .receive([&](BufferedRecords r) {
                   for (auto& rec : *r) out.emplace_back(rec.seq, rec.size);
                 },
                 [&](caf::error& e) { ADD_FAILURE() << sys->render(e); });
    return out;
  };
  auto direct = read(buf);
  EXPECT_EQ(direct.size(), 3u);
  EXPECT_EQ(read(reader), direct);
  self->monitor(reader);
  self->send(buf, close_atom::value);
  bool ended = false;
  self->receive([&](caf::down_msg&) { ended = true; },
                caf::after(std::chrono::seconds(10)) >> [] {});
  EXPECT_TRUE(ended) << "the reader outlived its buffer";
  buf = nullptr;
}

TEST_F(BufferActorTest, NotifiesItsLinkAfterEachCommit) {
  start(1ull << 30);
  std::mutex mutex;
  uint64_t notified = 0;
  BufferedRecords fresh;
  auto link = sys->spawn([&](link_actor::pointer) -> link_actor::behavior_type {
    return {
        [&](committed_atom, Lane lane, uint64_t seq, const BufferedRecords& records) {
          EXPECT_EQ(lane, Lane::EVENTS);
          std::lock_guard<std::mutex> lock(mutex);
          notified = seq;
          fresh = records;
        },
        [](online_atom, bool) {},
        [](reconnect_atom) { return std::string(); },
        [](status_atom) { return caf::settings{}; },
    };
  });
  caf::scoped_actor self{*sys};
  self->send(buf, set_link_atom::value, link);
  auto append = [&](const RecordRef& record) {
    uint64_t seq = 0;
    self->request(buf, std::chrono::seconds(10), append_atom::value, Lane::EVENTS, record)
        .receive([&](uint64_t s) { seq = s; }, [&](caf::error&) { ADD_FAILURE(); });
    EXPECT_TRUE(eventually([&] {
      std::lock_guard<std::mutex> lock(mutex);
      return notified == seq;
    }));
    std::lock_guard<std::mutex> lock(mutex);
    return std::make_pair(seq, fresh);
  };
  // A small commit's records come along, as stored: the link need not read them.
  auto small = make_record(10);
  auto [seq, records] = append(small);
  ASSERT_TRUE(records && records->size() == 1);
  EXPECT_EQ(records->front().seq, seq);
  EXPECT_EQ(records->front().query_id, small.query_id);
  EXPECT_EQ(records->front().payload(), small.encoded->bytes());
  // A big one's do not: a backlog is read in upload-sized pieces.
  EXPECT_EQ(append(make_record(100 << 10)).second, nullptr);
  caf::anon_send_exit(link, caf::exit_reason::user_shutdown);
}

// The wedge: a record above the per-commit byte cap (4 MiB) but
// within the record limit never fit a commit, and every append behind it on
// the lane waited forever.
TEST_F(BufferActorTest, ARecordAboveTheCommitCapCommitsAloneAndTheLaneGoesOn) {
  start(64ull << 20);
  auto big = make_record(schemas::kMaxRecordBytes - 100);
  ASSERT_LE(big.encoded->size(), schemas::kMaxRecordBytes);
  ASSERT_GT(persistence::record_format::accounted_bytes(big.encoded->size()), 4ull << 20)
      << "the premise: bigger than one commit's byte cap";
  std::atomic<int> answered{0};
  sys->spawn([=, &answered](caf::event_based_actor* a) {
    for (auto record : {big, make_record(100), make_record(100)})
      a->request(buf, caf::infinite, append_atom::value, Lane::EVENTS, record)
          .then([&answered](uint64_t) { ++answered; });
  });
  ASSERT_TRUE(eventually([&] { return answered == 3; }));
  caf::scoped_actor self{*sys};
  auto s = status_of(self, buf);
  EXPECT_EQ(count(s, "lanes.events.records"), 3);
  EXPECT_FALSE(caf::get_or(s, "stalled", true));
}

TEST_F(BufferActorTest, ARecordAboveTheRecordLimitIsRefusedAtOnceWithTheSizes) {
  start(64ull << 20);
  caf::scoped_actor self{*sys};
  std::string error;
  self->request(buf, std::chrono::seconds(10), append_atom::value, Lane::EVENTS,
                make_record(schemas::kMaxRecordBytes))
      .receive([](uint64_t) { ADD_FAILURE() << "stored"; },
               [&](caf::error& e) { error = sys->render(e); });
  EXPECT_NE(error.find("exceeds the record limit of " + std::to_string(schemas::kMaxRecordBytes)),
            std::string::npos)
      << error;
  self->request(buf, std::chrono::seconds(10), append_atom::value, Lane::EVENTS, make_record(10))
      .receive([](uint64_t) {}, [&](caf::error& e) { ADD_FAILURE() << sys->render(e); });
}

// Reaching the limit is logged once per episode (warn), and so is leaving
// it (info), however many appends wait meanwhile.
TEST_F(BufferActorTest, AFullEpisodeIsLoggedOnceWhenItStartsAndOnceWhenItEnds) {
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(1000);
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("test", sink));
  uint64_t per_record = persistence::record_format::accounted_bytes(make_record(1000).encoded->size());
  start(per_record * 2);
  std::atomic<int> answered{0};
  sys->spawn(producer, buf, 6, 1000, &answered);
  caf::scoped_actor self{*sys};
  ASSERT_TRUE(eventually([&] { return count(status_of(self, buf), "pending_appends") == 4; }));
  auto ack_all = [&] {
    BufferedRecords got;
    self->request(buf, std::chrono::seconds(10), read_atom::value, Lane::EVENTS, uint64_t{0},
                  uint64_t{100}, uint64_t{1} << 20)
        .receive([&](BufferedRecords r) { got = r; }, [&](caf::error&) { FAIL(); });
    ASSERT_FALSE(got->empty());
    self->request(buf, std::chrono::seconds(10), ack_atom::value, Lane::EVENTS, got->back().seq)
        .receive([](uint64_t) {}, [&](caf::error&) { FAIL(); });
  };
  ack_all();  // two get in, the buffer is full again: the same episode
  ASSERT_TRUE(eventually([&] { return answered == 4; }));
  ack_all();
  ASSERT_TRUE(eventually([&] { return answered == 6; }));
  auto s = status_of(self, buf);
  EXPECT_EQ(count(s, "full_episodes"), 1);
  EXPECT_FALSE(caf::get_or(s, "full", true));
  spdlog::set_default_logger(previous);
  int warned = 0, drained = 0;
  for (auto& line : sink->last_formatted()) {
    if (line.find("buffer: full (") != std::string::npos) {
      ++warned;
      EXPECT_NE(line.find("[warning]"), std::string::npos) << line;
      EXPECT_NE(line.find("events lane"), std::string::npos) << line;
    }
    if (line.find("buffer: no longer full") != std::string::npos) ++drained;
  }
  EXPECT_EQ(warned, 1);
  EXPECT_EQ(drained, 1);
}

}  // namespace
}  // namespace outpost

namespace outpost {
namespace {
using namespace outpost::testing;

BufferOptions with_interval(std::chrono::milliseconds interval) {
  BufferOptions o;
  o.commit_interval = interval;
  return o;
}

// Sends one append from its own actor; its answer (the seq, or 0 for an
// error) lands in `*seq`, and `*answered` counts it.
void append_from_actor(caf::actor_system& sys, buffer_actor buf, RecordRef record, std::atomic<uint64_t>* seq,
                       std::atomic<int>* answered) {
  sys.spawn([=](caf::event_based_actor* a) {
    a->request(buf, caf::infinite, append_atom::value, Lane::EVENTS, record)
        .then([=](uint64_t s) { *seq = s, ++*answered; }, [=](caf::error&) { ++*answered; });
  });
}

// A trickle: the first append after a quiet interval is committed at once;
// the next ones, each handled (seen waiting) before the interval is over,
// wait for one commit together, due an interval after the first.
TEST_F(BufferActorTest, ATrickleOfAppendsIsCommittedInGroupsOnePerInterval) {
  const auto interval = std::chrono::seconds(3);
  start(1ull << 30, with_interval(interval));
  caf::scoped_actor self{*sys};
  auto first_committed = std::chrono::steady_clock::now();
  self->request(buf, std::chrono::seconds(10), append_atom::value, Lane::EVENTS, make_record(100))
      .receive([](uint64_t) {}, [&](caf::error& e) { FAIL() << sys->render(e); });
  EXPECT_EQ(count(status_of(self, buf), "commits"), 1);
  std::atomic<uint64_t> seqs[3] = {};
  std::atomic<int> answered{0};
  for (int i = 0; i < 3; ++i) {
    append_from_actor(*sys, buf, make_record(100), &seqs[i], &answered);
    ASSERT_TRUE(eventually([&] { return count(status_of(self, buf), "pending_appends") == i + 1; }))
        << "append " << i + 2 << " was not held for the group";
  }
  ASSERT_TRUE(eventually([&] { return answered == 3; }));
  auto grouped = std::chrono::steady_clock::now() - first_committed;
  auto s = status_of(self, buf);
  EXPECT_EQ(count(s, "commits"), 2) << caf::to_string(s);
  EXPECT_EQ(count(s, "lanes.events.records"), 4);
  EXPECT_EQ(count(s, "commit_interval_ms"), 3000);
  EXPECT_GE(grouped, interval - std::chrono::milliseconds(50));
  EXPECT_EQ(seqs[1], seqs[0] + 1);
  EXPECT_EQ(seqs[2], seqs[1] + 1);
}

// Enough waiting for a commit of its own goes at once, however long the
// interval: a busy stream is not slowed down (nor held in RAM) by it. Its
// tail, less than that, waits for its group (here: the shutdown).
TEST_F(BufferActorTest, AnAppendBacklogWorthACommitDoesNotWaitForTheInterval) {
  start(1ull << 30, with_interval(std::chrono::hours(1)));
  uint64_t per_record = persistence::record_format::accounted_bytes(make_record(1000).encoded->size());
  int enough = static_cast<int>(kGroupCommitBytes / per_record);  // the last of them crosses the threshold
  std::atomic<int> answered{0};
  {
    caf::scoped_actor self{*sys};
    self->request(buf, std::chrono::seconds(10), append_atom::value, Lane::EVENTS, make_record(100))
        .receive([](uint64_t) {}, [&](caf::error& e) { FAIL() << sys->render(e); });
    sys->spawn(producer, buf, 400, 1000, &answered);  // ~400 KB
    EXPECT_TRUE(eventually([&] { return answered >= enough; })) << answered << " of 400 answered";
    self->send(buf, close_atom::value);
  }
  buf = nullptr;
  ASSERT_TRUE(eventually([&] { return answered == 400; }));  // the tail at shutdown
}

// Shutdown stores the appends still waiting for their group's commit, and
// answers them.
TEST_F(BufferActorTest, CloseStoresTheAppendsWaitingForTheirGroup) {
  start(1ull << 30, with_interval(std::chrono::hours(1)));
  std::atomic<uint64_t> seq{0};
  std::atomic<int> answered{0};
  {
    caf::scoped_actor self{*sys};
    self->request(buf, std::chrono::seconds(10), append_atom::value, Lane::EVENTS, make_record(100))
        .receive([](uint64_t) {}, [&](caf::error& e) { FAIL() << sys->render(e); });
    append_from_actor(*sys, buf, make_record(100), &seq, &answered);
    ASSERT_TRUE(eventually([&] { return count(status_of(self, buf), "pending_appends") == 1; }));
    self->send(buf, close_atom::value);
  }
  buf = nullptr;
  ASSERT_TRUE(eventually([&] { return answered == 1; }));
  EXPECT_NE(seq, 0u) << "refused at shutdown";
  sys->await_all_actors_done();  // the store is closed
  persistence::StoreOptions o;
  o.dir = tmp.path("buf");
  persistence::BufferStore store(o);
  EXPECT_EQ(store.stats().lanes[static_cast<size_t>(Lane::EVENTS)].live.records, 2u);
}

}  // namespace
}  // namespace outpost
