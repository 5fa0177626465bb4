// The collector's requests to an agent, end to end with real processes:
// `outpost-collector collect|cancel|event-table|status|agents` against a
// running collector, an agent connected over TLS (or not yet).

#include <capnp/rpc-twoparty.h>
#include <gtest/gtest.h>

#include <map>
#include <sstream>

#include "tests/e2e_fixture.hpp"
#include "tests/inspect_client.hpp"
#include "schemas/inspector.capnp.h"
#include "schemas/json_reader.hpp"
#include "schemas/protocol.capnp.h"
#include "tests/fault_proxy/fault_proxy.hpp"

namespace outpost {
namespace {

struct Control : EndToEnd {
  AgentOptions no_queries() {
    AgentOptions o;
    o.queries = "  []\n";
    return o;
  }

  // `agents --json`'s line for agent-1, or "" before it is known.
  std::string agent_line() {
    auto [code, out] = command({"agents", "--json"});
    EXPECT_EQ(code, 0) << out;
    std::smatch m;
    std::regex_search(out, m, std::regex("\\{\"id\":\"agent-1\".*"));
    return m.empty() ? "" : m[0].str();
  }
  bool connected() { return agent_line().find("\"connected\":true") != std::string::npos; }

  // The flow id in "flow N started on agent-1" (or "queued for").
  static uint64_t flow_of(const std::string& out) {
    std::smatch m;
    if (!std::regex_search(out, m, std::regex("flow (\\d+) "))) return 0;
    return std::stoull(m[1]);
  }

