// Timing-dependent behaviour under CAF's deterministic test coordinator:
// nothing runs until the test says so, and time moves only when the test
// advances it. A fake buffer holds every append until the test answers it.

#include <gtest/gtest.h>

#include <caf/all.hpp>

#include <algorithm>
#include <map>
#include <caf/scheduler/test_coordinator.hpp>

#include "actors/file_link.hpp"
#include "actors/supervisor.hpp"
#include "actors/registry.hpp"
#include "actors/waker.hpp"
#include "schemas/codec.hpp"
#include "schemas/json.hpp"

namespace outpost {
namespace {
using namespace std::chrono_literals;

// What the fake buffer saw, in arrival order.
struct fake_buffer_state {
  static inline const char* name = "fake-buffer";
  struct Append {
    Lane lane;
    RecordRef record;
    caf::typed_response_promise<uint64_t> promise;
    bool answered = false;
  };
  std::vector<Append> appends;  // a query's (a flow's status records are apart)
  std::vector<RecordRef> flow_records;  // the supervisor's, answered at once
  std::vector<std::string> events;  // "append", "settle", "close", "purge <query id>"
  uint64_t next_seq = 1;
  PendingBudgetPtr budget = std::make_shared<PendingBudget>(1ull << 30);
};

using answer_atom = caf::atom_constant<caf::atom("answer")>;

// Dynamically typed so that it can also take `answer`: promises are
// delivered from within an actor, never from the test's thread.
caf::behavior fake_buffer(caf::stateful_actor<fake_buffer_state>* self) {
  return {
      [=](answer_atom, size_t i) {
        auto& a = self->state.appends.at(i);
        a.promise.deliver(self->state.next_seq++);
        a.answered = true;
      },
      [=](append_atom, Lane lane, RecordRef record) -> caf::result<uint64_t> {
        if (lane == Lane::CONTROL && record.query_id == 0) {  // a flow's start or end
          self->state.flow_records.push_back(std::move(record));
          return self->state.next_seq++;
        }
        auto promise = self->make_response_promise<uint64_t>();
        self->state.appends.push_back({lane, std::move(record), promise});
        self->state.events.push_back("append");
        return promise;
      },
      [=](budget_atom) { return self->state.budget; },
      [=](read_atom, Lane, uint64_t, uint64_t, uint64_t) {
        return BufferedRecords{std::make_shared<const std::vector<persistence::BufferedRecord>>()};
      },
      [=](ack_atom, Lane, uint64_t) { return uint64_t{0}; },
      [=](purge_atom, uint64_t query_id) {
        self->state.events.push_back("purge " + std::to_string(query_id));
        auto& a = self->state.appends;  // 7 if it holds any of the query's records
        return std::any_of(a.begin(), a.end(), [&](auto& x) { return x.record.query_id == query_id; })
                   ? uint64_t{7}
                   : uint64_t{0};
      },
      [=](set_link_atom, link_actor) {},
      [=](commit_atom) {},
      [=](settle_atom) {
        self->state.events.push_back("settle");
        uint64_t refused = 0;
        for (auto& a : self->state.appends)
          if (!a.answered) {
            a.promise.deliver(caf::make_error(caf::sec::runtime_error, "refused by the test"));
            a.answered = true;
            ++refused;
          }
        return refused;
      },
      // Stays up, so that the test can still read its state; the fixture ends it.
      [=](close_atom) { self->state.events.push_back("close"); },
      [=](status_atom) { return caf::settings{}; },
  };
}

// A source whose every pull is scripted by its spec: `rows` rows per pull,
// then wait `wait` (zero: more at once); throws on pull number `throw_on`.
struct Script {
  size_t rows = 1;
  std::chrono::nanoseconds wait{0};
  int throw_on = 0;  // 1-based; 0 never
  uint64_t dropped_on_second_pull = 0;  // events the source says it missed
  int done_on = 0;  // 1-based: the source says it is done on this pull; 0 never
  size_t big_row_bytes = 0;  // the first pull starts with a row of this many bytes
};

class ScriptedSource : public Source {
 public:
  explicit ScriptedSource(Script script) : script_(script) {}
  std::vector<std::string> columns() const override { return {"N"}; }
  PullResult pull(schemas::RowBatchWriter& batch, size_t max_rows) override {
    if (++pulls_ == script_.throw_on) throw std::runtime_error("scripted failure");
    PullResult result;
    if (pulls_ == 2) result.dropped = script_.dropped_on_second_pull;
    if (pulls_ == 1 && script_.big_row_bytes) batch.add_row()[0].initBytes(script_.big_row_bytes);
    for (size_t i = 0; i < std::min(max_rows, script_.rows); ++i)
      batch.add_row()[0].setUint64(++produced_);
    if (script_.wait.count() > 0) {
      result.state = PullResult::State::wait;
      result.wait = script_.wait;
    }
    if (pulls_ == script_.done_on) result.state = PullResult::State::done;
    return result;
  }

