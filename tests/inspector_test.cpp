// outpostctl against a real agent process: what it shows matches what the
// agent delivered; control changes the delivered data; the socket keeps other
// users out; warnings fire when provoked and not in a healthy run.

#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <sstream>
#include <set>
#include <map>
#include <regex>

#include "schemas/json_reader.hpp"
#include "tests/process_util.hpp"
#include "tests/faulty_fs.hpp"
#include "tests/temp_dir.hpp"

namespace outpost {
namespace {
using namespace outpost::testing;
using schemas::Json;
namespace fs = std::filesystem;

struct ToolRun {
  int code = -1;
  std::string out, err;
};

struct InspectorTest : ::testing::Test {
  TempDir tmp;
  Processes started;
  fs::path config = tmp.path("agent.yaml");
  fs::path log = tmp.path("agent.log");
  fs::path socket = tmp.path("i.sock");
  fs::path delivered = tmp.path("out.jsonl");
  std::string inspector_extra;  // more keys of the inspector's map: ", key: value"

  // `extra` goes at the end: more queries, or the inspector's warnings.
  void write_config(bool control, const std::string& link = "", const std::string& buffer = "limit: 256MiB",
                    const std::string& warnings = "", const std::string& queries = "") {
    std::ofstream(config)
        << "buffer: {dir: " << tmp.path("buf").string() << ", " << buffer << "}\n"
        << "link: " << (link.empty() ? "{type: file, path: " + delivered.string() + "}" : link) << "\n"
        << "log: {level: info, file: " << log.string() << "}\n"
        << "inspector: {socket: " << socket.string() << ", control: " << (control ? "true" : "false")
        << (warnings.empty() ? "" : ", warnings: {" + warnings + "}") << inspector_extra << "}\n"
        << "queries:\n"
        << (queries.empty() ? "  - name: syn\n"
                              "    id: 7\n"
                              "    source: {type: synthetic, rate: 2000, row_size: 64}\n"
                              "    batch: {rows: 100, delay_ms: 5}\n"
                              "  - name: beat\n"
                              "    id: 8\n"
                              "    source: {type: synthetic, rate: 200, row_size: 16}\n"
                            : queries);
  }

  pid_t start_agent() {
    pid_t pid = started.add(spawn({OUTPOST_AGENT, "--config", config.string()}, tmp.path("agent.out")));
    EXPECT_TRUE(eventually([&] { return slurp(log).find("agent running") != std::string::npos; })) << slurp(log);
    return pid;
  }

  // Runs outpostctl (as `uid` when given); its exit code, stdout and stderr.
  ToolRun ctl(std::vector<std::string> args, int uid = -1) {
    args.insert(args.begin(), {OUTPOSTCTL, "--socket", socket.string()});
    fs::path out = tmp.path("ctl.out"), err = tmp.path("ctl.err");
    fs::remove(out);
    fs::remove(err);
    pid_t pid = spawn_to(args, out, err, uid);
    ToolRun r;
    r.code = wait_exit(pid, std::chrono::seconds(60));
    r.out = slurp(out);
    r.err = slurp(err);
    return r;
  }

  Json ctl_json(std::vector<std::string> args) {
    args.push_back("--json");
    auto r = ctl(args);
    EXPECT_EQ(r.code, 0) << r.err;
    try {
      return Json::parse(r.out);
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what() << " in: " << r.out;
      return {};
    }
  }

  // The actor of this kind (and name, when given).
  static const Json* find(const Json& actors, const std::string& kind, const std::string& name = "") {
    for (auto& a : actors.a)
      if (a["kind"].s == kind && (name.empty() || a["name"].s == name)) return &a;
    return nullptr;
  }