  // The buffer seq that starts each line the collector stored for an artifact.
  std::vector<uint64_t> seqs_of(const std::string& artifact) {
    std::vector<uint64_t> out;
    fs::path dir = data / "agent-1" / artifact;
    if (!fs::exists(dir)) return out;
    static const std::regex seq("^\\{\"seq\":(\\d+)");
    for (auto& e : fs::directory_iterator(dir)) {
      std::ifstream in(e.path());
      for (std::string line; std::getline(in, line);) {
        std::smatch m;
        if (std::regex_search(line, m, seq)) out.push_back(std::stoull(m[1]));
      }
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  size_t lines_of(const std::string& artifact) {
    size_t n = 0;
    fs::path dir = data / "agent-1" / artifact;
    if (!fs::exists(dir)) return 0;
    for (auto& e : fs::directory_iterator(dir)) {
      std::string text = slurp(e.path());
      n += std::count(text.begin(), text.end(), '\n');
    }
    return n;
  }
};

TEST_F(Control, CollectRunsOnTheResultsLaneAndTheAgentsRefusalsComeBack) {
  start_collector();
  start_agent(0, 0, no_queries());
  ASSERT_TRUE(eventually([&] { return connected(); })) << slurp(agent_log);

  auto [code, out] = command({"collect", "agent-1", "Outpost.Test.Synthetic", "-p", "max_rows=3000",
                              "-p", "row_size=16"});
  ASSERT_EQ(code, 0) << out;
  uint64_t flow = flow_of(out);
  EXPECT_NE(out.find("started on agent-1"), std::string::npos) << out;
  EXPECT_GE(flow, kFirstFlowId);
  ASSERT_TRUE(eventually([&] { return delivered("Outpost.Test.Synthetic").size() >= 3000; }))
      << slurp(agent_log);
  EXPECT_EQ(delivered("Outpost.Test.Synthetic"), one_to(3000));
  std::string rows = slurp(data / "agent-1" / "Outpost.Test.Synthetic" /
                           fs::directory_iterator(data / "agent-1" / "Outpost.Test.Synthetic")->path().filename());
  EXPECT_NE(rows.find("\"lane\":\"results\",\"query_id\":" + std::to_string(flow)), std::string::npos)
      << rows.substr(0, 300);

  auto refused = command({"collect", "agent-1", "No.Such.Artifact"});
  EXPECT_EQ(refused.first, 1);
  EXPECT_EQ(refused.second,
            "outpost-collector: collect No.Such.Artifact: unknown artifact No.Such.Artifact (see "
            "`outpost-agent artifacts list`)\n");
  auto bad_vql = command({"collect", "agent-1", "Custom", "--vql", "SELECT * FROM nope()"});
  EXPECT_EQ(bad_vql.first, 1);
  EXPECT_EQ(bad_vql.second, "outpost-collector: collect Custom: line 1, column 15: unknown plugin nope()\n");
  // A real artifact, through the engine.
  auto info = command({"collect", "agent-1", "Generic.Client.Info"});
  ASSERT_EQ(info.first, 0) << info.second;
  ASSERT_TRUE(eventually([&] { return fs::exists(data / "agent-1" / "Generic.Client.Info"); }));
  ASSERT_TRUE(eventually([&] {
    // The directory may exist before its file does: never dereference an end iterator.
    fs::directory_iterator it(data / "agent-1" / "Generic.Client.Info"), end;
    return it != end && slurp(it->path()).find("\"OS\":\"linux\"") != std::string::npos;
  })) << slurp(agent_log);
  auto bad_param = command({"collect", "agent-1", "Outpost.Test.Clock", "-p", "period_ms=soon"});
  EXPECT_EQ(bad_param.first, 1);
  EXPECT_NE(bad_param.second.find("parameter.period_ms: expected an integer"), std::string::npos)
      << bad_param.second;
  auto bad_agent = command({"collect", "../etc", "Outpost.Test.Clock"});
  EXPECT_EQ(bad_agent.first, 1);
  EXPECT_NE(bad_agent.second.find("is not an agent id"), std::string::npos) << bad_agent.second;

  auto status = command({"status", "agent-1"});
  EXPECT_EQ(status.first, 0) << status.second;
  EXPECT_NE(status.second.find("\"origin\":\"collection\""), std::string::npos) << status.second;
  EXPECT_NE(status.second.find("\"buffer\":{"), std::string::npos) << status.second;
}

// Artifacts live with the operator: a definition sent with a request runs
// on an agent that has no copy of it, or in place of its own, and is checked
// as the agent checks its own files.
TEST_F(Control, ArtifactDefinitionsAndQueriesTravelWithRequests) {
  start_collector();
  start_agent(0, 0, no_queries());
  ASSERT_TRUE(eventually([&] { return connected(); })) << slurp(agent_log);
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(tmp.path(name)) << text;
    return tmp.path(name).string();
  };
  auto stored = [&](const std::string& artifact) {
    std::string all;
    if (fs::exists(data / "agent-1" / artifact))
      for (auto& e : fs::directory_iterator(data / "agent-1" / artifact)) all += slurp(e.path());
    return all;
  };

  std::string sent = write("sent.yaml",
                           "name: Custom.Sent\n"
                           "parameters:\n  - name: Greeting\n    default: hi\n  - name: Rules\n    type: upload\n"
                           "sources:\n  - query: SELECT Greeting, 1 + 1 AS Two, Rules FROM scope()\n");
  std::string rules = write("rules.yar", "rule r {\n condition: true\n}\n");
  auto [code, out] = command({"collect", "agent-1", "--artifact-file", sent, "-p", "Greeting=hello", "-f",
                              "Rules=" + rules});
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("started on agent-1"), std::string::npos) << out;
  ASSERT_TRUE(eventually([&] {
    return stored("Custom.Sent").find("\"Greeting\":\"hello\",\"Two\":2,\"Rules\":\"rule r {\\u000a condition: "
                                      "true\\u000a}\\u000a\"") != std::string::npos;
  }))
      << stored("Custom.Sent") << slurp(agent_log);
  // One of the agent's own names: the definition sent wins.
  std::string info = write("info.yaml",
                           "name: Generic.Client.Info\nsources:\n  - query: SELECT 'sent' AS Marker FROM scope()\n");
  ASSERT_EQ(command({"collect", "agent-1", "Generic.Client.Info", "--artifact-file", info}).first, 0);
  ASSERT_TRUE(eventually([&] { return stored("Generic.Client.Info").find("\"Marker\":\"sent\"") != std::string::npos; }))
      << stored("Generic.Client.Info") << slurp(agent_log);

