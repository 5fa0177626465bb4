// Admin commands through any collector of a fleet (the jetstream backend),
// against real nats-server processes on 127.0.0.1: the shared admin state
// (flow ids, tables, queued requests) in its key-value bucket, and real
// collector and agent processes (the relay alone: admin_relay_test.cpp).

#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <regex>
#include <sstream>
#include <set>
#include <thread>

#include "net/collector/jetstream_admin.hpp"
#include "schemas/codec.hpp"
#include "schemas/json_reader.hpp"
#include "schemas/protocol.capnp.h"
#include "persistence/errors.hpp"
#include "tests/e2e_fixture.hpp"
#include "tests/inspect_client.hpp"
#include "tests/nats_cluster.hpp"

namespace outpost::net {
namespace {

using namespace outpost::testing;

struct FleetState : WithOneNatsNode {
  JetStreamAdminOptions options() {
    JetStreamAdminOptions o;
    o.nats.servers = nats->urls();
    o.connect_timeout = std::chrono::milliseconds(10000);
    return o;
  }
  // The messages the admin bucket's stream holds.
  uint64_t bucket_messages() {
    NatsReader reader(nats->urls());
    jsStreamInfo* si = nullptr;
    if (!reader.js || js_GetStreamInfo(&si, reader.js, "KV_outpost-admin", nullptr, nullptr) != NATS_OK) {
      ADD_FAILURE() << "no stream KV_outpost-admin";
      return 0;
    }
    uint64_t n = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return n;
  }
};

// Two collectors' views of one bucket, used at once from several threads.
TEST_F(FleetState, TwoCollectorsNeverGiveOutOneFlowIdNorLoseEachOthersRequests) {
  JetStreamAdminState a(options()), b(options());
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // first, count
  std::mutex mutex;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      AdminState& state = t % 2 ? static_cast<AdminState&>(a) : b;
      for (int i = 0; i < 25; ++i) {
        uint64_t count = 1 + i % 3;
        uint64_t first = state.next_flow_ids(count);
        state.queue_request("agent.1@x", "request " + std::to_string(t) + "/" + std::to_string(i));
        std::lock_guard<std::mutex> lock(mutex);
        ranges.emplace_back(first, count);
      }
    });
  for (auto& t : threads) t.join();
  std::set<uint64_t> ids;
  for (auto [first, count] : ranges) {
    EXPECT_GE(first, protocol::FIRST_FLOW_ID);
    for (uint64_t id = first; id < first + count; ++id) EXPECT_TRUE(ids.insert(id).second) << "flow " << id << " twice";
  }
  EXPECT_GT(a.flows_given_below(), *ids.rbegin());

  auto queued = b.queued_requests("agent.1@x");
  ASSERT_EQ(queued.size(), 100u);
  std::set<std::string> bodies;
  for (size_t i = 0; i < queued.size(); ++i) {
    bodies.insert(queued[i].encoded);
    if (i) {
      EXPECT_LT(queued[i - 1].key, queued[i].key);
    }
  }
  EXPECT_EQ(bodies.size(), 100u);
  a.remove_request("agent.1@x", queued[0].key);
  a.remove_request("agent.1@x", queued[0].key);  // gone already: nothing
  EXPECT_EQ(b.queued_requests("agent.1@x").size(), 99u);

  EXPECT_FALSE(b.known_agent("agent-2"));
  a.remember_agent("agent-2");
  a.remember_agent("agent-2");
  EXPECT_TRUE(b.known_agent("agent-2"));
  EXPECT_TRUE(b.known_agent("agent.1@x")) << "requests queued for it";
  EXPECT_EQ(b.agents_met(), std::vector<std::string>{"agent-2"});
  EXPECT_EQ(b.agents_with_requests(), std::vector<std::string>{"agent.1@x"});

  // A request queued for a name never met, then dropped: the name is not met.
  b.queue_request("agnet-2", "typo");
  EXPECT_TRUE(a.known_agent("agnet-2"));
  a.remove_request("agnet-2", a.queued_requests("agnet-2").at(0).key);
  EXPECT_FALSE(b.known_agent("agnet-2"));