  // Rows of a query the file link has delivered.
  uint64_t delivered_rows(uint64_t query) {
    std::ifstream in(delivered);
    std::string line, key = "\"query_id\":" + std::to_string(query) + ",";
    uint64_t n = 0;
    while (std::getline(in, line)) n += line.find(key) != std::string::npos && line.find("\"row\":") != std::string::npos;
    return n;
  }
};

TEST_F(InspectorTest, ActorsAndTreeShowEveryActorWithCountsThatMatchTheDeliveredRows) {
  write_config(true);
  start_agent();
  ASSERT_TRUE(eventually([&] { return delivered_rows(7) > 200 && delivered_rows(8) > 5; }));

  auto actors = ctl_json({"actors"});
  for (auto kind : {"buffer", "link", "supervisor", "waker"}) EXPECT_NE(find(actors, kind), nullptr) << kind;
  auto* syn = find(actors, "query", "syn");
  ASSERT_NE(syn, nullptr);
  EXPECT_GT((*syn)["handled"].u(), 0u);
  EXPECT_EQ((*syn)["status"]["rows_committed"].u() <= (*syn)["rows_out"].u(), true);
  EXPECT_EQ((*syn)["parent"].u(), (*find(actors, "supervisor"))["id"].u());
  EXPECT_GT((*find(actors, "buffer"))["handled"].u(), 0u);

  // Suspended, the query's rows_out stops where the delivered rows end up.
  auto r = ctl({"suspend", "syn"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "suspended syn\n");
  uint64_t out = 0;
  ASSERT_TRUE(eventually([&] {
    auto a = ctl_json({"actors"});
    auto* q = find(a, "query", "syn");
    out = q ? (*q)["rows_out"].u() : 0;
    return q && (*q)["state"].s == "suspended" && delivered_rows(7) == out;
  }));
  // While another query's rows keep coming, the suspended one delivers nothing more.
  uint64_t beat = delivered_rows(8);
  ASSERT_TRUE(eventually([&] { return delivered_rows(8) >= beat + 20; }));
  EXPECT_EQ(delivered_rows(7), out);
  EXPECT_EQ((*find(ctl_json({"actors"}), "query", "syn"))["rows_out"].u(), out);

  // With both suspended, rows and bytes add up: what the queries appended is
  // what the buffer took in, what the link delivered, and what the file holds.
  ASSERT_EQ(ctl({"suspend", "beat"}).code, 0);
  uint64_t appended = 0, taken = 0, delivered_bytes = 0;
  uint64_t rows_appended = 0, rows_taken = 0, rows_sent = 0, rows_in_file = 0;
  ASSERT_TRUE(eventually([&] {
    auto a = ctl_json({"actors"});
    auto *s = find(a, "query", "syn"), *b = find(a, "query", "beat");
    appended = (*s)["bytes_out"].u() + (*b)["bytes_out"].u();
    taken = (*find(a, "buffer"))["bytes_in"].u();
    delivered_bytes = (*find(a, "link"))["bytes_out"].u();
    rows_appended = (*s)["rows_out"].u() + (*b)["rows_out"].u();
    rows_taken = (*find(a, "buffer"))["rows_in"].u();
    rows_sent = (*find(a, "link"))["rows_out"].u();
    rows_in_file = delivered_rows(7) + delivered_rows(8);
    return appended == taken && taken == delivered_bytes && rows_appended == rows_taken &&
           rows_taken == rows_sent && rows_sent == rows_in_file;
  })) << appended << " bytes appended, " << taken << " taken in, " << delivered_bytes << " delivered; "
      << rows_appended << " rows appended, " << rows_taken << " taken in, " << rows_sent << " sent, "
      << rows_in_file << " in the file";
  EXPECT_GT(appended, 0u);
  EXPECT_GT(rows_appended, 200u);
  ASSERT_EQ(ctl({"resume", "beat"}).code, 0);

  r = ctl({"resume", "syn"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "resumed syn\n");
  ASSERT_TRUE(eventually([&] { return delivered_rows(7) > out + 100; }));

  // The tree: the agent's top level, the supervisor's queries and waker under it.
  auto tree = ctl_json({"tree"});
  std::map<std::string, const Json*> top;
  for (auto& c : tree["children"].a) top[c["kind"].s] = &c;
  ASSERT_TRUE(top.count("supervisor") && top.count("buffer") && top.count("link")) << ctl({"tree"}).out;
  std::set<std::string> under;
  for (auto& c : (*top["supervisor"])["children"].a) under.insert(c["kind"].s + ":" + c["name"].s);
  EXPECT_EQ(under, (std::set<std::string>{"query:syn", "query:beat", "waker:"}));

  // A healthy run has no warning.
  EXPECT_EQ(ctl_json({"warnings"}).a.size(), 0u) << ctl({"warnings"}).out;
  // The log ring has the agent's lines, the operator's action among them.
  r = ctl({"logs"});
  EXPECT_NE(r.out.find("query syn suspended by the operator"), std::string::npos) << r.out;
}

// The same actors, as VQL rows the agent delivers like any other query's:
// actors() and the Outpost.Client.Actors artifact.
TEST_F(InspectorTest, TheActorsPluginDeliversTheActorsOutpostctlShows) {
  write_config(false, "", "limit: 256MiB", "",
               "  - name: beat\n"
               "    id: 8\n"
               "    source: {type: synthetic, rate: 200, row_size: 16}\n"
               "  - name: mine\n"
               "    id: 9\n"
               "    source: {type: vql, query: \"SELECT Id, Kind, Name, Parent, State, Status FROM actors()\"}\n"
               "  - name: buffers\n"
               "    id: 10\n"
               "    source: {type: artifact, name: Outpost.Client.Actors, parameters: {Kind: buffer}}\n");
  start_agent();
  auto rows_of = [&](uint64_t query) {
    std::vector<Json> rows;
    std::ifstream in(delivered);
    std::string line, key = "\"query_id\":" + std::to_string(query) + ",";
    while (std::getline(in, line))
      if (line.find(key) != std::string::npos && line.find("\"row\":") != std::string::npos)
        rows.push_back(Json::parse(line)["row"]);
    return rows;
  };
  ASSERT_TRUE(eventually([&] { return !rows_of(9).empty() && !rows_of(10).empty() && delivered_rows(8) > 5; }));
  auto actors = ctl_json({"actors"});

  // Each long-lived actor is a row, with the id, parent and kind outpostctl gives it.
  auto mine = rows_of(9);
  for (auto kind : {"buffer", "link", "supervisor", "waker"}) {
    auto* shown = find(actors, kind);
    ASSERT_NE(shown, nullptr) << kind;
    auto row = std::find_if(mine.begin(), mine.end(), [&](const Json& r) { return r["Kind"].s == kind; });
    ASSERT_NE(row, mine.end()) << kind;
    EXPECT_EQ((*row)["Id"].u(), (*shown)["id"].u()) << kind;
    EXPECT_EQ((*row)["Parent"].u(), (*shown)["parent"].u()) << kind;
  }
  // The query sees itself, running, with its name and its own status.
  auto self = std::find_if(mine.begin(), mine.end(), [](const Json& r) { return r["Name"].s == "mine"; });
  ASSERT_NE(self, mine.end());
  EXPECT_EQ((*self)["Kind"].s, "query");
  // Its state is the one it had before this handling: it had parked, waiting for the answers.
  EXPECT_EQ((*self)["State"].s, "sleeping");
  EXPECT_EQ((*self)["Status"]["id"].u(), 9u);

  // The artifact, asked for the buffer only: one row, whose status is the buffer's.
  auto buffers = rows_of(10);
  ASSERT_EQ(buffers.size(), 1u);
  EXPECT_EQ(buffers[0]["Kind"].s, "buffer");
  EXPECT_GT(buffers[0]["Status"]["limit_bytes"].u(), 0u);
  EXPECT_EQ(buffers[0]["Status"]["limit_bytes"].u(), (*find(actors, "buffer"))["status"]["limit_bytes"].u());
}

TEST_F(InspectorTest, RestartStartsTheQueryAgainAndUnknownQueriesAreNamed) {
  write_config(true);
  start_agent();
  auto actors = ctl_json({"actors"});
  auto* before = find(actors, "query", "syn");
  ASSERT_NE(before, nullptr);
  uint64_t old_id = (*before)["id"].u();
  auto r = ctl({"restart", "syn"});
  ASSERT_EQ(r.code, 0) << r.err;
  ASSERT_TRUE(eventually([&] {
    auto now = ctl_json({"actors"});
    auto* q = find(now, "query", "syn");
    return q && (*q)["id"].u() != old_id && (*q)["rows_out"].u() > 0;
  }));
  r = ctl({"suspend", "nosuch"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "outpostctl: no query named nosuch\n");
}

// Cancel stops a query and deletes what the buffer holds of it, and nothing
// else: an agent started again on the same buffer delivers the other
// query's rows and none of the cancelled one's.
TEST_F(InspectorTest, CancelDeletesAQuerysBufferedRowsOnlyAndRestartBringsItBack) {
  write_config(true, "offline");
  pid_t agent = start_agent();
  auto rows_out = [&](const std::string& name) -> int64_t {
    auto actors = ctl_json({"actors"});
    auto* q = find(actors, "query", name);
    return q ? static_cast<int64_t>((*q)["rows_out"].u()) : -1;
  };
  ASSERT_TRUE(eventually([&] { return rows_out("syn") > 200 && rows_out("beat") > 5; }));

  auto r = ctl({"cancel", "syn"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("cancelled syn; ", 0), 0u) << r.out;
  EXPECT_EQ(r.out.find("; 0 buffered"), std::string::npos) << r.out;  // it had rows waiting: offline
  // The query ends; the supervisor lists it as cancelled.
  EXPECT_TRUE(eventually([&] {
    auto actors = ctl_json({"actors"});
    return !find(actors, "query", "syn") && (*find(actors, "supervisor"))["status"]["query"]["syn"]["cancelled"].b;
  }));

  // Restart starts it again; a second cancel deletes what it made meanwhile.
  EXPECT_EQ(ctl_json({"restart", "syn"})["result"].s, "restarted syn");
  auto logged = ctl({"logs", "--json"});
  ASSERT_EQ(logged.code, 0) << logged.err;
  EXPECT_NE(logged.out.find("{\"line\":"), std::string::npos) << logged.out;
  EXPECT_NE(logged.out.find("query syn cancelled by the operator"), std::string::npos) << logged.out;
  ASSERT_TRUE(eventually([&] { return rows_out("syn") > 0; }));
  ASSERT_EQ(ctl({"cancel", "syn"}).code, 0);
  r = ctl({"cancel", "nosuch"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "outpostctl: no query named nosuch\n");

  // What the purges freed, a compaction gives back to the disk; beat's
  // records stay (delivered below).
  r = ctl({"buffer", "compact"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_match(r.out, m, std::regex("compacted the buffer's file: (\\d+) -> (\\d+) bytes\n"))) << r.out;
  EXPECT_LT(std::stoull(m[2]), std::stoull(m[1])) << r.out;
  // The offline link has no connection to make again.
  r = ctl({"link", "reconnect"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "outpostctl: this agent's link is offline: it has no connection\n");

  // The same buffer, delivered by an agent that runs beat only.
  kill(agent, SIGTERM);
  ASSERT_EQ(wait_exit(agent), 0);
  write_config(true, "", "limit: 256MiB", "",
               "  - name: beat\n"
               "    id: 8\n"
               "    source: {type: synthetic, rate: 200, row_size: 16}\n");
  start_agent();
  // Each life of beat begins at Seq 1: the second one's first row comes after
  // everything the first left in the buffer (one lane, delivered in order).
  auto first_rows = [&] {
    std::ifstream in(delivered);
    std::string line;
    int n = 0;
    while (std::getline(in, line)) n += line.find("\"query_id\":8,") != std::string::npos &&
                                        line.find("\"row\":{\"Seq\":1,") != std::string::npos;
    return n;
  };
  ASSERT_TRUE(eventually([&] { return first_rows() == 2; })) << first_rows();
  EXPECT_EQ(delivered_rows(7), 0u);
}

// One HTTP/1.1 request to 127.0.0.1:port; the whole response.
std::string http(uint16_t port, const std::string& method, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "connect failed";
  }
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (::write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) return "write failed";
  // Until the body is in (Content-Length): the server may keep the connection open.
  std::string out;
  char buf[65536];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) {
    out.append(buf, static_cast<size_t>(n));
    size_t end = out.find("\r\n\r\n");
    if (end == std::string::npos) continue;
    std::smatch m;
    std::string head = out.substr(0, end);
    if (!std::regex_search(head, m, std::regex("Content-Length: (\\d+)", std::regex::icase))) continue;
    if (out.size() >= end + 4 + std::stoull(m[1])) break;
  }
  ::close(fd);
  return out;
}

// The same counters for Prometheus: OpenMetrics text over HTTP, well formed,
// with numbers that agree with what outpostctl shows.
TEST_F(InspectorTest, MetricsAreServedAsOpenMetricsThatAgreeWithOutpostctl) {
  inspector_extra = ", metrics: 127.0.0.1:0";
  write_config(false);
  start_agent();
  std::smatch m;
  std::string log_text = slurp(log);
  ASSERT_TRUE(std::regex_search(log_text, m, std::regex("OpenMetrics on http://127.0.0.1:0/metrics \\(port (\\d+)\\)")))
      << log_text;
  auto port = static_cast<uint16_t>(std::stoi(m[1]));
  ASSERT_TRUE(eventually([&] { return delivered_rows(7) > 200; }));

  std::string response = http(port, "GET", "/metrics");
  size_t body_at = response.find("\r\n\r\n");
  ASSERT_NE(body_at, std::string::npos) << response;
  std::string head = response.substr(0, body_at), body = response.substr(body_at + 4);
  EXPECT_EQ(head.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << head;
  EXPECT_NE(head.find("Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"), std::string::npos)
      << head;
  ASSERT_GE(body.size(), 6u);
  EXPECT_EQ(body.substr(body.size() - 6), "# EOF\n");

  // Every line is metadata or a sample; a family's metadata comes once, before its samples.
  std::regex type_line("# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|unknown)");
  std::regex sample(R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-z_]+="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.e+-]+|NaN|[+-]Inf))");
  std::set<std::string> families;
  std::string current;
  std::istringstream lines(body);
  std::map<std::string, double> samples;
  for (std::string line; std::getline(lines, line);) {
    std::smatch f;
    if (line == "# EOF") continue;
    if (std::regex_match(line, f, type_line)) {
      EXPECT_TRUE(families.insert(f[1]).second) << "two TYPE lines for " << f[1];
      current = f[1];
      continue;
    }
    if (line.rfind("# HELP ", 0) == 0) continue;
    ASSERT_TRUE(std::regex_match(line, f, sample)) << line;
    std::string name = f[1];
    EXPECT_TRUE(name == current || name == current + "_total") << name << " under " << current;
    samples[name + std::string(f[2])] = std::stod(f[3]);
  }

  auto actors = ctl_json({"actors"});
  auto* buffer = find(actors, "buffer");
  auto* syn = find(actors, "query", "syn");
  ASSERT_TRUE(buffer && syn);
  std::string syn_labels = "{id=\"" + std::to_string((*syn)["id"].u()) + "\",kind=\"query\",name=\"syn\"}";
  ASSERT_TRUE(samples.count("outpost_actor_rows_out_total" + syn_labels)) << body.substr(0, 2000);
  double rows = samples["outpost_actor_rows_out_total" + syn_labels];
  EXPECT_GT(rows, 0);
  EXPECT_LE(rows, static_cast<double>((*syn)["rows_out"].u()));  // it went on meanwhile
  std::string buffer_id = "{id=\"" + std::to_string((*buffer)["id"].u()) + "\"}";
  EXPECT_EQ(samples["outpost_buffer_limit_bytes" + buffer_id], static_cast<double>((*buffer)["status"]["limit_bytes"].u()));
  EXPECT_TRUE(samples.count("outpost_link_records_delivered" + std::string("{id=\"") +
                            std::to_string((*find(actors, "link"))["id"].u()) + "\"}"))
      << body.substr(0, 2000);

  EXPECT_EQ(http(port, "GET", "/other").rfind("HTTP/1.1 404 ", 0), 0u);
  EXPECT_EQ(http(port, "POST", "/metrics").rfind("HTTP/1.1 405 ", 0), 0u);
}

TEST_F(InspectorTest, ControlIsRefusedUnlessTheConfigurationAllowsIt) {
  write_config(false);
  start_agent();
  auto r = ctl({"suspend", "syn"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("control refused"), std::string::npos) << r.err;
  r = ctl({"log-level", "debug"});
  EXPECT_EQ(r.code, 1);
  // Reading still works.
  EXPECT_EQ(ctl({"status"}).code, 0);
}

TEST_F(InspectorTest, TheSocketIsTheAgentUsersOnly) {
  write_config(true);
  start_agent();
  struct stat st;
  ASSERT_EQ(::stat(socket.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  if (geteuid() != 0) GTEST_SKIP() << "connecting as another user needs root";
  auto* nobody = getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  fs::permissions(tmp.path(""), fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
  auto r = ctl({"status"}, static_cast<int>(nobody->pw_uid));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("permission denied on " + socket.string()), std::string::npos) << r.err;
}

TEST_F(InspectorTest, AStaleSocketIsReplacedALiveOneRefusedAndNoAgentIsNamed) {
  auto r = ctl({"status"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("no agent is running with its inspector at " + socket.string()), std::string::npos) << r.err;

  {  // a socket file nobody listens on, as an agent killed with -9 leaves it
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strcpy(a.sun_path, socket.c_str());
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ::close(fd);
  }
  write_config(false);
  start_agent();
  EXPECT_EQ(ctl({"status"}).code, 0);

  // A second agent (its own buffer) with the same socket runs without an inspector.
  auto first_log = log;
  log = tmp.path("agent2.log");
  std::ofstream(tmp.path("agent2.yaml")) << "buffer: {dir: " << tmp.path("buf2").string() << "}\n"
                                         << "link: {type: offline}\nlog: {file: " << log.string() << "}\n"
                                         << "inspector: {socket: " << socket.string() << "}\nqueries: []\n";
  config = tmp.path("agent2.yaml");
  start_agent();
  EXPECT_NE(slurp(log).find("a running agent serves it"), std::string::npos) << slurp(log);
  EXPECT_EQ(ctl({"status"}).code, 0);  // still the first one's
}

TEST_F(InspectorTest, ATraceHoldsTheMessagesFromQueryToBufferToLinkAsTraceEventJson) {
  write_config(false);
  start_agent();
  ASSERT_TRUE(eventually([&] { return delivered_rows(7) > 0; }));
  auto out = tmp.path("trace.json");
  auto r = ctl({"trace", "--count", "300", "--seconds", "20", "-o", out.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  Json trace = Json::parse(slurp(out));
  EXPECT_EQ(trace["otherData"]["ended_by"].s, "count");
  std::map<uint64_t, std::string> tracks;  // tid -> name
  std::map<uint64_t, std::pair<const Json*, const Json*>> flows;  // id -> (start, end)
  size_t slices = 0;
  for (auto& e : trace["traceEvents"].a) {
    if (e["ph"].s == "M") tracks[e["tid"].u()] = e["args"]["name"].s;
    if (e["ph"].s == "X") {
      ++slices;
      EXPECT_GE(e["dur"].n, 0);
    }
    if (e["ph"].s == "s") flows[e["id"].u()].first = &e;
    if (e["ph"].s == "f") flows[e["id"].u()].second = &e;
  }
  EXPECT_EQ(slices, 300u);
  auto name = [&](const Json* e) { return tracks[(*e)["tid"].u()]; };
  bool query_to_buffer = false, buffer_to_link = false;
  for (auto& [id, f] : flows) {
    ASSERT_TRUE(f.first && f.second) << "flow " << id << " has one end";
    EXPECT_LE((*f.first)["ts"].n, (*f.second)["ts"].n);
    auto from = name(f.first), to = name(f.second);
    query_to_buffer |= (*f.first)["name"].s == "append" && from.rfind("query syn", 0) == 0 && to.rfind("buffer", 0) == 0;
    buffer_to_link |= (*f.first)["name"].s == "committed" && from.rfind("buffer", 0) == 0 && to.rfind("link", 0) == 0;
  }
  EXPECT_TRUE(query_to_buffer) << slurp(out).substr(0, 4000);
  EXPECT_TRUE(buffer_to_link) << slurp(out).substr(0, 4000);
  // An append carries its record's size, and no payload unless asked for.
  bool sized = false;
  for (auto& e : trace["traceEvents"].a) {
    if (e["ph"].s != "X") continue;
    EXPECT_FALSE(e["args"].has("payload"));
    sized |= e["name"].s == "append" && e["args"]["bytes"].u() > 0;
  }
  EXPECT_TRUE(sized) << slurp(out).substr(0, 4000);

  // Asked for, the rows come along: the synthetic query's rows, as JSON lines.
  r = ctl({"trace", "--count", "300", "--seconds", "20", "--payloads", "-o", out.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  trace = Json::parse(slurp(out));
  bool rows = false;
  for (auto& e : trace["traceEvents"].a)
    if (e["ph"].s == "X" && e["name"].s == "append" && e["args"].has("payload"))
      rows |= e["args"]["payload"].s.find("\"Data\":\"xxxx") != std::string::npos &&
              e["args"]["payload"].s.size() <= 4096 + 8;
  EXPECT_TRUE(rows) << slurp(out).substr(0, 4000);

  // A file whose close fails (NFS, FUSE) is a trace not written, and said so.
  FaultyFs faulty;
  if (!faulty.skip_reason().empty()) {
    std::cout << "not tried: a trace to a file whose close fails (" << faulty.skip_reason() << ")\n";
    return;
  }
  r = ctl({"trace", "--count", "10", "--seconds", "20", "-o", faulty.path("trace.json")});
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("cannot write " + faulty.path("trace.json") + ": Input/output error"), std::string::npos)
      << r.err;
}

TEST_F(InspectorTest, BackpressureAndAnOfflineLinkAreWarnedAbout) {
  // A buffer at its limit with nothing to drain it, and a collector that is not there.
  write_config(false, "{type: collector, address: 127.0.0.1:1, insecure: true, agent_id: a1}",
               "limit: 1MiB, pending_budget: 1MiB", "backpressure_ms: 200, link_offline_ms: 200",
               "  - name: syn\n    id: 7\n    source: {type: synthetic, rate: 0, row_size: 1024}\n");
  start_agent();
  std::set<std::string> kinds;
  ASSERT_TRUE(eventually([&] {
    kinds.clear();
    for (auto& w : ctl_json({"warnings"}).a) kinds.insert(w["kind"].s + ":" + w["actor_name"].s);
    return kinds.count("backpressure:query syn") && kinds.count("link-offline:net-link");
  })) << ctl({"warnings"}).out;
  auto r = ctl({"warnings"});
  EXPECT_NE(r.out.find("waiting for space for"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Connection refused"), std::string::npos) << r.out;
}

// A query suspended while its sensor's events pile up loses those past its
// queue: the events-dropped warning names it, with the count.
TEST_F(InspectorTest, EventsASuspendedQueryMissedAreWarnedAbout) {
  auto dir = tmp.path("watched");
  fs::create_directories(dir);
  write_config(true, "", "limit: 256MiB", "",
               "  - name: files\n"
               "    id: 9\n"
               "    source: {type: vql, query: \"SELECT * FROM watch_directory(path='" + dir.string() + "')\"}\n");
  start_agent();
  int n = 0;
  ASSERT_TRUE(eventually([&] {  // the sensor is up once a file's event is delivered
    std::ofstream(dir / ("early" + std::to_string(n++)));
    return delivered_rows(9) > 0;
  }));
  EXPECT_TRUE(ctl_json({"warnings"}).a.empty());
  ASSERT_EQ(ctl({"suspend", "files"}).code, 0);
  for (int i = 0; i < 3000; ++i) std::ofstream(dir / ("f" + std::to_string(i)));  // over the 1,000 a queue holds
  ASSERT_EQ(ctl({"resume", "files"}).code, 0);
  std::string evidence;
  ASSERT_TRUE(eventually([&] {
    for (auto& w : ctl_json({"warnings"}).a)
      if (w["kind"].s == "events-dropped" && w["actor_name"].s == "query files") evidence = w["evidence"].s;
    return !evidence.empty();
  }));
  EXPECT_NE(evidence.find("event(s) lost because a subscriber's queue was full"), std::string::npos) << evidence;
  auto actors = ctl_json({"actors"});
  EXPECT_GT((*find(actors, "query", "files"))["dropped"].u(), 0u);
}

TEST_F(InspectorTest, AQueryFailingOverAndOverIsWarnedAbout) {
  write_config(false, "", "limit: 256MiB", "restarts: 2",
               "  - name: flaky\n    id: 7\n    source: {type: synthetic, rate: 1000, fail_after: 5}\n");
  start_agent();
  ASSERT_TRUE(eventually([&] {
    for (auto& w : ctl_json({"warnings"}).a)
      if (w["kind"].s == "restarting" && w["actor_name"].s == "query flaky") return true;
    return false;
  })) << ctl({"warnings"}).out;
}

}  // namespace
}  // namespace outpost

namespace outpost {
namespace {

TEST_F(InspectorTest, TheAgentShutsDownCleanlyWithAClientConnected) {
  write_config(false);
  pid_t agent = start_agent();
  fs::path out = tmp.path("follow.out");
  pid_t follower = started.add(spawn({OUTPOSTCTL, "--socket", socket.string(), "logs", "-f"}, out));
  ASSERT_TRUE(eventually([&] { return slurp(out).find("agent running") != std::string::npos; })) << slurp(out);
  kill(agent, SIGTERM);
  EXPECT_EQ(wait_exit(agent), 0) << slurp(log);
  EXPECT_EQ(wait_exit(follower), 1);
  EXPECT_NE(slurp(out).find("outpostctl: the agent closed the connection"), std::string::npos) << slurp(out);
  EXPECT_FALSE(fs::exists(socket));
}

}  // namespace
}  // namespace outpost

namespace outpost {
namespace {

// A command's output (stdout), and whether it exited 0.
std::pair<bool, std::string> sh(const std::string& command) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (!p) return {false, ""};
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  return {::pclose(p) == 0, out};
}

TEST_F(InspectorTest, TopInATerminalShowsTheColumnsAndReactsToKeys) {
  write_config(false);
  start_agent();
  // A tmux server of this test's own, so nothing else's sessions are touched.
  std::string tmux = "tmux -L outpost-top-" + std::to_string(::getpid()) + " ";
  struct Server {
    std::string tmux;
    ~Server() { sh(tmux + "kill-server 2>/dev/null"); }
  } server{tmux};
  ASSERT_TRUE(sh(tmux + "new-session -d -s top -x 160 -y 40 '" + std::string(OUTPOSTCTL) + " --socket " +
                 socket.string() + " top --interval 300'")
                  .first);
  auto screen = [&] { return sh(tmux + "capture-pane -p -t top").second; };
  auto shows = [&](const std::string& text) { return screen().find(text) != std::string::npos; };
  ASSERT_TRUE(eventually([&] { return shows("MAILBOX") && shows("MSG/S") && shows("query syn") && shows("sort: mailbox"); }))
      << screen();
  EXPECT_TRUE(shows("buffer  ")) << screen();
  EXPECT_TRUE(shows("link    running")) << screen();
  sh(tmux + "send-keys -t top r");
  ASSERT_TRUE(eventually([&] { return shows("sort: rate"); })) << screen();
  sh(tmux + "send-keys -t top / b e a t Enter");
  ASSERT_TRUE(eventually([&] { return shows("filter: beat ") && shows("query beat") && !shows("query syn"); }))
      << screen();
  sh(tmux + "send-keys -t top q");
  ASSERT_TRUE(eventually([&] { return !sh(tmux + "has-session -t top 2>/dev/null").first; })) << screen();
}

TEST_F(InspectorTest, TopWithoutATerminalPrintsPlainFrames) {
  write_config(false);
  start_agent();
  auto r = ctl({"top", "--iterations", "2", "--interval", "200", "--sort", "id"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.find("\x1b"), std::string::npos);  // no escape sequences
  size_t first = r.out.find("outpost top - agent"), second = r.out.find("outpost top - agent", first + 1);
  ASSERT_NE(second, std::string::npos) << r.out;
  EXPECT_NE(r.out.find("query syn", second), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sort: id"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace outpost