  // Checked by the agent as its own files are; mistakes named.
  std::string bad = write("bad.yaml", "name: Custom.Bad\nsources:\n  - query: SELECT * FROM nope()\n");
  auto refused = command({"collect", "agent-1", "--artifact-file", bad});
  EXPECT_EQ(refused.first, 1);
  EXPECT_EQ(refused.second, "outpost-collector: collect Custom.Bad: the definition sent for Custom.Bad: "
                            "sources[0].query: line 1, column 15: unknown plugin nope()\n");
  auto other = command({"collect", "agent-1", "Custom.Other", "--artifact-file", sent});
  EXPECT_EQ(other.first, 1);
  EXPECT_EQ(other.second, "outpost-collector: " + sent + " defines Custom.Sent, not Custom.Other\n");
  auto binary = command({"collect", "agent-1", "--artifact-file", sent, "-f",
                         "Rules=" + write("nul.bin", std::string("ab\0cd", 5))});
  EXPECT_EQ(binary.first, 1);
  EXPECT_EQ(binary.second, "outpost-collector: " + tmp.path("nul.bin").string() +
                               ": a NUL byte at offset 2 (a parameter is text; binary files cannot be sent as one yet)\n");
  auto not_yaml = command({"collect", "agent-1", "--artifact-file", write("list.yaml", "- a\n")});
  EXPECT_EQ(not_yaml.first, 1);
  EXPECT_NE(not_yaml.second.find("not an artifact definition (no `name:`)"), std::string::npos) << not_yaml.second;

