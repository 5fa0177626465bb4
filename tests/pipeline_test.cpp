// Queries, buffer, link and supervisor together in one process, on real
// threads and real files. Conditions are awaited, never timed.

#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include "actors/buffer_actor.hpp"
#include "actors/file_link.hpp"
#include "actors/query_actor.hpp"
#include "actors/supervisor.hpp"
#include "actors/test_sources.hpp"
#include "actors/waker.hpp"
#include "tests/actor_test_util.hpp"
#include "tests/temp_dir.hpp"

namespace outpost {
namespace {
using namespace outpost::testing;

QuerySpec synthetic(uint64_t id, uint64_t max_rows, uint64_t fail_after = 0) {
  QuerySpec q;
  q.id = id;
  q.name = "synthetic-" + std::to_string(id);
  q.artifact = "Test.Synthetic";
  q.source.kind = SourceSpec::Kind::synthetic;
  q.source.row_size = 100;
  q.source.max_rows = max_rows;
  q.source.fail_after = fail_after;
  q.batch_rows = 50;
  q.max_in_flight = 2;
  return q;
}

uint64_t number_after(const std::string& line, const std::string& key) {
  auto pos = line.find("\"" + key + "\":");
  return pos == std::string::npos ? 0 : std::stoull(line.substr(pos + key.size() + 3));
}

// query id -> the synthetic Seq column of every delivered row, in file order.
std::map<uint64_t, std::vector<uint64_t>> delivered_rows(const std::filesystem::path& file) {
  std::map<uint64_t, std::vector<uint64_t>> rows;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);)
    rows[number_after(line, "query_id")].push_back(number_after(line, "Seq"));
  return rows;
}

struct Pipeline {
  TempDir tmp;
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  buffer_actor buf;
  link_actor link;
  supervisor_actor sup;

  Pipeline(uint64_t limit, bool online, std::vector<QuerySpec> queries, BufferOptions options = {}) {
    persistence::StoreOptions o;
    o.dir = tmp.path("buf");
    o.limit_bytes = limit;
    o.sync = persistence::SyncPolicy::none;
    buf = sys.spawn<caf::detached>(buffer_with, std::make_shared<persistence::BufferStore>(o), options);
    link = sys.spawn(file_link, buf, tmp.path("out.jsonl").string(), online);
    self->send(buf, set_link_atom::value, link);
    RestartPolicy fast{std::chrono::milliseconds(20), std::chrono::milliseconds(200),
                       std::chrono::milliseconds(60000)};
    sup = sys.spawn(supervisor, buf, link, std::move(queries),
                    SourceFactory{[](const QuerySpec& q) { return make_test_source(q.source); }},
                    fast);
  }
  ~Pipeline() {
    self->send(sup, shutdown_atom::value);
    self->wait_for(sup);
  }
  caf::settings sup_status() { return status_of(self, sup); }
  bool all_finished(size_t n) {
    auto s = sup_status();
    for (size_t i = 1; i <= n; ++i)
      if (!caf::get_or(s, "query.synthetic-" + std::to_string(i) + ".finished", false))
        return false;
    return true;
  }
};

TEST(Pipeline, FullBufferPausesQueriesAndDrainingResumesThemWithNothingLost) {
  std::vector<QuerySpec> queries;
  for (uint64_t id = 1; id <= 3; ++id) queries.push_back(synthetic(id, 3000));
  Pipeline p(64 * 1024, /*online=*/false, queries);

  // Offline with a small limit: the buffer fills, the queries pause.
  ASSERT_TRUE(eventually([&] { return caf::get_or(status_of(p.self, p.buf), "stalled", false); }));
  auto s = status_of(p.self, p.buf);
  EXPECT_GT(count(s, "pending_appends"), 0);
  EXPECT_LE(count(s, "live_bytes"), 64 * 1024);
  EXPECT_FALSE(p.all_finished(3));

  // Online: the link drains, acks free space, the queries resume on their own.
  p.self->send(p.link, online_atom::value, true);
  ASSERT_TRUE(eventually([&] { return p.all_finished(3); }));
  ASSERT_TRUE(eventually([&] { return count(status_of(p.self, p.buf), "live_bytes") == 0; }));
  EXPECT_GT(count(status_of(p.self, p.buf), "full_episodes"), 0);

  auto rows = delivered_rows(p.tmp.path("out.jsonl"));
  for (uint64_t id = 1; id <= 3; ++id) {
    ASSERT_EQ(rows[id].size(), 3000u) << "query " << id;
    for (uint64_t i = 0; i < 3000; ++i) ASSERT_EQ(rows[id][i], i + 1) << "query " << id;
  }
}