  a.set_event_table("agent-2", std::string("\0table", 6));
  EXPECT_EQ(b.event_table("agent-2"), std::string("\0table", 6));
  b.set_event_table("agent-2", "");
  EXPECT_EQ(a.event_table("agent-2"), "");
}

// The bucket does not keep every agent ever met nor every emptied queue for
// ever: what no collector saw for the keep days goes, what is live stays.
TEST_F(FleetState, AgentsNoCollectorSawForTheirKeepDaysAndEmptiedQueuesAreForgotten) {
  constexpr int64_t kDay = 86400ll * 1000000000;
  auto o = options();
  o.agents_keep_days = 2;
  JetStreamAdminState a(o), b(o);
  for (auto id : {"gone", "connected-long-ago", "waiting"}) a.remember_agent(id);
  a.queue_request("waiting", "a request for it");  // never sent: kept
  a.queue_request("served", "sent since");
  for (auto& q : a.queued_requests("served")) a.remove_request("served", q.key);
  uint64_t old_key = 0;
  b.queue_request("again", "first");
  for (auto& q : b.queued_requests("again")) b.remove_request("again", old_key = q.key);
  ASSERT_EQ(a.agents_with_requests(), (std::vector<std::string>{"again", "served", "waiting"}));

  int64_t now = schemas::now_ns();
  // A day on, through B, which holds one agent's connection since the start.
  auto forgotten = b.forget_silent_agents({"connected-long-ago"}, now + kDay);
  EXPECT_EQ(forgotten.agents, 0u) << "none silent 2 days yet";
  EXPECT_EQ(forgotten.queues, 2u) << "again, served";
  EXPECT_EQ(a.agents_with_requests(), (std::vector<std::string>{"waiting"}));
  EXPECT_FALSE(a.known_agent("served"));
  // Three days on: the agent B holds is seen again; the others were met 3 days ago.
  forgotten = b.forget_silent_agents({"connected-long-ago"}, now + 3 * kDay);
  EXPECT_EQ(forgotten.agents, 2u) << "gone, waiting (met, and its queue is kept)";
  EXPECT_EQ(forgotten.markers, 2u) << "again's and served's queues, deleted the pass before";
  EXPECT_EQ(a.agents_met(), (std::vector<std::string>{"connected-long-ago"}));
  EXPECT_TRUE(a.known_agent("waiting")) << "its request still waits";
  ASSERT_EQ(a.queued_requests("waiting").size(), 1u);
  EXPECT_FALSE(a.known_agent("gone"));

  // A queue made again after its deletion: its keys are above the old ones.
  a.queue_request("again", "second");
  auto again = a.queued_requests("again");
  ASSERT_EQ(again.size(), 1u);
  EXPECT_GT(again[0].key, old_key);
  b.remove_request("again", old_key);  // a removal asked again: takes nothing new
  EXPECT_EQ(a.queued_requests("again").size(), 1u);

  // The next pass purges the markers the last one left (gone's and
  // waiting's met); the bucket's stream then holds only live keys, each
  // once (history 1). An agent met again between the pass reading its
  // marker and purging it stays met: the purge ends at the marker.
  auto o2 = o;
  o2.before_purge = [&b](const std::string& key) {
    if (key == "met.waiting") b.remember_agent("waiting");
  };
  JetStreamAdminState c(o2);
  forgotten = c.forget_silent_agents({}, now + 3 * kDay);
  EXPECT_EQ(forgotten.markers, 2u);
  EXPECT_EQ(a.agents_met(), (std::vector<std::string>{"connected-long-ago", "waiting"}));
  forgotten = c.forget_silent_agents({}, now);  // (at the clock waiting was met again by)
  EXPECT_EQ(forgotten.markers, 0u) << "purged already";
  EXPECT_EQ(forgotten.agents, 0u);
  EXPECT_EQ(bucket_messages(), 4u) << "met.connected-long-ago, met.waiting, queue.waiting, queue.again: no more";
  a.remember_agent("gone");  // a key made again after its marker was purged
  EXPECT_EQ(b.agents_met(), (std::vector<std::string>{"connected-long-ago", "gone", "waiting"}));
}