  // The event table: an event artifact from a file, and a query.
  std::string ticks = write("ticks.yaml",
                            "name: Custom.Ticks\ntype: CLIENT_EVENT\n"
                            "parameters:\n  - name: Label\n    default: tick\n"
                            "sources:\n  - query: SELECT Label FROM clock(period=0.05)\n");
  auto table = command({"event-table", "agent-1", "Custom.Ticks,Label=tock", "--artifact-file", ticks, "--vql",
                        "Custom.Query=SELECT 'q' AS Q FROM clock(period=0.05)"});
  ASSERT_EQ(table.first, 0) << table.second;
  EXPECT_EQ(table.second, "event table of agent-1 (2 entries) set\n");
  ASSERT_TRUE(eventually([&] { return stored("Custom.Ticks").find("\"Label\":\"tock\"") != std::string::npos; }))
      << slurp(agent_log);
  ASSERT_TRUE(eventually([&] { return stored("Custom.Query").find("\"Q\":\"q\"") != std::string::npos; }))
      << slurp(agent_log);
  EXPECT_NE(agent_line().find("Custom.Ticks(Label=tock) flow"), std::string::npos) << agent_line();
  auto bad_table = command({"event-table", "agent-1", "--artifact-file", bad});
  EXPECT_EQ(bad_table.first, 1);
  EXPECT_NE(bad_table.second.find("unknown plugin nope()"), std::string::npos) << bad_table.second;
}

TEST_F(Control, RequestsForAnOfflineAgentSurviveACollectorCrashAndRunWhenItConnects) {
  start_collector();
  auto queued = command({"collect", "agent-1", "Outpost.Test.Synthetic", "-p", "max_rows=500", "--new-agent"});
  ASSERT_EQ(queued.first, 0) << queued.second;
  EXPECT_NE(queued.second.find("queued for agent-1"), std::string::npos) << queued.second;
  auto table = command({"event-table", "agent-1", "Outpost.Test.Clock,period_ms=50"});
  ASSERT_EQ(table.first, 0) << table.second;
  EXPECT_NE(table.second.find("stored; sent when it connects"), std::string::npos) << table.second;
  EXPECT_NE(agent_line().find("\"pending_requests\":1"), std::string::npos) << agent_line();

  kill(collector, SIGKILL);
  ASSERT_EQ(wait_exit(collector), 128 + SIGKILL);
  start_collector();
  std::string line = agent_line();
  EXPECT_NE(line.find("\"pending_requests\":1"), std::string::npos) << line;
  EXPECT_NE(line.find("Outpost.Test.Clock(period_ms=50)"), std::string::npos) << line;

  pid_t agent = start_agent(0, 0, no_queries());
  ASSERT_TRUE(eventually([&] { return delivered("Outpost.Test.Synthetic").size() >= 500; }))
      << slurp(agent_log);
  EXPECT_EQ(delivered("Outpost.Test.Synthetic"), one_to(500));
  ASSERT_TRUE(eventually([&] { return lines_of("Outpost.Test.Clock") >= 5; })) << slurp(agent_log);
  EXPECT_NE(agent_line().find("\"pending_requests\":0"), std::string::npos) << agent_line();

  // A restarted agent gets its event table again.
  kill(agent, SIGTERM);
  ASSERT_EQ(wait_exit(agent), 0) << slurp(agent_log);
  size_t before = lines_of("Outpost.Test.Clock");
  start_agent(0, 0, no_queries());
  ASSERT_TRUE(eventually([&] { return lines_of("Outpost.Test.Clock") >= before + 5; }))
      << slurp(agent_log);
  EXPECT_EQ(delivered("Outpost.Test.Synthetic").size(), 500u) << "the collection ran twice";

  // An empty table stops the event query: the agent reports it removed
  // (it has handed its last rows to the buffer). An event query started
  // after that gets a later seq than every row of the clock on that lane.
  auto cleared = command({"event-table", "agent-1"});
  ASSERT_EQ(cleared.first, 0) << cleared.second;
  ASSERT_TRUE(eventually([&] {
    return command({"status", "agent-1"}).second.find("\"ended\":\"removed\"") != std::string::npos;
  })) << command({"status", "agent-1"}).second;
  auto marker = command({"event-table", "agent-1", "Generic.Client.Info"});
  ASSERT_EQ(marker.first, 0) << marker.second;
  ASSERT_TRUE(eventually([&] { return !seqs_of("Generic.Client.Info").empty(); })) << slurp(agent_log);
  auto clock = seqs_of("Outpost.Test.Clock");
  ASSERT_FALSE(clock.empty());
  EXPECT_LT(clock.back(), seqs_of("Generic.Client.Info").front()) << "still ticking after the table was cleared";
}

TEST_F(Control, CancelStopsTheCollectionAndPurgesItsBufferedRows) {
  start_collector();
  FaultProxy proxy(port);
  proxy.set_rate(1 << 20);  // the agent produces far faster than this: its buffer fills
  AgentOptions o = no_queries();
  o.target = proxy.port();
  start_agent(0, 0, o);
  ASSERT_TRUE(eventually([&] { return connected(); })) << slurp(agent_log);
  auto [code, out] = command({"collect", "agent-1", "Outpost.Test.Synthetic", "-p", "row_size=512"});
  ASSERT_EQ(code, 0) << out;
  uint64_t flow = flow_of(out);
  ASSERT_TRUE(eventually([&] { return lines_of("Outpost.Test.Synthetic") > 0; })) << slurp(agent_log);
  std::this_thread::sleep_for(std::chrono::seconds(1));

  auto cancelled = command({"cancel", "agent-1", std::to_string(flow)});
  ASSERT_EQ(cancelled.first, 0) << cancelled.second << slurp(agent_log);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(cancelled.second, m, std::regex("(\\d+) buffered records deleted")))
      << cancelled.second;
  EXPECT_GT(std::stoull(m[1]), 0u);