 private:
  Script script_;
  int pulls_ = 0;
  uint64_t produced_ = 0;
};

// The type an actor's implementation has (its internal messages included).
template <class State>
struct self_of;
template <>
struct self_of<query_state> {
  using type = query_self_actor;
};
template <>
struct self_of<waker_state> {
  using type = waker_self_actor;
};
template <>
struct self_of<supervisor_state> {
  using type = supervisor_self_actor;
};

// The state of a live actor (CAF destroys it when the actor quits).
template <class State, class Handle>
State& state_of(const Handle& h) {
  using Actor = caf::stateful_actor<State, typename self_of<State>::type::base>;
  return dynamic_cast<Actor&>(*caf::actor_cast<caf::abstract_actor*>(h)).state;
}

fake_buffer_state& state_of_fake(const caf::actor& h) {
  using Actor = caf::stateful_actor<fake_buffer_state>;
  return dynamic_cast<Actor&>(*caf::actor_cast<caf::abstract_actor*>(h)).state;
}

size_t rows_in(const RecordRef& r) {
  schemas::RecordView view(r.encoded->words());
  return view.record().getRowBatch().getRows().size();
}

struct Deterministic : ::testing::Test {
  AgentSystemConfig cfg;  // its registry: the counters a flow's end record reports
  std::unique_ptr<caf::actor_system> sys;
  caf::scheduler::test_coordinator* sched = nullptr;
  caf::actor fake;
  buffer_actor buf;  // the same actor, as the queries see it
  waker_actor wake;

