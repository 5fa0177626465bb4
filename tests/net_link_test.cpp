// The network link under CAF's deterministic test coordinator, over a fake
// transport and fake buffer and reader actors: nothing runs until the test
// says so, and time moves only when the test advances it.

#include <gtest/gtest.h>

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>

#include <map>

#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include "net/agent/net_link.hpp"
#include "schemas/protocol.capnp.h"

namespace outpost::net {
namespace {
using namespace std::chrono_literals;

// What the link handed the network, and the link's events for the test to fire.
struct Wire {
  struct Upload {
    uint64_t session;
    Lane lane;
    uint64_t after;
    std::vector<uint64_t> seqs;
  };
  ClientEvents events;
  std::vector<Upload> uploads;
  int reconnects = 0;
  bool destroyed = false;
};

class FakeTransport final : public Transport {
 public:
  explicit FakeTransport(std::shared_ptr<Wire> wire) : wire_(std::move(wire)) {}
  ~FakeTransport() override { wire_->destroyed = true; }
  void upload(uint64_t session, Lane lane, uint64_t after, BufferedRecords records, size_t begin,
              size_t end) override {
    std::vector<uint64_t> seqs;
    for (size_t i = begin; i < end; ++i) seqs.push_back((*records)[i].seq);
    wire_->uploads.push_back({session, lane, after, std::move(seqs)});
  }
  void reconnect() override { ++wire_->reconnects; }

 private:
  std::shared_ptr<Wire> wire_;
};

BufferedRecords records(uint64_t first, uint64_t last) {
  auto v = std::make_shared<std::vector<persistence::BufferedRecord>>();
  for (uint64_t seq = first; seq <= last; ++seq) {
    persistence::BufferedRecord r;
    r.seq = seq;
    r.size = 64;
    r.words = kj::heapArray<capnp::word>(8);
    v->push_back(std::move(r));
  }
  return v;
}

// The buffer and its reader in one fake: lane `l` holds seqs 1..last[l];
// reads and acks fail while their lane's failure count lasts.
struct fake_store_state {
  static inline const char* name = "fake-store";
  std::map<Lane, uint64_t> last;
  std::map<Lane, int> failing_reads, failing_acks;
  std::map<Lane, std::vector<uint64_t>> reads;  // `after` of each read, per lane
  std::map<Lane, std::vector<uint64_t>> acks;   // `through` of each ack, per lane
};

caf::behavior fake_store(caf::stateful_actor<fake_store_state>* self) {
  return {
      [=](read_atom, Lane lane, uint64_t after, uint64_t max_records,
          uint64_t) -> caf::result<BufferedRecords> {
        auto& st = self->state;
        st.reads[lane].push_back(after);
        if (st.failing_reads[lane] > 0 && st.failing_reads[lane]-- > 0)
          return caf::make_error(caf::sec::runtime_error, "scripted read failure");
        uint64_t last = std::min(st.last[lane], after + max_records);
        return records(after + 1, last);
      },
      [=](ack_atom, Lane lane, uint64_t through) -> caf::result<uint64_t> {
        auto& st = self->state;
        st.acks[lane].push_back(through);
        if (st.failing_acks[lane] > 0 && st.failing_acks[lane]-- > 0)
          return caf::make_error(caf::sec::runtime_error, "scripted ack failure");
        return through;
      },
  };
}

struct watcher_state {
  static inline const char* name = "watcher";
  bool down = false;
  caf::error reason;
};

caf::behavior watcher(caf::stateful_actor<watcher_state>* self, caf::actor target) {
  self->monitor(target);
  self->set_down_handler([=](caf::down_msg& m) {
    self->state.down = true;
    self->state.reason = m.reason;
  });
  return {[](int) {}};
}

template <class State, class Handle>
State& state_of(const Handle& h) {
  auto* actor = caf::actor_cast<caf::abstract_actor*>(h);
  if constexpr (std::is_same_v<State, net_link_state>)
    return dynamic_cast<caf::stateful_actor<State, net_link_self_actor::base>&>(*actor).state;
  else
    return dynamic_cast<caf::stateful_actor<State>&>(*actor).state;
}

size_t ix(Lane lane) { return static_cast<size_t>(lane); }

struct NetLink : ::testing::Test {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::scheduler::test_coordinator* sched = nullptr;
  std::shared_ptr<Wire> wire = std::make_shared<Wire>();
  caf::actor store;
  net_link_actor link;