  proxy.set_rate(0);
  // What was in flight when the purge ran still arrives; nothing after it
  // can: the agent reports the collection ended (cancelled) and nothing of
  // it left in its buffer.
  std::string ended = "{\"artifact\":\"Outpost.Test.Synthetic\",\"ended\":\"cancelled\",\"name\":\"F." +
                      std::to_string(flow) + "\"";
  ASSERT_TRUE(eventually([&] {
    auto status = command({"status", "agent-1"}).second;
    return status.find(ended) != std::string::npos &&
           status.find("\"results\":{\"bytes\":0,\"records\":0}") != std::string::npos;
  })) << command({"status", "agent-1"}).second;
  auto rows = delivered("Outpost.Test.Synthetic");
  EXPECT_EQ(rows, one_to(rows.size())) << "a gap or a duplicate before the purge point";
  // Its end record is no row of the flow's: the purge kept it, and `flows` says cancelled.
  EXPECT_TRUE(eventually([&] {
    return command({"flows", "agent-1", "--json"}).second.find("{\"flow\":" + std::to_string(flow) +
                                                                ",\"artifact\":\"Outpost.Test.Synthetic\","
                                                                "\"state\":\"cancelled\"") != std::string::npos;
  })) << command({"flows", "agent-1"}).second;
  EXPECT_NE(slurp(agent_log).find("cancelled by the collector"), std::string::npos);
  // The buffer that was full takes new rows: a collection started now is delivered.
  auto next = command({"collect", "agent-1", "Generic.Client.Info"});
  ASSERT_EQ(next.first, 0) << next.second;
  EXPECT_TRUE(eventually([&] { return lines_of("Generic.Client.Info") > 0; }))
      << "the buffer stayed stalled after the purge freed it: " << command({"status", "agent-1"}).second;

  // Cancelled again: it had ended; nothing of it is left to delete.
  auto again = command({"cancel", "agent-1", std::to_string(flow)});
  EXPECT_EQ(again.first, 0) << again.second;
  EXPECT_EQ(again.second, "flow " + std::to_string(flow) +
                              " had already finished on agent-1: 0 buffered records deleted\n");
}

TEST_F(Control, MistakesAreRefused) {
  start_collector();
  AgentOptions o;
  o.queries = "  - name: tick\n    id: 2\n    source: {type: clock, period_ms: 100}\n";
  start_agent(0, 0, o);
  ASSERT_TRUE(eventually([&] { return connected(); })) << slurp(agent_log);

  // A mistyped agent name: refused, and no phantom agent appears.
  auto typo = command({"collect", "agnet-1", "Outpost.Test.Clock"});
  EXPECT_EQ(typo.first, 1);
  EXPECT_EQ(typo.second,
            "outpost-collector: no agent agnet-1 has ever connected to this collector (`outpost-collector "
            "agents` lists those that have); to queue for an agent yet to connect, pass --new-agent\n");
  EXPECT_EQ(command({"event-table", "agnet-1", "Outpost.Test.Clock"}).first, 1);
  EXPECT_EQ(command({"cancel", "agnet-1", "4294967296"}).first, 1);
  EXPECT_EQ(command({"agents"}).second.find("agnet-1"), std::string::npos);

  // Flows the agent does not have, and a configured query: refused, and it ticks on.
  auto unknown = command({"cancel", "agent-1", "12345"});
  EXPECT_EQ(unknown.first, 1);
  EXPECT_EQ(unknown.second, "outpost-collector: no such flow 12345\n");
  auto never = command({"cancel", "agent-1", "4294967297"});
  EXPECT_EQ(never.first, 1);
  EXPECT_EQ(never.second, "outpost-collector: no such flow 4294967297\n");
  auto configured = command({"cancel", "agent-1", "2"});
  EXPECT_EQ(configured.first, 1);
  EXPECT_EQ(configured.second,
            "outpost-collector: flow 2 is the configured query tick: only the agent's configuration stops it\n");
  size_t ticks = lines_of("tick");
  ASSERT_TRUE(eventually([&] { return lines_of("tick") > ticks + 2; })) << "the configured query stopped";

  // Asked to, it queues for an agent yet to connect.
  auto fresh = command({"collect", "agent-2", "Outpost.Test.Clock", "--new-agent"});
  EXPECT_EQ(fresh.first, 0) << fresh.second;
  EXPECT_NE(fresh.second.find("queued for agent-2"), std::string::npos) << fresh.second;
  EXPECT_NE(command({"agents"}).second.find("agent-2: not connected"), std::string::npos);
}

}  // namespace
}  // namespace outpost