  Deterministic() {
    cfg.set("scheduler.policy", caf::atom("testing"));
    sys = std::make_unique<caf::actor_system>(cfg);
    sys->await_actors_before_shutdown(false);  // nothing runs unless we run it
    sched = &dynamic_cast<caf::scheduler::test_coordinator&>(sys->scheduler());
    fake = sys->spawn(fake_buffer);
    buf = caf::actor_cast<buffer_actor>(fake);
    wake = sys->spawn(waker);
    sched->run();
  }
  ~Deterministic() override {
    // Ends everything this test spawned, then lets the system go.
    caf::anon_send_exit(fake, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(wake, caf::exit_reason::user_shutdown);
    sched->run();
    for (int i = 0; i < 100 && sched->trigger_timeouts() > 0; ++i) sched->run();
  }

  fake_buffer_state& fb() { return state_of_fake(fake); }

  void answer(size_t i) {
    caf::anon_send(fake, answer_atom::value, i);
    sched->run();
  }

  query_actor start_query(QuerySpec spec, Script script) {
    spec.name = spec.name.empty() ? "q" : spec.name;
    auto q = sys->spawn(query, std::make_shared<const QuerySpec>(spec), buf, wake,
                        SourceFactory{[script](const QuerySpec&) {
                          return std::make_unique<ScriptedSource>(script);
                        }});
    sched->run();
    return q;
  }
};

TEST_F(Deterministic, QueryPausesAtMaxInFlightAndResumesOnAnswer) {
  QuerySpec spec;
  spec.batch_rows = 10;
  spec.max_in_flight = 2;
  auto q = start_query(spec, Script{1000});  // rows as fast as taken
  auto& st = state_of<query_state>(q);
  ASSERT_EQ(fb().appends.size(), 2u);
  EXPECT_TRUE(st.paused);
  EXPECT_EQ(st.rows_produced, 20u) << "a paused query must not pull from its source";
  EXPECT_EQ(rows_in(fb().appends[0].record), 10u);
  EXPECT_EQ(fb().appends[0].record.rows, 10u) << "the buffer counts its rows in from this";

  answer(0);  // one slot frees: exactly one more batch, then paused again
  EXPECT_EQ(fb().appends.size(), 3u);
  EXPECT_TRUE(st.paused);
  EXPECT_EQ(st.rows_produced, 30u);
  EXPECT_EQ(st.rows_committed, 10u);
  EXPECT_EQ(st.pauses, 2u);
  caf::anon_send_exit(q, caf::exit_reason::user_shutdown);
}

TEST_F(Deterministic, RowsThatComeDuringACommitShareTheNextBatch) {
  QuerySpec spec;
  spec.batch_rows = 1000;
  spec.batch_delay = 5ms;
  auto q = start_query(spec, Script{1, 2ms});  // a row every 2 ms
  ASSERT_EQ(fb().appends.size(), 1u) << "the first row waited although nothing was in flight";
  for (int i = 0; i < 2; ++i) {  // rows at 2 and 4 ms, while the first is being committed
    sched->advance_time(2ms);
    sched->run();
  }
  EXPECT_EQ(fb().appends.size(), 1u) << "sent while the last batch was being committed";
  answer(0);
  ASSERT_EQ(fb().appends.size(), 2u) << "not sent when the commit was answered";
  EXPECT_EQ(rows_in(fb().appends[1].record), 2u);

  // A commit slower than batch_delay: rows at 6 and 8 ms go at 6 + 5 ms.
  for (int i = 0; i < 2; ++i) {
    sched->advance_time(2ms);
    sched->run();
  }
  EXPECT_EQ(fb().appends.size(), 2u) << "sent before batch_delay";
  sched->advance_time(3ms);
  sched->run();
  ASSERT_EQ(fb().appends.size(), 3u) << "not sent at batch_delay";
  EXPECT_EQ(rows_in(fb().appends[2].record), 2u);
  caf::anon_send_exit(q, caf::exit_reason::user_shutdown);
}

TEST_F(Deterministic, SourceIdleBeyondTheDelayGetsItsRowsSentAtOnce) {
  QuerySpec spec;
  spec.batch_rows = 1000;
  spec.batch_delay = 5ms;
  auto q = start_query(spec, Script{2, 1s});  // two rows, then a second of nothing
  ASSERT_EQ(fb().appends.size(), 1u) << "an idle source's rows waited for batch_delay";
  EXPECT_EQ(rows_in(fb().appends[0].record), 2u);
  caf::anon_send_exit(q, caf::exit_reason::user_shutdown);
  sched->run();

  auto silent = start_query(spec, Script{0, 1s});
  sched->advance_time(3s);
  sched->run();
  EXPECT_EQ(fb().appends.size(), 1u) << "a source without rows sent an empty batch";
  caf::anon_send_exit(silent, caf::exit_reason::user_shutdown);
}

TEST_F(Deterministic, WakerWakesEachSleeperOnTimeWithOneTimerForAll) {
  QuerySpec spec;
  spec.batch_delay = 1ms;  // shorter than every wait: each row is sent at once
  std::vector<query_actor> qs;
  for (auto wait : {10ms, 20ms, 30ms}) {  // each later than the armed timer: no new one
    spec.id = qs.size() + 1;
    qs.push_back(start_query(spec, Script{1, wait}));
  }
  auto& ws = state_of<waker_state>(wake);
  ASSERT_EQ(fb().appends.size(), 3u);
  EXPECT_EQ(ws.sleepers.size(), 3u);
  EXPECT_EQ(sched->clock().schedule().size(), 1u) << "not one CAF timer for all sleepers";

  // Answers every append, so that no query pauses; returns the new ones' query ids.
  size_t seen = 0;
  auto new_appends = [&] {
    std::vector<uint64_t> ids;
    for (; seen < fb().appends.size(); ++seen) {
      ids.push_back(fb().appends[seen].record.query_id);
      answer(seen);
    }
    return ids;
  };
  new_appends();
  std::map<uint64_t, int> first_ms;  // query id -> when it first produced again
  size_t produced = 0;
  for (int ms = 1; ms <= 30; ++ms) {
    sched->advance_time(1ms);
    sched->run();
    for (auto id : new_appends()) {
      first_ms.emplace(id, ms);
      ++produced;
    }
  }
  EXPECT_EQ(first_ms, (std::map<uint64_t, int>{{1, 10}, {2, 20}, {3, 30}}));
  EXPECT_EQ(ws.wakeups, produced);

  // A query that stops while asleep is neither kept alive by the waker nor woken.
  caf::anon_send_exit(qs[0], caf::exit_reason::user_shutdown);
  sched->run();
  qs[0] = nullptr;
  uint64_t wakeups_before = ws.wakeups;
  size_t others = 0;
  for (int ms = 0; ms < 40; ++ms) {
    sched->advance_time(1ms);
    sched->run();
    for (auto id : new_appends()) {
      EXPECT_NE(id, 1u) << "a stopped query was woken";
      ++others;
    }
  }
  EXPECT_GT(others, 0u);
  EXPECT_EQ(ws.wakeups - wakeups_before, others);
  for (auto& q : qs)
    if (q) caf::anon_send_exit(q, caf::exit_reason::user_shutdown);
}

TEST_F(Deterministic, BatchIsSentAtRowOrByteLimit) {
  QuerySpec by_rows;
  by_rows.batch_rows = 7;
  by_rows.max_in_flight = 3;
  auto q1 = start_query(by_rows, Script{5});
  ASSERT_EQ(fb().appends.size(), 3u);
  EXPECT_EQ(rows_in(fb().appends[0].record), 5u) << "the first pull's rows go at once";
  for (size_t i = 1; i < 3; ++i) EXPECT_EQ(rows_in(fb().appends[i].record), 7u);
  caf::anon_send_exit(q1, caf::exit_reason::user_shutdown);
  sched->run();

  QuerySpec by_bytes;
  by_bytes.batch_rows = 100000;
  by_bytes.batch_bytes = 4096;
  by_bytes.max_in_flight = 2;
  auto q2 = start_query(by_bytes, Script{1});
  ASSERT_EQ(fb().appends.size(), 5u);
  auto size = fb().appends.back().record.encoded->size();
  EXPECT_GE(size, 2048u);
  EXPECT_LE(size, 4096u + 64) << "the batch overshot its byte limit by more than one row";
  caf::anon_send_exit(q2, caf::exit_reason::user_shutdown);
}

// A full queue keeps its older events and counts the newer ones it could
// not take: the count goes after the rows of the same pull.
TEST_F(Deterministic, EventsDroppedAtTheSourceAreReportedAfterTheRowsThatFit) {
  QuerySpec spec;
  spec.id = 9;
  spec.max_in_flight = 8;
  Script script{2, 1h};
  script.dropped_on_second_pull = 5;
  auto q = start_query(spec, script);
  sched->advance_time(1h);  // the second pull: two rows, and 5 events that did not fit
  sched->run();
  ASSERT_EQ(fb().appends.size(), 3u);
  EXPECT_EQ(rows_in(fb().appends[1].record), 2u);
  EXPECT_EQ(fb().appends[2].lane, Lane::CONTROL);
  schemas::RecordView status(fb().appends[2].record.encoded->words());
  ASSERT_TRUE(status.record().isQueryStatus());
  EXPECT_EQ(status.record().getQueryStatus().getDroppedAtSource(), 5u);
  EXPECT_EQ(status.record().getQueryId(), 9u);
  EXPECT_EQ(state_of<query_state>(q).dropped_at_source, 5u);
  caf::anon_send_exit(q, caf::exit_reason::user_shutdown);
}

// A row that no record can hold is refused where it is written: counted,
// logged, reported in a log record on the control lane; the rows around it
// go on as usual.
TEST_F(Deterministic, ARowTooBigForAnyRecordIsRefusedAndReportedAndTheQueryGoesOn) {
  QuerySpec spec;
  spec.id = 4;
  spec.name = "bigrows";
  spec.max_in_flight = 8;
  Script script{3, 1h};
  script.big_row_bytes = schemas::kMaxRecordBytes;
  auto q = start_query(spec, script);
  auto& st = state_of<query_state>(q);
  EXPECT_EQ(st.rows_refused, 1u);
  EXPECT_EQ(st.rows_produced, 3u);
  ASSERT_EQ(fb().appends.size(), 1u);
  EXPECT_EQ(fb().appends[0].lane, Lane::CONTROL);
  schemas::RecordView report(fb().appends[0].record.encoded->words());
  ASSERT_TRUE(report.record().isLog());
  std::string text = report.record().getLog().getText();
  EXPECT_NE(text.find("query bigrows: refused 1 row(s) bigger than the record limit of " +
                      std::to_string(schemas::kMaxRecordBytes) + " bytes"),
            std::string::npos)
      << text;
  EXPECT_EQ(report.record().getQueryId(), 4u);
  answer(0);  // nothing else in flight: the three rows go
  ASSERT_EQ(fb().appends.size(), 2u);
  EXPECT_EQ(rows_in(fb().appends[1].record), 3u);
  EXPECT_LT(fb().appends[1].record.encoded->size(), 4096u);
  sched->advance_time(1h);  // and the next pull is as usual
  sched->run();
  answer(1);
  ASSERT_EQ(fb().appends.size(), 3u);
  EXPECT_EQ(rows_in(fb().appends[2].record), 3u);
  EXPECT_EQ(st.rows_refused, 1u);
  caf::anon_send_exit(q, caf::exit_reason::user_shutdown);
}

// Bytes of unanswered appends, as the fake buffer holds them.
uint64_t waiting_bytes(const fake_buffer_state& fb) {
  uint64_t bytes = 0;
  for (auto& a : fb.appends)
    if (!a.answered) bytes += persistence::record_format::accounted_bytes(a.record.encoded->size());
  return bytes;
}

// However many queries, the appends waiting in a buffer that answers none
// stay within the pending budget: a query waits for room before it sends a
// batch and before it starts the next; answers let the waiting ones go on.
TEST_F(Deterministic, ManyQueriesHoldNoMoreThanTheBudgetWaiting) {
  const uint64_t budget = 64 << 10;
  fb().budget = std::make_shared<PendingBudget>(budget);
  QuerySpec spec;
  spec.batch_rows = 100;
  spec.max_in_flight = 8;
  std::vector<query_actor> queries;
  for (uint64_t id = 1; id <= 40; ++id) {
    spec.id = id;
    spec.name = "q" + std::to_string(id);
    queries.push_back(start_query(spec, Script{1000}));  // rows as fast as taken
  }
  sched->run();
  size_t sent = fb().appends.size();
  ASSERT_GT(sent, 5u);
  EXPECT_LT(sent, 40u * 8) << "without a budget: every query at max_in_flight";
  EXPECT_LE(waiting_bytes(fb()), budget);
  EXPECT_EQ(fb().budget->pending(), waiting_bytes(fb()));
  int awaiting = 0;
  for (auto& q : queries) awaiting += state_of<query_state>(q).budget_wait != 0;
  EXPECT_GT(awaiting, 0);
  // Answers free room: the waiting queries go on, still within the budget.
  for (int round = 0; round < 5; ++round) {
    for (size_t i = 0; i < fb().appends.size(); ++i)
      if (!fb().appends[i].answered) {
        answer(i);
        break;
      }
    sched->run();
    EXPECT_LE(waiting_bytes(fb()), budget);
  }
  EXPECT_GT(fb().appends.size(), sent);
  for (auto& q : queries) caf::anon_send_exit(q, caf::exit_reason::user_shutdown);
  sched->run();
  EXPECT_EQ(fb().budget->pending(), 0u) << "ended queries gave their bytes back";
}

TEST_F(Deterministic, StopHandsOverThePartialBatchAndWaitsForItsAnswer) {
  QuerySpec spec;
  spec.batch_rows = 10;
  spec.batch_delay = 1h;
  spec.max_in_flight = 3;
  auto q = start_query(spec, Script{3, 30min});
  sched->advance_time(30min);  // 3 more rows, held while the first 3 are being committed
  sched->run();
  ASSERT_EQ(fb().appends.size(), 1u);
  caf::scoped_actor self{*sys};
  self->send(q, hand_over_atom::value);
  sched->run();
  ASSERT_EQ(fb().appends.size(), 2u);
  EXPECT_EQ(rows_in(fb().appends[1].record), 3u);
  self->receive([](uint64_t awaiting) { EXPECT_EQ(awaiting, 6u); });
  EXPECT_TRUE(state_of<query_state>(q).stopping);
  self->monitor(q);
  answer(0);
  EXPECT_TRUE(state_of<query_state>(q).stopping) << "ended with an append unanswered";
  answer(1);  // its last append is answered: now it ends
  bool down = false;
  self->receive([&](caf::down_msg& d) { down = !d.reason; }, caf::after(0s) >> [] {});
  EXPECT_TRUE(down) << "the query did not end once its batch was committed";
}

struct SupervisorTest : Deterministic {
  link_actor link;
  SupervisorTest() {
    link = sys->spawn(file_link, buf, std::string{}, false);  // offline
    sched->run();
  }
  ~SupervisorTest() override { caf::anon_send_exit(link, caf::exit_reason::user_shutdown); }