TEST_F(FleetState, UnreachableNatsIsAnErrorNamingIt) {
  auto o = options();
  o.nats.servers = {"nats://127.0.0.1:" + std::to_string(loopback_port())};
  o.connect_timeout = std::chrono::milliseconds(300);
  try {
    JetStreamAdminState state(o);
    FAIL() << "connected to nothing";
  } catch (const persistence::StoreError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot connect to NATS at " + o.nats.servers[0]), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace outpost::net

namespace outpost {
namespace {

// Real processes: two collectors on one NATS, an agent connected to one of them.
struct FleetAdmin : EndToEnd {
  std::unique_ptr<NatsCluster> nats;
  fs::path data_a, data_b;
  uint16_t port_b = 0;
  pid_t collector_b = -1;

  void SetUp() override {
    ASSERT_TRUE(NatsCluster::available()) << kNatsServer << " is missing: scripts/install-deps.sh installs it";
    nats = std::make_unique<NatsCluster>(tmp, 1);
    nats->start_all();
    collector_args = {"--storage", "jetstream", "--nats", nats->urls_joined()};
    start_collector();
    data_a = data;
    data_b = tmp.path("collector-b");
    collector_b = spawn_collector(data_b, port_b, tmp.path("collector-b.log"));
    ASSERT_GT(collector_b, 0);
  }
  // `outpost-collector <args>` through collector A's or B's admin socket.
  std::pair<int, std::string> through(const fs::path& datadir, std::vector<std::string> args) {
    data = datadir;
    auto result = command(std::move(args));
    data = data_a;
    return result;
  }
  // The Seq column of a collection's rows in the stream, in stream order.
  std::vector<uint64_t> stream_seqs(const std::string& artifact_token) {
    return stream_values(read_stream(nats->urls(), "OUTPOST"), "outpost.agent-1.results." + artifact_token, "Seq");
  }
  // The rows (the records' own seqs) of an artifact on any lane.
  size_t rows_of(const std::string& artifact_token) {
    size_t n = 0;
    for (auto& lane : {"results", "events"})
      n += stream_values(read_stream(nats->urls(), "OUTPOST"), std::string("outpost.agent-1.") + lane + "." +
                         artifact_token, "seq").size();
    return n;
  }
  static uint64_t flow_of(const std::string& out) {
    std::smatch m;
    if (!std::regex_search(out, m, std::regex("flow (\\d+) "))) return 0;
    return std::stoull(m[1]);
  }
  AgentOptions only(uint16_t to) {
    AgentOptions o;
    o.queries = "  []\n";
    o.target = to;
    return o;
  }
  std::string logs() { return slurp(collector_log) + slurp(tmp.path("collector-b.log")) + slurp(agent_log); }
};

TEST_F(FleetAdmin, CommandsThroughOneCollectorReachAnAgentConnectedToTheOther) {
  start_agent(0, 0, only(port));  // to A
  ASSERT_TRUE(eventually([&] { return slurp(collector_log).find("agent agent-1 connected") != std::string::npos; }))
      << logs();

  auto [code, out] = through(data_b, {"collect", "agent-1", "Outpost.Test.Synthetic", "-p", "max_rows=300"});
  ASSERT_EQ(code, 0) << out << logs();
  EXPECT_NE(out.find("started on agent-1"), std::string::npos) << out;
  uint64_t flow = flow_of(out);
  EXPECT_GE(flow, protocol::FIRST_FLOW_ID);
  ASSERT_TRUE(eventually([&] { return stream_seqs("Outpost=2ETest=2ESynthetic").size() >= 300; }))
      << logs();
  EXPECT_EQ(stream_seqs("Outpost=2ETest=2ESynthetic"), one_to(300));

  // The agent's answers come back through B: a refusal, its status, a cancel.
  auto refused = through(data_b, {"collect", "agent-1", "No.Such.Artifact"});
  EXPECT_EQ(refused.first, 1);
  EXPECT_NE(refused.second.find("unknown artifact No.Such.Artifact"), std::string::npos) << refused.second;
  auto status = through(data_b, {"status", "agent-1"});
  EXPECT_EQ(status.first, 0) << status.second;
  EXPECT_NE(status.second.find("\"buffer\":{"), std::string::npos) << status.second;
  auto cancel = through(data_b, {"cancel", "agent-1", std::to_string(flow)});
  EXPECT_EQ(cancel.first, 0) << cancel.second;
  EXPECT_NE(cancel.second.find("finished"), std::string::npos) << cancel.second;

  // Flow ids come from the shared state: A's next is above B's.
  auto from_a = through(data_a, {"collect", "agent-1", "Generic.Client.Info"});
  ASSERT_EQ(from_a.first, 0) << from_a.second;
  EXPECT_GT(flow_of(from_a.second), flow);

  // B lists the agent it never met, connected to A; A as connected to itself.
  auto listed = through(data_b, {"agents", "--json"});
  EXPECT_NE(listed.second.find("\"id\":\"agent-1\",\"connected\":true"), std::string::npos) << listed.second;
  EXPECT_NE(listed.second.find("\"collector\":\"127.0.0.1:" + std::to_string(port) + "\""), std::string::npos)
      << listed.second;
  auto at_a = through(data_a, {"agents", "--json"});
  EXPECT_NE(at_a.second.find("\"connected\":true"), std::string::npos) << at_a.second;
  EXPECT_NE(at_a.second.find("\"collector\":\"\""), std::string::npos) << at_a.second;

  // Its inspector through B: each call relayed to A, then to the agent.
  auto actors = through(data_b, {"inspect", "agent-1", "actors", "--json"});
  ASSERT_EQ(actors.first, 0) << actors.second;
  EXPECT_NE(actors.second.find("\"kind\":\"net-link\""), std::string::npos) << actors.second;
  auto lines = through(data_b, {"inspect", "agent-1", "logs"});
  ASSERT_EQ(lines.first, 0) << lines.second;
  EXPECT_NE(lines.second.find("link: connected"), std::string::npos) << lines.second;
  fs::path trace_file = tmp.path("relayed-trace.json");
  // A trace the agent records for its 2 s (an idle agent: its own actors' few messages).
  auto trace = through(data_b, {"inspect", "agent-1", "trace", "--count", "100000", "--seconds", "2", "-o",
                                trace_file.string()});
  ASSERT_EQ(trace.first, 0) << trace.second;
  EXPECT_NE(slurp(trace_file).find("\"ended_by\":\"deadline\""), std::string::npos) << slurp(trace_file);
  auto nobody = through(data_b, {"inspect", "agent-2", "status"});
  EXPECT_EQ(nobody.first, 1);
  EXPECT_NE(nobody.second.find("agent agent-2 is not connected to any collector"), std::string::npos)
      << nobody.second;
}

// What the jsonl collector's operator reads from its files (Control's
// FlowsReportEachCollectionsOutcomeAndCollectWaitFollowsOne), a fleet's
// reads from the stream, through either collector.
TEST_F(FleetAdmin, CollectWaitFlowsAndTailReadTheStreamThroughEitherCollector) {
  start_agent(0, 0, only(port));  // to A
  ASSERT_TRUE(eventually([&] { return slurp(collector_log).find("agent agent-1 connected") != std::string::npos; }))
      << logs();
  std::string out, err;
  ASSERT_EQ(collect_wait(data_b, {"max_rows=700", "row_size=16"}, out, err), 0) << err << logs();
  std::smatch m;
  ASSERT_TRUE(std::regex_match(err, m, std::regex("flow (\\d+) started on agent-1\n"
                                                  "flow \\1 finished: 700 rows, (\\d+) bytes, [0-9.]+ s\n")))
      << err;
  uint64_t ok = std::stoull(m[1]);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 700) << out.substr(0, 300);
  EXPECT_EQ(out.find("\"query_id\":" + std::to_string(ok) + ","), out.find("\"query_id\":"));

  ASSERT_EQ(collect_wait(data_a, {"max_rows=5000", "fail_after=300"}, out, err), 1) << err;
  ASSERT_TRUE(std::regex_search(err, m, std::regex("flow (\\d+) failed: "))) << err;
  uint64_t failed = std::stoull(m[1]);

  auto [code, listed] = through(data_b, {"flows", "agent-1", "--json"});
  ASSERT_EQ(code, 0) << listed;
  auto flows = flows_by_id(listed);
  ASSERT_EQ(flows.size(), 2u) << listed;
  EXPECT_EQ(flows[ok]["state"].s, "finished");
  EXPECT_EQ(flows[ok]["rows"].u(), 700u);
  EXPECT_EQ(flows[failed]["state"].s, "failed");

  std::tie(code, out) = through(data_a, {"tail", "agent-1", "--flow", std::to_string(failed), "-n", "1000000"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_EQ(out.find("\"query_id\":" + std::to_string(ok) + ","), std::string::npos);
  EXPECT_EQ(static_cast<uint64_t>(std::count(out.begin(), out.end(), '\n')), flows[failed]["rows"].u()) << out;
  std::tie(code, out) = through(data_b, {"tail", "agent-1", "Outpost.Test.Synthetic", "-n", "3"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 3) << out;
  std::tie(code, out) = through(data_b, {"tail", "agent-1", "--flow", "12345"});
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("no flow 12345 from agent-1"), std::string::npos) << out;
}

// As through the agent's own collector (Control's
// AWatchThroughTheCollectorEndsWhenItsClientGoes): each admin connection of
// the other collector has an inspector of its own on the agent.
TEST_F(FleetAdmin, AWatchThroughTheOtherCollectorEndsWhenItsClientGoes) {
  AgentOptions o;
  o.target = port;  // to A
  start_agent(0, 200, o);
  ASSERT_TRUE(eventually([&] { return slurp(collector_log).find("agent agent-1 connected") != std::string::npos; }))
      << logs();
  auto io = kj::setupAsyncIo();
  auto& ws = io.waitScope;
  fs::path socket = data_b / ".collector" / "admin.sock";
  InspectClient other(io, socket, "agent-1");  // before the watch: its inspector is not the watcher's
  ASSERT_FALSE(other.watched(ws));
  {
    InspectClient watcher(io, socket, "agent-1");
    watcher.watch(ws);
    ASSERT_TRUE(watcher.watched(ws));
    EXPECT_TRUE(other.watched(ws)) << "a watch is the agent's: every inspector sees it";
  }  // its connection to B ends
  EXPECT_TRUE(eventually([&] { return !other.watched(ws); })) << "the watch outlived its client" << logs();
}

TEST_F(FleetAdmin, RequestsQueuedThroughOneCollectorRunWhenTheAgentConnectsToTheOther) {
  auto queued = through(data_a, {"collect", "agent-1", "Outpost.Test.Synthetic", "-p", "max_rows=200", "--new-agent"});
  ASSERT_EQ(queued.first, 0) << queued.second;
  EXPECT_NE(queued.second.find("queued for agent-1"), std::string::npos) << queued.second;
  auto table = through(data_a, {"event-table", "agent-1", "Outpost.Test.Clock,period_ms=50"});
  ASSERT_EQ(table.first, 0) << table.second;
  EXPECT_NE(table.second.find("stored; sent when it connects"), std::string::npos) << table.second;
  auto listed = through(data_b, {"agents", "--json"});
  EXPECT_NE(listed.second.find("\"pending_requests\":1"), std::string::npos) << listed.second;
  EXPECT_NE(listed.second.find("\"connected\":false"), std::string::npos) << "connected nowhere: " << listed.second;

  start_agent(0, 0, only(port_b));  // to B, which never saw the collect
  ASSERT_TRUE(eventually([&] { return stream_seqs("Outpost=2ETest=2ESynthetic").size() >= 200; })) << logs();
  EXPECT_EQ(stream_seqs("Outpost=2ETest=2ESynthetic"), one_to(200));
  ASSERT_TRUE(eventually([&] { return rows_of("Outpost=2ETest=2EClock") >= 5; })) << logs();
  ASSERT_TRUE(eventually([&] {
    return through(data_a, {"agents", "--json"}).second.find("\"pending_requests\":0") != std::string::npos;
  })) << through(data_a, {"agents", "--json"}).second;
}

}  // namespace
}  // namespace outpost