namespace outpost {
namespace {

// The collector's operator sees each collection end: `collect --wait`
// streams a flow's rows and exits with its outcome, `flows` lists them all,
// `tail --flow` picks one flow's rows.
TEST_F(Control, FlowsReportEachCollectionsOutcomeAndCollectWaitFollowsOne) {
  start_collector();
  start_agent(0, 0, no_queries());
  ASSERT_TRUE(eventually([&] { return connected(); })) << slurp(agent_log);
  std::string out, err;
  ASSERT_EQ(collect_wait(data, {"max_rows=2500", "row_size=16"}, out, err), 0) << err;
  std::smatch m;
  ASSERT_TRUE(std::regex_match(err, m, std::regex("flow (\\d+) started on agent-1\n"
                                                  "flow \\1 finished: 2500 rows, (\\d+) bytes, [0-9.]+ s\n")))
      << err;
  uint64_t ok = std::stoull(m[1]);
  EXPECT_GT(std::stoull(m[2]), 2500u * 16);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 2500) << out.substr(0, 300);
  EXPECT_EQ(out.find("\"query_id\":" + std::to_string(ok) + ","), out.find("\"query_id\":"));

  // A collection that fails: its error, and exit 1.
  ASSERT_EQ(collect_wait(data, {"max_rows=5000", "fail_after=300"}, out, err), 1) << err;
  ASSERT_TRUE(std::regex_search(err, m, std::regex("flow (\\d+) failed: ")) ) << err;
  uint64_t failed = std::stoull(m[1]);
  EXPECT_NE(err.find("fail_after"), std::string::npos) << err;

  auto [code, listed] = command({"flows", "agent-1", "--json"});
  ASSERT_EQ(code, 0) << listed;
  auto flows = flows_by_id(listed);
  ASSERT_EQ(flows.size(), 2u) << listed;
  EXPECT_EQ(flows[ok]["state"].s, "finished");
  EXPECT_EQ(flows[ok]["rows"].u(), 2500u);
  EXPECT_EQ(flows[ok]["artifact"].s, "Outpost.Test.Synthetic");
  EXPECT_EQ(flows[failed]["state"].s, "failed");
  EXPECT_NE(flows[failed]["error"].s.find("fail_after"), std::string::npos);
  EXPECT_FALSE(flows[failed]["started"].s.empty());
  std::tie(code, listed) = command({"flows", "agent-1"});
  EXPECT_TRUE(std::regex_search(listed, std::regex("\n" + std::to_string(ok) +
                                                   " +Outpost.Test.Synthetic +finished +2500 ")))
      << listed;