  supervisor_actor start(std::vector<QuerySpec> specs, Script script, RestartPolicy policy) {
    // As the engine does: test artifacts run, other artifacts are unknown.
    auto check = [](const QuerySpec& q) {
      if (q.source.kind == SourceSpec::Kind::artifact) throw std::runtime_error("unknown artifact " + q.source.name);
    };
    auto sup = sys->spawn(supervisor, buf, link, specs,
                          SourceFactory{[script](const QuerySpec&) { return std::make_unique<ScriptedSource>(script); },
                                        check},
                          policy);
    sched->run();
    return sup;
  }
};

TEST_F(SupervisorTest, FailingQueryRestartsWithDoublingCappedBackoff) {
  QuerySpec spec;
  spec.name = "crashy";
  auto sup = start({spec}, Script{1, 1h, 1}, RestartPolicy{10ms, 40ms, 1h});
  auto& q = state_of<supervisor_state>(sup).queries.at(0);
  std::vector<int64_t> expected = {10, 20, 40, 40};
  for (size_t i = 0; i < expected.size(); ++i) {
    ASSERT_EQ(q.restarts, i + 1);
    EXPECT_EQ(q.backoff.count(), expected[i]);
    EXPECT_FALSE(q.actor) << "restarted before its backoff";
    sched->advance_time(std::chrono::milliseconds(expected[i] - 1));
    sched->run();
    EXPECT_FALSE(q.actor) << "restarted 1 ms early after restart " << i + 1;
    sched->advance_time(1ms);  // the restart runs and fails on its first pull
    sched->run();
  }
  EXPECT_NE(q.last_error.find("scripted failure"), std::string::npos) << q.last_error;
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
}

TEST_F(SupervisorTest, ShutdownSettlesTheBufferOnlyAfterEveryQueryHandedOver) {
  std::vector<QuerySpec> specs(3);
  for (size_t i = 0; i < specs.size(); ++i) {
    specs[i].name = "q" + std::to_string(i);
    specs[i].batch_rows = 10;
    specs[i].batch_delay = 1h;
    specs[i].max_in_flight = 2;
  }
  // Each query sends 4 rows, then holds a partial batch of 4 more; the
  // buffer, as if full, answers no append until it is told to settle.
  auto sup = start(specs, Script{4, 30min}, RestartPolicy{});
  sched->advance_time(30min);
  sched->run();
  ASSERT_EQ(fb().appends.size(), 3u);
  caf::anon_send(sup, shutdown_atom::value);
  sched->run();
  // Every final batch arrived before the settle, the settle let the queries
  // end, and only then was the buffer stopped.
  std::vector<std::string> expected(6, "append");
  expected.insert(expected.end(), {"settle", "close"});
  EXPECT_EQ(fb().events, expected);
  auto& st = state_of<supervisor_state>(sup);
  for (auto& q : st.queries) EXPECT_FALSE(q.actor) << q.spec->name << " still running";
  EXPECT_EQ(st.queries.at(0).restarts, 0u) << "a query ended by shutdown was restarted";
}

// A collector's request, answered into `reply`.
ControlCall control(ControlCall::Kind kind, std::vector<CollectSpec> specs, uint64_t flow,
                    ControlReply& reply) {
  ControlCall call;
  call.kind = kind;
  call.specs = std::move(specs);
  call.flow_id = flow;
  call.answer = std::make_shared<ControlAnswer>([&reply](ControlReply r) { reply = std::move(r); });
  return call;
}

TEST_F(SupervisorTest, CancelPurgesOnlyAfterTheQueryHandedOverItsRows) {
  auto sup = start({}, Script{4, 30min}, RestartPolicy{});
  const uint64_t flow = kFirstFlowId + 1;
  ControlReply started{"no answer", 0, {}};
  caf::anon_send(sup, control_atom::value,
                 control(ControlCall::Kind::collect, {{flow, "Outpost.Test.Clock", "", {}, ""}}, 0, started));
  sched->run();
  EXPECT_EQ(started.error, "");
  EXPECT_EQ(started.value, flow);
  ASSERT_EQ(fb().appends.size(), 1u);
  EXPECT_EQ(fb().appends[0].record.query_id, flow);

  // Sent again (an answer lost on the way): answered, not started twice.
  ControlReply again{"no answer", 0, {}};
  caf::anon_send(sup, control_atom::value,
                 control(ControlCall::Kind::collect, {{flow, "Outpost.Test.Clock", "", {}, ""}}, 0, again));
  sched->run();
  EXPECT_EQ(again.error, "");
  EXPECT_EQ(state_of<supervisor_state>(sup).queries.size(), 1u);

  ControlReply cancelled{"no answer", 0, {}};
  caf::anon_send(sup, control_atom::value, control(ControlCall::Kind::cancel, {}, flow, cancelled));
  sched->run();
  EXPECT_EQ(fb().events, (std::vector<std::string>{"append", "purge " + std::to_string(flow)}));
  EXPECT_EQ(cancelled.error, "");
  EXPECT_EQ(cancelled.value, 7u) << "the buffer's purge count";
  EXPECT_TRUE(state_of<supervisor_state>(sup).queries.at(0).retired);
  answer(0);  // its last batch is answered: it ends, and leaves the list
  EXPECT_TRUE(state_of<supervisor_state>(sup).queries.empty()) << "a cancelled collection stays listed";
  caf::anon_send(sup, shutdown_atom::value);
  sched->run();
}

TEST_F(SupervisorTest, RefusedRequestsChangeNothing) {
  auto sup = start({}, Script{0, 30min}, RestartPolicy{});
  ControlReply unknown{"no answer", 0, {}};
  caf::anon_send(sup, control_atom::value,
                 control(ControlCall::Kind::collect, {{kFirstFlowId, "No.Such", "", {}, ""}}, 0, unknown));
  sched->run();
  EXPECT_EQ(unknown.error, "collect No.Such: unknown artifact No.Such");

  // One bad entry: the whole table is refused, the good entry does not start.
  ControlReply table{"no answer", 0, {}};
  caf::anon_send(sup, control_atom::value,
                 control(ControlCall::Kind::set_event_table,
                         {{kFirstFlowId + 1, "Outpost.Test.Clock", "", {}, ""},
                          {kFirstFlowId + 2, "Outpost.Test.Clock", "", {{"period_ms", "0"}}, ""}},
                         0, table));
  sched->run();
  EXPECT_NE(table.error.find("parameter.period_ms"), std::string::npos) << table.error;
  EXPECT_EQ(table.error.rfind("event table Outpost.Test.Clock: ", 0), 0u) << table.error;
  EXPECT_TRUE(state_of<supervisor_state>(sup).queries.empty());

  // A call dropped unanswered (the agent stops) still gets an answer.
  ControlReply dropped;
  { auto call = control(ControlCall::Kind::status, {}, 0, dropped); }
  EXPECT_EQ(dropped.error, "the agent dropped the request (shutting down)");
  caf::anon_send(sup, shutdown_atom::value);
  sched->run();
}

CollectSpec collection(uint64_t flow, char request_id) {
  return {flow, "Outpost.Test.Clock", "", {}, std::string(16, request_id)};
}

TEST_F(SupervisorTest, ARequestSentAgainRunsOnceAndANewOneMayReuseAnEndedFlowId) {
  auto sup = start({}, Script{1, 0ns, 0, 0, 1}, RestartPolicy{});  // one row, then done
  const uint64_t flow = kFirstFlowId + 5;
  ControlReply first{"no answer", 0, {}};
  caf::anon_send(sup, control_atom::value, control(ControlCall::Kind::collect, {collection(flow, 'a')}, 0, first));
  sched->run();
  EXPECT_EQ(first.error, "");
  EXPECT_EQ(first.value, flow);
  ASSERT_EQ(fb().appends.size(), 1u);
  answer(0);  // its one batch is stored: it finishes

  // The same request again (the collector restarted before it heard the
  // answer): answered with its flow, not run again.
  ControlReply again{"no answer", 0, {}};
  caf::anon_send(sup, control_atom::value, control(ControlCall::Kind::collect, {collection(flow, 'a')}, 0, again));
  sched->run();
  EXPECT_EQ(again.error, "");
  EXPECT_EQ(again.value, flow);
  EXPECT_EQ(fb().appends.size(), 1u) << "a request sent again ran twice";

  // A new request with that flow id (a collector whose state was reset) runs.
  ControlReply reused{"no answer", 0, {}};
  caf::anon_send(sup, control_atom::value, control(ControlCall::Kind::collect, {collection(flow, 'b')}, 0, reused));
  sched->run();
  EXPECT_EQ(reused.error, "");
  ASSERT_EQ(fb().appends.size(), 2u) << "a new request was taken for an old one";
  EXPECT_EQ(fb().appends[1].record.query_id, flow);

  // While that one runs, a third request may not take its flow id.
  ControlReply clash{"no answer", 0, {}};
  caf::anon_send(sup, control_atom::value, control(ControlCall::Kind::collect, {collection(flow, 'c')}, 0, clash));
  sched->run();
  EXPECT_EQ(clash.error, "collect: flow id " + std::to_string(flow) + " is already used by F." +
                             std::to_string(flow) + " (Outpost.Test.Clock)");
  EXPECT_EQ(fb().appends.size(), 2u);
  answer(1);
  caf::anon_send(sup, shutdown_atom::value);
  sched->run();
}

// Each collection's start and end go to the control lane for the collector's
// `flows`, as records of no query: the end with its outcome, rows and bytes.
TEST_F(SupervisorTest, ACollectionReportsItsStartAndItsEndOnTheControlLane) {
  auto sup = start({}, Script{1, 0ns, 0, 0, 1}, RestartPolicy{});  // one row, then done
  auto status_of_record = [](const RecordRef& r) {
    schemas::RecordView view(r.encoded->words());
    EXPECT_TRUE(view.record().isQueryStatus());
    EXPECT_EQ(view.record().getQueryId(), 0u);
    std::string out;
    schemas::append_json_lines(out, 0, view.record());
    return out;
  };
  const uint64_t done = kFirstFlowId + 7, stopped = kFirstFlowId + 8;
  ControlReply r{"no answer", 0, {}};
  caf::anon_send(sup, control_atom::value, control(ControlCall::Kind::collect, {collection(done, 'a')}, 0, r));
  sched->run();
  ASSERT_EQ(fb().flow_records.size(), 1u);
  EXPECT_NE(status_of_record(fb().flow_records[0])
                .find("\"started\":true,\"flow_id\":" + std::to_string(done) + ",\"artifact\":\"Outpost.Test.Clock\""),
            std::string::npos)
      << status_of_record(fb().flow_records[0]);
  answer(0);  // its one row is stored: it finishes
  ASSERT_EQ(fb().flow_records.size(), 2u);
  std::string end = status_of_record(fb().flow_records[1]);
  EXPECT_NE(end.find("{\"finished\":{\"rows\":1,\"error\":\"\",\"bytes\":" +
                     std::to_string(fb().appends[0].record.encoded->size())),
            std::string::npos)
      << end;
  EXPECT_NE(end.find("\"outcome\":\"finished\"},\"flow_id\":" + std::to_string(done)), std::string::npos) << end;

  // Cancelled: the purge keeps its end record (no query's), which says so.
  caf::anon_send(sup, control_atom::value, control(ControlCall::Kind::collect, {collection(stopped, 'b')}, 0, r));
  sched->run();
  ControlReply cancelled{"no answer", 0, {}};
  caf::anon_send(sup, control_atom::value, control(ControlCall::Kind::cancel, {}, stopped, cancelled));
  sched->run();
  answer(1);  // the hand-over's batch
  ASSERT_EQ(fb().flow_records.size(), 4u);
  end = status_of_record(fb().flow_records[3]);
  EXPECT_NE(end.find("\"outcome\":\"cancelled\"},\"flow_id\":" + std::to_string(stopped)), std::string::npos)
      << end;
  caf::anon_send(sup, shutdown_atom::value);
  sched->run();
}

// The operator's restart of a running collection continues its flow: one
// started record, and the end counts the rows and bytes of both runs.
TEST_F(SupervisorTest, ACollectionRestartedByTheOperatorIsStillOneFlow) {
  auto sup = start({}, Script{1, 0ns, 0, 0, 3}, RestartPolicy{});  // a row a pull, done on the third
  const uint64_t flow = kFirstFlowId + 9;
  ControlReply r{"no answer", 0, {}};
  caf::anon_send(sup, control_atom::value, control(ControlCall::Kind::collect, {collection(flow, 'r')}, 0, r));
  sched->run();
  auto& st = state_of<supervisor_state>(sup);
  ASSERT_EQ(st.queries.size(), 1u);
  ASSERT_FALSE(fb().appends.empty()) << "the first run handed over a batch";
  size_t first_run = fb().appends.size();
  caf::anon_send(sup, restart_atom::value, st.queries[0].spec->name);
  sched->run();
  // Every append is stored as it comes, until the flow has ended.
  for (size_t i = 0; i < fb().appends.size() && fb().flow_records.size() < 2; ++i) answer(i);
  ASSERT_EQ(fb().flow_records.size(), 2u) << "one started record and one end";
  schemas::RecordView started(fb().flow_records[0].encoded->words()), ended(fb().flow_records[1].encoded->words());
  ASSERT_TRUE(started.record().getQueryStatus().isStarted());
  ASSERT_TRUE(ended.record().getQueryStatus().isFinished());
  uint64_t rows = 0, bytes = 0;
  for (auto& a : fb().appends) {
    rows += rows_in(a.record);
    bytes += a.record.encoded->size();
  }
  EXPECT_GT(fb().appends.size(), first_run) << "the second run handed over rows too";
  auto end = ended.record().getQueryStatus().getFinished();
  EXPECT_EQ(end.getRowCount(), rows);
  EXPECT_EQ(end.getBytes(), bytes);
  EXPECT_EQ(end.getOutcome(), schema::QueryStatus::Outcome::FINISHED);
  caf::anon_send(sup, shutdown_atom::value);
  sched->run();
}

TEST_F(SupervisorTest, EndedCollectionsLeaveTheListAndOnlyTheMostRecentAreRemembered) {
  auto sup = start({}, Script{1, 0ns, 0, 0, 1}, RestartPolicy{});
  const size_t n = kRecentFlows + 50;
  for (size_t i = 0; i < n; ++i) {
    ControlReply r{"no answer", 0, {}};
    CollectSpec c{kFirstFlowId + i, "Outpost.Test.Clock", "", {}, "request " + std::to_string(i)};
    caf::anon_send(sup, control_atom::value, control(ControlCall::Kind::collect, {c}, 0, r));
    sched->run();
    ASSERT_EQ(r.error, "");
    answer(i);
  }
  auto& st = state_of<supervisor_state>(sup);
  EXPECT_EQ(st.queries.size(), 0u) << "finished collections are still listed";
  ASSERT_EQ(st.recent.size(), kRecentFlows);
  EXPECT_EQ(st.recent.front().id, kFirstFlowId + 50);
  EXPECT_EQ(st.recent.back().id, kFirstFlowId + n - 1);
  caf::anon_send(sup, shutdown_atom::value);
  sched->run();
}

TEST_F(SupervisorTest, CancelStopsOnlyCollectionsAndSaysWhatItFound) {
  QuerySpec configured;
  configured.id = 2;
  configured.name = "conf";
  auto sup = start({configured}, Script{1, 30min}, RestartPolicy{});
  auto cancel = [&](uint64_t flow) {
    ControlReply r{"no answer", 0, {}};
    caf::anon_send(sup, control_atom::value, control(ControlCall::Kind::cancel, {}, flow, r));
    sched->run();
    return r;
  };
  auto& st = state_of<supervisor_state>(sup);

  // A configured query is not the collector's to stop.
  EXPECT_EQ(cancel(2).error, "flow 2 is the configured query conf: only the agent's configuration stops it");
  ASSERT_EQ(st.queries.size(), 1u);
  EXPECT_TRUE(st.queries[0].actor) << "a collector request stopped a configured query";
  EXPECT_FALSE(st.queries[0].retired);
  // Unknown ids: nothing purged, and said so.
  EXPECT_EQ(cancel(12345).error, "no such flow 12345");
  EXPECT_EQ(cancel(kFirstFlowId + 99).error, "no such flow " + std::to_string(kFirstFlowId + 99));

  // An event query is stopped by changing the table.
  ControlReply table{"no answer", 0, {}};
  caf::anon_send(sup, control_atom::value,
                 control(ControlCall::Kind::set_event_table, {collection(kFirstFlowId + 1, 'e')}, 0, table));
  sched->run();
  ASSERT_EQ(table.error, "");
  EXPECT_EQ(cancel(kFirstFlowId + 1).error,
            "flow " + std::to_string(kFirstFlowId + 1) +
                " is the event query F." + std::to_string(kFirstFlowId + 1) + ": change the event table to stop it");
  EXPECT_EQ(st.queries.size(), 2u);

  // A collection: stopped; cancelled again: already finished, its rows purged again.
  const uint64_t flow = kFirstFlowId + 2;
  ControlReply started{"no answer", 0, {}};
  caf::anon_send(sup, control_atom::value, control(ControlCall::Kind::collect, {collection(flow, 'f')}, 0, started));
  sched->run();
  ASSERT_EQ(started.error, "");
  auto stopped = cancel(flow);
  EXPECT_EQ(stopped.error, "");
  EXPECT_EQ(stopped.cancelled, CancelOutcome::stopped);
  EXPECT_EQ(stopped.value, 7u);
  for (size_t i = 0; i < fb().appends.size(); ++i)
    if (fb().appends[i].record.query_id == flow) answer(i);  // its last batch: it ends
  auto again = cancel(flow);
  EXPECT_EQ(again.error, "");
  EXPECT_EQ(again.cancelled, CancelOutcome::already_finished);
  EXPECT_EQ(again.value, 7u);
  ASSERT_FALSE(st.recent.empty());
  EXPECT_EQ(st.recent.back().how, supervisor_state::Ended::How::cancelled);

  // Purged only for the collection: the refused and unknown ids purged nothing.
  size_t purges = std::count_if(fb().events.begin(), fb().events.end(),
                                [](auto& e) { return e.rfind("purge", 0) == 0; });
  EXPECT_EQ(purges, 3u) << "the unknown flow above 2^32 (to see if rows of it are buffered), the collection twice";
  EXPECT_EQ(std::count(fb().events.begin(), fb().events.end(), "purge 2"), 0);
  caf::anon_send(sup, shutdown_atom::value);
  sched->run();
}

TEST_F(SupervisorTest, StatusKeepsADottedQueryNameAsOneKey) {
  auto sup = start({}, Script{1, 30min}, RestartPolicy{});
  const uint64_t flow = kFirstFlowId + 3;
  ControlReply started{"no answer", 0, {}};
  caf::anon_send(sup, control_atom::value, control(ControlCall::Kind::collect, {collection(flow, 's')}, 0, started));
  sched->run();
  ASSERT_EQ(started.error, "");
  ControlReply status{"no answer", 0, {}};
  caf::anon_send(sup, control_atom::value, control(ControlCall::Kind::status, {}, 0, status));
  sched->run();
  ASSERT_EQ(status.error, "");
  EXPECT_NE(status.json.find("\"query\":{\"F." + std::to_string(flow) + "\":{\"artifact\":\"Outpost.Test.Clock\""),
            std::string::npos)
      << status.json;
  caf::anon_send(sup, shutdown_atom::value);
  sched->run();
}

}  // namespace
}  // namespace outpost