  NetLink() {
    cfg.set("scheduler.policy", caf::atom("testing"));
    sys = std::make_unique<caf::actor_system>(cfg);
    sys->await_actors_before_shutdown(false);
    sched = &dynamic_cast<caf::scheduler::test_coordinator&>(sys->scheduler());
    store = sys->spawn(fake_store);
    link = sys->spawn(net_link_over, caf::actor_cast<buffer_actor>(store),
                      caf::actor_cast<buffer_reader_actor>(store), std::string("fake:1"),
                      TransportFactory{[w = wire](ClientEvents events) {
                        w->events = std::move(events);
                        return std::make_unique<FakeTransport>(w);
                      }});
    sched->run();
  }
  ~NetLink() override {
    caf::anon_send_exit(link, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(store, caf::exit_reason::user_shutdown);
    sched->run();
    wire->events = {};  // they hold the link
  }

  fake_store_state& fs() { return state_of<fake_store_state>(store); }
  net_link_state& ls() { return state_of<net_link_state>(link); }

  void advance(std::chrono::milliseconds d) {
    sched->advance_time(d);
    sched->run();
  }
  void connect(uint64_t session, std::vector<uint64_t> marks = {}) {
    marks.resize(schemas::kLaneCount);
    wire->events.connected(session, marks);
    sched->run();
  }
  void stored(uint64_t session, Lane lane, uint64_t through) {
    wire->events.stored(session, lane, through);
    sched->run();
  }
  void commit(Lane lane, uint64_t seq) {
    fs().last[lane] = seq;
    caf::anon_send(link, committed_atom::value, lane, seq, BufferedRecords{});
    sched->run();
  }
  std::vector<Wire::Upload> uploads_of(Lane lane) const {
    std::vector<Wire::Upload> v;
    for (auto& u : wire->uploads)
      if (u.lane == lane) v.push_back(u);
    return v;
  }
};

TEST_F(NetLink, ResumesAfterTheCollectorsMarksAndAcksWhatItHas) {
  fs().last[Lane::EVENTS] = 10;
  connect(1, {0, 4});  // the collector has events through 4
  EXPECT_EQ(fs().acks[Lane::EVENTS], std::vector<uint64_t>{4}) << "what it has is not deleted";
  EXPECT_EQ(fs().reads[Lane::EVENTS].at(0), 4u);
  auto ups = uploads_of(Lane::EVENTS);
  ASSERT_EQ(ups.size(), 1u);
  EXPECT_EQ(ups[0].session, 1u);
  EXPECT_EQ(ups[0].after, 4u);
  EXPECT_EQ(ups[0].seqs.front(), 5u);
  EXPECT_EQ(ups[0].seqs.back(), 10u);

  stored(1, Lane::EVENTS, 10);
  EXPECT_EQ(ls().lanes[ix(Lane::EVENTS)].acked, 10u);
  // A new session resumes from the new collector's marks, not from what was sent.
  wire->events.disconnected(1, "the collector closed the connection", 50ms);
  sched->run();
  fs().last[Lane::EVENTS] = 12;
  connect(2, {0, 10});
  ups = uploads_of(Lane::EVENTS);
  ASSERT_EQ(ups.size(), 2u);
  EXPECT_EQ(ups[1].session, 2u);
  EXPECT_EQ(ups[1].after, 10u);
  EXPECT_EQ(ups[1].seqs, (std::vector<uint64_t>{11, 12}));
}

TEST_F(NetLink, ABulkBacklogLeavesASlotForFreshEvents) {
  fs().last[Lane::RESULTS] = 100 * protocol::MAX_RECORDS_PER_UPLOAD;
  connect(1);
  EXPECT_EQ(uploads_of(Lane::RESULTS).size(), kUploadWindow - 1) << "the bulk lane took the last slot";
  commit(Lane::EVENTS, 1);
  auto ups = uploads_of(Lane::EVENTS);
  ASSERT_EQ(ups.size(), 1u) << "a fresh event waited behind the backlog";
  EXPECT_EQ(ups[0].seqs, std::vector<uint64_t>{1});
  EXPECT_EQ(ls().in_flight, kUploadWindow);
  // The backlog never holds the last slot: what the event frees, it takes; not its own.
  stored(1, Lane::RESULTS, protocol::MAX_RECORDS_PER_UPLOAD);
  EXPECT_EQ(uploads_of(Lane::RESULTS).size(), kUploadWindow - 1);
  stored(1, Lane::EVENTS, 1);
  EXPECT_EQ(uploads_of(Lane::RESULTS).size(), kUploadWindow);
  EXPECT_EQ(ls().in_flight, kUploadWindow - 1);
}

// link.max_delay_ms: a trickle of commits goes in one upload once the first
// has waited that long, without a commit to carry it; control never waits,
// and an upload's worth goes at once.
TEST_F(NetLink, WithAMaxDelayFreshRowsWaitToShareAnUpload) {
  ls().max_delay = 200ms;
  connect(1);
  for (uint64_t seq = 1; seq <= 5; ++seq) {
    commit(Lane::EVENTS, seq);
    advance(20ms);
  }
  EXPECT_TRUE(uploads_of(Lane::EVENTS).empty()) << "a row went before its delay";
  commit(Lane::CONTROL, 1);
  EXPECT_EQ(uploads_of(Lane::CONTROL).size(), 1u) << "a control record waited";
  advance(100ms);  // 200 ms after the first
  auto ups = uploads_of(Lane::EVENTS);
  ASSERT_EQ(ups.size(), 1u);
  EXPECT_EQ(ups[0].seqs, (std::vector<uint64_t>{1, 2, 3, 4, 5}));
  // The next row starts a new wait.
  stored(1, Lane::EVENTS, 5);
  commit(Lane::EVENTS, 6);
  EXPECT_EQ(uploads_of(Lane::EVENTS).size(), 1u);
  advance(200ms);
  ASSERT_EQ(uploads_of(Lane::EVENTS).size(), 2u);
  EXPECT_EQ(uploads_of(Lane::EVENTS)[1].seqs, std::vector<uint64_t>{6});
  // An upload's worth held goes without waiting out the delay.
  stored(1, Lane::EVENTS, 6);
  fs().last[Lane::EVENTS] = 6 + protocol::MAX_RECORDS_PER_UPLOAD;
  caf::anon_send(link, committed_atom::value, Lane::EVENTS, fs().last[Lane::EVENTS],
                 records(7, 6 + protocol::MAX_RECORDS_PER_UPLOAD));
  sched->run();
  ASSERT_EQ(uploads_of(Lane::EVENTS).size(), 3u);
  EXPECT_EQ(uploads_of(Lane::EVENTS)[2].seqs.size(), protocol::MAX_RECORDS_PER_UPLOAD);
}

TEST_F(NetLink, WithoutAMaxDelayEachCommitIsSentAtOnce) {
  connect(1);
  for (uint64_t seq = 1; seq <= 3; ++seq) commit(Lane::EVENTS, seq);
  EXPECT_EQ(uploads_of(Lane::EVENTS).size(), 3u);
}

TEST_F(NetLink, AFailedReadOfAQuietLaneIsRetried) {
  fs().last[Lane::EVENTS] = 3;
  fs().failing_reads[Lane::EVENTS] = 1;
  connect(1);
  EXPECT_EQ(fs().reads[Lane::EVENTS].size(), 1u);
  EXPECT_TRUE(uploads_of(Lane::EVENTS).empty());
  EXPECT_NE(ls().last_error.find("buffer read of lane events failed"), std::string::npos) << ls().last_error;
  // No commit comes: the retry alone must move the lane.
  advance(kBufferRetry.initial);
  ASSERT_GE(fs().reads[Lane::EVENTS].size(), 2u) << "a failed read was never tried again";
  auto ups = uploads_of(Lane::EVENTS);
  ASSERT_EQ(ups.size(), 1u);
  EXPECT_EQ(ups[0].seqs, (std::vector<uint64_t>{1, 2, 3}));
}

TEST_F(NetLink, AReadThatKeepsFailingIsRetriedWithBackoffNotOnEveryCommit) {
  fs().failing_reads[Lane::EVENTS] = 1000;
  connect(1);
  ASSERT_EQ(fs().reads[Lane::EVENTS].size(), 1u);
  for (uint64_t seq = 1; seq <= 50; ++seq) commit(Lane::EVENTS, seq);
  EXPECT_EQ(fs().reads[Lane::EVENTS].size(), 1u) << "each commit retried the failed read at once";
  // Retries follow the backoff, the delay doubling: at 100, 300, 700 ms.
  advance(kBufferRetry.initial);
  EXPECT_EQ(fs().reads[Lane::EVENTS].size(), 2u);
  for (int step = 0; step < 10; ++step) advance(100ms);  // through 1100 ms
  EXPECT_EQ(fs().reads[Lane::EVENTS].size(), 4u) << "retries did not back off";
  // Other lanes go on meanwhile.
  commit(Lane::CONTROL, 2);
  EXPECT_EQ(uploads_of(Lane::CONTROL).size(), 1u);
  // Once the buffer reads again, the lane moves.
  fs().failing_reads[Lane::EVENTS] = 0;
  advance(kBufferRetry.cap);
  auto ups = uploads_of(Lane::EVENTS);
  ASSERT_EQ(ups.size(), 1u);
  EXPECT_EQ(ups[0].seqs.back(), 50u);
}

TEST_F(NetLink, AFailedAckIsRetriedAndAckedMovesOnlyWhenTheBufferConfirms) {
  fs().last[Lane::EVENTS] = 10;
  fs().last[Lane::RESULTS] = 10;
  connect(1);
  fs().failing_acks[Lane::EVENTS] = 1;  // this lane only: the other's ack goes through
  stored(1, Lane::EVENTS, 10);
  stored(1, Lane::RESULTS, 10);
  auto& events = ls().lanes[ix(Lane::EVENTS)];
  EXPECT_EQ(events.stored, 10u);
  EXPECT_EQ(events.acked, 0u) << "acked moved although the buffer refused the ack";
  EXPECT_EQ(ls().lanes[ix(Lane::RESULTS)].acked, 10u);
  EXPECT_NE(ls().last_error.find("buffer ack of lane events"), std::string::npos) << ls().last_error;
  advance(kBufferRetry.initial);
  EXPECT_EQ(fs().acks[Lane::EVENTS], (std::vector<uint64_t>{10, 10})) << "the failed ack was not asked again";
  EXPECT_EQ(events.acked, 10u);
}

TEST_F(NetLink, AnAckThatKeepsFailingBacksOffAndCarriesWhatWasStoredMeanwhile) {
  fs().last[Lane::EVENTS] = 30;
  connect(1);
  fs().failing_acks[Lane::EVENTS] = 2;
  stored(1, Lane::EVENTS, 10);
  stored(1, Lane::EVENTS, 20);  // while the retry waits: no ack of its own
  EXPECT_EQ(fs().acks[Lane::EVENTS], std::vector<uint64_t>{10});
  advance(kBufferRetry.initial);
  EXPECT_EQ(fs().acks[Lane::EVENTS], (std::vector<uint64_t>{10, 20}));  // fails again
  stored(1, Lane::EVENTS, 30);
  advance(2 * kBufferRetry.initial);
  EXPECT_EQ(fs().acks[Lane::EVENTS], (std::vector<uint64_t>{10, 20, 30}));
  EXPECT_EQ(ls().lanes[ix(Lane::EVENTS)].acked, 30u);
  EXPECT_EQ(ls().ack_failures, 2u);
}

// Every failed connection attempt is logged with its number and reason: the
// first of the minute as a warning, the rest at debug level; a session that
// comes up logs how many were not warned about and starts the count again.
TEST_F(NetLink, EachFailedConnectionAttemptIsLogged) {
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(100);
  auto previous = spdlog::default_logger();
  auto logger = std::make_shared<spdlog::logger>("test", sink);
  logger->set_level(spdlog::level::debug);
  spdlog::set_default_logger(logger);
  for (int i = 0; i < 3; ++i) wire->events.disconnected(0, "connection refused", 1500ms);
  sched->run();
  EXPECT_EQ(ls().failed_attempts, 3u);
  connect(1);
  EXPECT_EQ(ls().failed_attempts, 0u);
  wire->events.disconnected(0, "no route to host", 1000ms);
  sched->run();
  spdlog::set_default_logger(previous);
  auto lines = sink->last_formatted();
  std::vector<std::string> attempts;
  std::string summary;
  for (auto& line : lines) {
    if (line.find("failed:") != std::string::npos) attempts.push_back(line);
    if (line.find("more failed attempts") != std::string::npos) summary = line;
  }
  ASSERT_EQ(attempts.size(), 4u) << ::testing::PrintToString(lines);
  for (int i = 0; i < 3; ++i) {
    EXPECT_NE(attempts[i].find("attempt " + std::to_string(i + 1) + " failed: connection refused; "
                                "retrying in 1500 ms"), std::string::npos) << attempts[i];
    EXPECT_NE(attempts[i].find(i == 0 ? "[warning]" : "[debug]"), std::string::npos) << attempts[i];
  }
  EXPECT_NE(attempts[3].find("attempt 1 failed: no route to host"), std::string::npos) << attempts[3];
  EXPECT_NE(attempts[3].find("[warning]"), std::string::npos) << attempts[3];
  EXPECT_NE(summary.find("2 more failed attempts to reach fake:1"), std::string::npos) << summary;
}

TEST_F(NetLink, TheNetworkThreadEndingFailsTheLink) {
  auto watch = sys->spawn(watcher, caf::actor_cast<caf::actor>(link));
  sched->run();
  wire->events.failed("no event loop");
  sched->run();
  auto& w = state_of<watcher_state>(watch);
  ASSERT_TRUE(w.down) << "the link stayed up without a network";
  ASSERT_TRUE(w.reason) << "the link ended as if asked to";
  EXPECT_NE(sys->render(w.reason).find("no event loop"), std::string::npos) << sys->render(w.reason);
  EXPECT_TRUE(wire->destroyed);
  caf::anon_send_exit(watch, caf::exit_reason::user_shutdown);
}

}  // namespace
}  // namespace outpost::net