  // One flow's rows, found without naming the artifact.
  std::tie(code, out) = command({"tail", "agent-1", "--flow", std::to_string(failed), "-n", "1000000"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_EQ(out.find("\"query_id\":" + std::to_string(ok) + ","), std::string::npos);
  EXPECT_EQ(static_cast<uint64_t>(std::count(out.begin(), out.end(), '\n')), flows[failed]["rows"].u()) << out;
  std::tie(code, out) = command({"tail", "agent-1", "--flow", "12345"});
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("no flow 12345 from agent-1"), std::string::npos) << out;
}

// Through the collector, each admin connection's inspect has an inspector
// of its own on the agent, as a client of the agent's own socket has: a watch
// it asked for (histograms on) ends when it goes, not when the watch expires.
TEST_F(Control, AWatchThroughTheCollectorEndsWhenItsClientGoes) {
  start_collector();
  start_agent(0, 200);
  ASSERT_TRUE(eventually([&] { return connected(); }));
  auto io = kj::setupAsyncIo();
  auto& ws = io.waitScope;
  fs::path socket = data / ".collector" / "admin.sock";
  {
    InspectClient watcher(io, socket, "agent-1");
    watcher.watch(ws);
    ASSERT_TRUE(watcher.watched(ws));
  }  // its connection ends
  InspectClient other(io, socket, "agent-1");
  EXPECT_TRUE(eventually([&] { return !other.watched(ws); })) << "the watch outlived its client";
}

TEST_F(Control, InspectShowsAnAgentsActorsThroughTheCollector) {
  start_collector();
  start_agent(0, 200);
  ASSERT_TRUE(eventually([&] { return connected(); }));
  ASSERT_TRUE(eventually([&] { return !delivered().empty(); }));
  auto [code, out] = command({"inspect", "agent-1", "actors", "--json"});
  ASSERT_EQ(code, 0) << out;
  auto actors = schemas::Json::parse(out);
  std::map<std::string, const schemas::Json*> by;
  for (auto& a : actors.a) by[a["kind"].s + ":" + a["name"].s] = &a;
  ASSERT_TRUE(by.count("query:syn") && by.count("net-link:") && by.count("buffer:")) << out;
  EXPECT_EQ((*by["net-link:"])["state"].s, "running");
  EXPECT_GT((*by["query:syn"])["rows_out"].u(), 0u);
  // Rows sent over the network were taken in by the buffer first.
  EXPECT_GT((*by["net-link:"])["rows_out"].u(), 0u);
  EXPECT_LE((*by["net-link:"])["rows_out"].u(), (*by["buffer:"])["rows_in"].u());
  EXPECT_EQ((*by["query:syn"])["status"]["name"].s, "syn");  // its own status came along

  std::tie(code, out) = command({"inspect", "agent-1", "tree"});
  ASSERT_EQ(code, 0) << out;
  // The supervisor at the top level, its waker and query one level down.
  EXPECT_TRUE(std::regex_search(out, std::regex("\n(├|└)─ supervisor #\\d+ \\[running\\]"))) << out;
  EXPECT_TRUE(std::regex_search(out, std::regex("\n(│  |   )(├|└)─ waker #"))) << out;
  EXPECT_TRUE(std::regex_search(out, std::regex("\n(│  |   )(├|└)─ query syn #"))) << out;

  std::tie(code, out) = command({"inspect", "agent-1", "logs"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("link: connected"), std::string::npos) << out;

  // A bounded trace, recorded on the agent and brought back through the collector.
  fs::path trace_file = tmp.path("remote-trace.json");
  std::tie(code, out) = command({"inspect", "agent-1", "trace", "--count", "50", "--seconds", "20", "-o",
                                 trace_file.string()});
  ASSERT_EQ(code, 0) << out;
  auto trace = schemas::Json::parse(slurp(trace_file));
  EXPECT_EQ(trace["otherData"]["ended_by"].s, "count");
  size_t slices = 0;
  for (auto& e : trace["traceEvents"].a) slices += e["ph"].s == "X";
  EXPECT_EQ(slices, 50u);

  std::tie(code, out) = command({"inspect", "agent-2", "status"});
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("agent agent-2 is not connected"), std::string::npos) << out;
}

// The operator's reconnect on a session that is up: it ends, the next one
// comes at once, and the rows go on arriving exactly once.
TEST_F(Control, OutpostctlLinkReconnectMakesANewSessionAndLosesNothing) {
  start_collector();
  AgentOptions o;
  o.control = true;
  start_agent(3000, 1000, o);
  ASSERT_TRUE(eventually([&] { return connected() && delivered().size() > 100; }));
  fs::path out = tmp.path("ctl.out"), err = tmp.path("ctl.err");
  int code = wait_exit(spawn_to({OUTPOSTCTL, "--socket", tmp.path("inspector.sock").string(), "link", "reconnect"},
                                out, err));
  ASSERT_EQ(code, 0) << slurp(err);
  EXPECT_EQ(slurp(out), "reconnecting to 127.0.0.1:" + std::to_string(port) + " (the session that was up ends)\n");
  auto sessions = [&] {
    std::string log = slurp(agent_log);
    size_t n = 0;
    for (size_t at = log.find("link: connected to"); at != std::string::npos; at = log.find("link: connected to", at + 1))
      ++n;
    return n;
  };
  ASSERT_TRUE(eventually([&] { return sessions() == 2; })) << slurp(agent_log);
  EXPECT_NE(slurp(agent_log).find("offline: the operator asked for a new connection; retrying in 0 ms"),
            std::string::npos);
  ASSERT_TRUE(eventually([&] { return delivered().size() >= 3000; }));
  EXPECT_EQ(delivered(), one_to(3000));
}

}  // namespace
}  // namespace outpost