TEST(Pipeline, ManyQueriesShareCommits) {
  std::vector<QuerySpec> queries;
  for (uint64_t id = 1; id <= 50; ++id) queries.push_back(synthetic(id, 2000));
  Pipeline p(1ull << 30, /*online=*/true, queries);
  ASSERT_TRUE(eventually([&] { return p.all_finished(50); }));
  auto s = status_of(p.self, p.buf);
  EXPECT_EQ(count(s, "appends"), 50 * 2000 / 50);
  EXPECT_LT(count(s, "commits") * 3, count(s, "appends")) << caf::to_string(s);
}

// A query that waits for its appends' answers (paused at max_in_flight, or
// done and waiting to finish) has the buffer commit them at once: with a
// commit interval of an hour, both queries still finish.
TEST(Pipeline, QueriesWaitingForTheirAppendsAreNotHeldByTheCommitInterval) {
  auto paused = synthetic(1, 1000);
  paused.max_in_flight = 1;  // pauses after every append
  auto done = synthetic(2, 120);
  done.max_in_flight = 64;  // never pauses: its last appends wait for the end
  BufferOptions options;
  options.commit_interval = std::chrono::hours(1);
  Pipeline p(1ull << 30, /*online=*/false, {paused, done}, options);  // no acks to commit along
  ASSERT_TRUE(eventually([&] { return p.all_finished(2); })) << caf::to_string(p.sup_status());
  EXPECT_EQ(count(status_of(p.self, p.buf), "lanes.events.records"), 1000 / 50 + 3);  // batches of 50 rows
}

TEST(Pipeline, FailingQueryIsRestartedOthersGoOnAndItsRowsStay) {
  Pipeline p(1ull << 30, /*online=*/false, {synthetic(1, 0, /*fail_after=*/120), synthetic(2, 1000)});
  ASSERT_TRUE(eventually([&] {
    return count(p.sup_status(), "query.synthetic-1.restarts") >= 3 &&
           caf::get_or(p.sup_status(), "query.synthetic-2.finished", false);
  }));
  auto s = p.sup_status();
  EXPECT_NE(caf::get_or(s, "query.synthetic-1.last_error", std::string()).find("fail_after"),
            std::string::npos);
  // Each run of query 1 committed its first 100 rows (two batches of 50)
  // before failing in its third batch; they stay in the buffer.
  auto b = status_of(p.self, p.buf);
  int64_t restarts = count(s, "query.synthetic-1.restarts");
  EXPECT_GE(count(b, "lanes.events.records"), 1000 / 50 + 2 * restarts);
}

TEST(Pipeline, BufferDeathShutsTheAgentDownWithAnError) {
  Pipeline p(1ull << 30, /*online=*/true, {synthetic(1, 0)});
  p.self->monitor(p.sup);
  p.self->send_exit(p.buf, caf::exit_reason::kill);
  caf::error reason;
  p.self->receive([&](caf::down_msg& down) { reason = down.reason; },
                  caf::after(std::chrono::seconds(30)) >> [] { FAIL() << "supervisor still up"; });
  EXPECT_TRUE(reason) << "a failed agent must not exit as if it stopped cleanly";
}

// Offline with a full buffer, queries have handed over everything they
// produced and wait; at shutdown the buffer's reserve (sized by the pending
// budget) stores all of it: not one row refused.
TEST(Pipeline, AFullBufferAtShutdownStoresEveryRowTheQueriesHandedOver) {
  TempDir tmp;
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  const uint64_t limit = 32 << 10, budget = 512 << 10;  // room for every row to wait
  persistence::StoreOptions o;
  o.dir = tmp.path("buf");
  o.limit_bytes = limit + budget;
  o.sync = persistence::SyncPolicy::none;
  auto store = std::make_shared<persistence::BufferStore>(o);
  buffer_actor buf = sys.spawn<caf::detached>(buffer_with, store, BufferOptions{budget, budget});
  auto wake = sys.spawn(waker);
  std::vector<query_actor> queries;
  for (uint64_t id = 1; id <= 3; ++id) {
    auto spec = synthetic(id, 300);
    spec.max_in_flight = 64;
    queries.push_back(sys.spawn(query, std::make_shared<const QuerySpec>(spec), buf, wake,
                                SourceFactory{[](const QuerySpec& q) { return make_test_source(q.source); }}));
  }
  // Every row produced and handed over; the buffer is full, some wait. (The
  // buffer marks itself full when it handles the commit that fills it, which
  // may come after the queries' last appends went out.)
  ASSERT_TRUE(eventually([&] {
    for (auto& q : queries)
      if (caf::get_or(status_of(self, q), "state", std::string()) != "finishing") return false;
    return caf::get_or(status_of(self, buf), "full", false);
  })) << caf::to_string(status_of(self, queries[0])) << "\n" << caf::to_string(status_of(self, buf));
  auto b = status_of(self, buf);
  ASSERT_TRUE(caf::get_or(b, "full", false)) << caf::to_string(b);
  ASSERT_GT(count(b, "pending_appends"), 0);
  EXPECT_LE(count(b, "live_bytes"), static_cast<int64_t>(limit));
  int64_t produced = 0;
  for (auto& q : queries) produced += count(status_of(self, q), "rows_produced");
  EXPECT_EQ(produced, 900);

  for (auto& q : queries) self->send(q, hand_over_atom::value);
  uint64_t refused = 99;
  self->request(buf, std::chrono::seconds(60), settle_atom::value)
      .receive([&](uint64_t r) { refused = r; }, [&](caf::error&) { FAIL(); });
  EXPECT_EQ(refused, 0u);
  int64_t stored = 0;
  uint64_t after = 0;
  for (;;) {
    BufferedRecords got;
    self->request(buf, std::chrono::seconds(10), read_atom::value, Lane::EVENTS, after,
                  uint64_t{1000}, uint64_t{1} << 30)
        .receive([&](BufferedRecords r) { got = r; }, [&](caf::error&) { FAIL(); });
    if (got->empty()) break;
    for (auto& rec : *got) {
      schemas::RecordView view(rec.words);
      stored += view.record().getRowBatch().getRows().size();
      after = rec.seq;
    }
  }
  EXPECT_EQ(stored, produced);
  for (auto& q : queries) caf::anon_send_exit(q, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(wake, caf::exit_reason::user_shutdown);
  self->send(buf, close_atom::value);
}

TEST(Pipeline, TenThousandIdleQueriesStartRunAndStop) {
  std::vector<QuerySpec> queries;
  for (uint64_t id = 1; id <= 10000; ++id) {
    QuerySpec q;
    q.id = id;
    q.name = "clock-" + std::to_string(id);
    q.source.kind = SourceSpec::Kind::clock;
    q.source.period = std::chrono::milliseconds(1000);
    queries.push_back(q);
  }
  Pipeline p(1ull << 30, /*online=*/true, queries);
  ASSERT_TRUE(eventually([&] { return count(p.sup_status(), "running") == 10000; }));
  // Every clock ticks at once on start: 10,000 rows reach the file.
  ASSERT_TRUE(eventually([&] {
    return count(status_of(p.self, p.link), "records_delivered") >= 10000;
  }, std::chrono::seconds(120)));
  // Stopping all of them is the destructor's job: it must return.
}

}  // namespace
}  // namespace outpost
