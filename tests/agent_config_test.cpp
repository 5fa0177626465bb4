#include "actors/agent_config.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "tests/temp_dir.hpp"

namespace outpost {
namespace {

using outpost::testing::TempDir;
using Case = std::pair<std::string, std::string>;  // input, exact error message

// Every field, one per line: configs compare by this, and a failure shows the difference.
std::string dump(const AgentConfig& c) {
  std::ostringstream out;
  out << "buffer: dir=" << c.buffer.dir.string() << " limit=" << c.buffer.limit_bytes
      << " sync=" << (c.buffer.sync == persistence::SyncPolicy::full ? "full" : "none")
      << " compact_threshold=" << c.buffer.compact_threshold_bytes
      << " map_size=" << c.buffer.map_size_bytes << "\n";
  out << "link: " << (c.link.kind == LinkSpec::Kind::file ? "file" : "offline") << " "
      << c.link.path << "\n";
  out << "log: level=" << c.log.level << " file=" << c.log.file << "\n";
  auto& w = c.inspector.warnings;
  out << "inspector: socket=" << c.inspector.socket << " control=" << c.inspector.control
      << " warnings=" << w.mailbox_backlog.count() << "/" << w.slow_handler.count() << "/" << w.backpressure.count()
      << "/" << w.link_offline.count() << "/" << w.restarts << "/" << w.restart_window.count() << "/" << w.recent.count()
      << " metrics=" << c.inspector.metrics << " metrics_remote=" << c.inspector.metrics_remote << "\n";
  for (const auto& q : c.queries) {
    const auto& s = q.source;
    out << "query: name=" << q.name << " id=" << q.id << " artifact=" << q.artifact
        << " lane=" << schemas::lane_name(q.lane) << " batch=" << q.batch_rows << "/"
        << q.batch_bytes << "/" << q.batch_delay.count() << "ms max_in_flight=" << q.max_in_flight
        << "\n"
        << "  source: " << static_cast<int>(s.kind) << " rate=" << s.rate << " row_size=" << s.row_size
        << " max_rows=" << s.max_rows << " fail_after=" << s.fail_after << " period=" << s.period.count()
        << "ms query=" << s.query << " name=" << s.name << "\n";
    for (auto& [k, v] : s.parameters) out << "  parameter " << k << "=" << v << "\n";
  }
  return out.str();
}

std::string parse_error(const std::string& yaml) {
  try {
    parse_agent_config(yaml, "agent.yaml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

std::string override_error(const std::string& assignment, AgentConfig config = {}) {
  try {
    apply_override(config, assignment);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

void expect_parse_errors(const std::vector<Case>& cases) {
  for (const auto& [yaml, message] : cases) {
    SCOPED_TRACE(yaml);
    EXPECT_EQ(parse_error(yaml), message);
  }
}

TEST(AgentConfig, Defaults) {
  AgentConfig c;
  EXPECT_EQ(c.buffer.dir, "outpost-data/buffer");
  EXPECT_EQ(c.buffer.limit_bytes, 1ull << 30);
  EXPECT_EQ(c.buffer.sync, persistence::SyncPolicy::full);
  EXPECT_EQ(c.buffer.compact_threshold_bytes, 64ull << 20);
  EXPECT_EQ(c.link.kind, LinkSpec::Kind::file);
  EXPECT_EQ(c.link.path, "outpost-data/delivered.jsonl");
  EXPECT_EQ(c.log.level, "info");
  EXPECT_EQ(c.log.file, "");
  EXPECT_TRUE(c.queries.empty());

  QuerySpec q;
  EXPECT_EQ(q.id, 0u);
  EXPECT_EQ(q.lane, schemas::Lane::EVENTS);
  EXPECT_EQ(q.source.kind, SourceSpec::Kind::clock);
  EXPECT_EQ(q.source.period, std::chrono::milliseconds(1000));
  EXPECT_EQ(q.source.row_size, 256u);
  EXPECT_EQ(q.batch_rows, 1000u);
  EXPECT_EQ(q.batch_bytes, 1u << 20);
  EXPECT_EQ(q.batch_delay, std::chrono::milliseconds(5));
  EXPECT_EQ(q.max_in_flight, 2u);

  // Whatever is left out keeps its default; no queries is fine.
  for (const char* yaml :
       {"", "# nothing\n", "{}", "buffer:\nlink: {}\nqueries: []\n", "queries:\n"}) {
    SCOPED_TRACE(yaml);
    EXPECT_EQ(dump(parse_agent_config(yaml, "agent.yaml")), dump(c));
  }
}

TEST(AgentConfig, FullExample) {
  const char* yaml = R"(
buffer: {dir: /var/lib/outpost/buffer, limit: 64MiB, sync: none, compact_threshold: 10kB}
link: {type: file, path: /tmp/out.jsonl}
log: {level: debug, file: /var/log/outpost.log}
queries:
  - name: proc.events
    id: 7
    artifact: Linux.Events.Process
    lane: control
    source: {type: synthetic, rate: 2.5, row_size: 1KiB, max_rows: 100, fail_after: 50}
    batch: {rows: 10, bytes: 4096, delay_ms: 0}
    max_in_flight: 64
  - name: tick
    lane: uploads
    source: {type: clock, period_ms: 250}
    batch: {delay_ms: 20}
)";
  EXPECT_EQ(
      dump(parse_agent_config(yaml, "agent.yaml")),
      "buffer: dir=/var/lib/outpost/buffer limit=67108864 sync=none compact_threshold=10000 "
      "map_size=0\n"
      "link: file /tmp/out.jsonl\n"
      "log: level=debug file=/var/log/outpost.log\n"
      "inspector: socket=outpost-data/inspector.sock control=0 warnings=10000/500/60000/300000/3/600000/600000 metrics= "
      "metrics_remote=0\n"
      "query: name=proc.events id=7 artifact=Linux.Events.Process lane=control batch=10/4096/0ms "
      "max_in_flight=64\n"
      "  source: 0 rate=2.5 row_size=1024 max_rows=100 fail_after=50 period=1000ms query= name=\n"
      "query: name=tick id=2 artifact=tick lane=uploads batch=1000/1048576/20ms max_in_flight=2\n"
      "  source: 1 rate=0 row_size=256 max_rows=0 fail_after=0 period=250ms query= name=\n");
}

TEST(AgentConfig, LinkForms) {
  auto link = [](const std::string& yaml) { return parse_agent_config(yaml, "agent.yaml").link; };
  EXPECT_EQ(link("link: {type: offline}").kind, LinkSpec::Kind::offline);
  EXPECT_EQ(link("link: offline").kind, LinkSpec::Kind::offline);
  EXPECT_EQ(link("link: file").path, "outpost-data/delivered.jsonl");
  EXPECT_EQ(link("link: file:/x/y.jsonl").path, "/x/y.jsonl");
  EXPECT_EQ(link("link: {path: /z.jsonl}").path, "/z.jsonl");  // the type stays file
}

TEST(AgentConfig, CollectorLink) {
  auto c = parse_agent_config(
      "link: {type: collector, address: \"collector.example:4751\", ca: ca.pem, cert: a.pem, "
      "key: a.key, backoff_initial_ms: 10, backoff_cap_ms: 500, max_delay_ms: 200}",
      "agent.yaml");
  EXPECT_EQ(c.link.kind, LinkSpec::Kind::collector);
  EXPECT_EQ(c.link.host, "collector.example");
  EXPECT_EQ(c.link.port, 4751);
  EXPECT_EQ(c.link.ca, "ca.pem");
  EXPECT_EQ(c.link.backoff_cap.count(), 500);
  EXPECT_EQ(c.link.max_delay.count(), 200);
  EXPECT_EQ(parse_agent_config("link: {type: collector}", "agent.yaml").link.max_delay.count(), 0);
  EXPECT_NO_THROW(check_agent_config(c, "agent.yaml"));
  EXPECT_TRUE(c.link.alternates.empty());
  // Several collectors: the first is the address, the others are tried in turn.
  auto several = parse_agent_config("link: {type: collector, addresses: [\"c1:4750\", \"c2:4751\", \"c3:4752\"]}",
                                    "agent.yaml");
  EXPECT_EQ(several.link.host, "c1");
  EXPECT_EQ(several.link.port, 4750);
  using HostPort = std::pair<std::string, uint16_t>;
  EXPECT_EQ(several.link.alternates, (std::vector<HostPort>{{"c2", 4751}, {"c3", 4752}}));
  // TLS material is required unless TLS is turned off on purpose.
  auto bare = parse_agent_config("link: {type: collector}", "agent.yaml");
  try {
    check_agent_config(bare, "agent.yaml");
    ADD_FAILURE() << "a collector link without certificates was accepted";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "agent.yaml: link: a collector link needs ca, cert and key (or insecure: "
                           "true, which turns TLS off)");
  }
  apply_override(bare, "link.insecure=true");
  EXPECT_NO_THROW(check_agent_config(bare, "agent.yaml"));
}

TEST(AgentConfig, IdsDefaultToPositionAndArtifactsToNames) {
  auto c = parse_agent_config("queries: [{name: a}, {name: b, id: 10}, {name: c, artifact: X.Y}]",
                              "agent.yaml");
  ASSERT_EQ(c.queries.size(), 3u);
  EXPECT_EQ(c.queries[0].id, 1u);
  EXPECT_EQ(c.queries[1].id, 10u);
  EXPECT_EQ(c.queries[2].id, 3u);
  EXPECT_EQ(c.queries[0].artifact, "a");
  EXPECT_EQ(c.queries[2].artifact, "X.Y");
}

TEST(AgentConfig, VqlArtifactSourcesAndTheEventTable) {
  auto c = parse_agent_config(R"Y(
event_table:
  - artifact: Linux.Events.ProcessCreation
    parameters: {period: 2}
  - {artifact: Linux.Events.ProcessCreation, name: procs2}
queries:
  - name: custom
    id: 7
    source: {type: vql, query: "SELECT * FROM info()", parameters: {Who: me, N: 3}}
  - name: users
    lane: results
    source: {type: artifact, name: Linux.Sys.Users}
)Y",
                              "agent.yaml");
  ASSERT_EQ(c.queries.size(), 4u);
  EXPECT_EQ(c.queries[0].source.kind, SourceSpec::Kind::vql);
  EXPECT_EQ(c.queries[0].source.query, "SELECT * FROM info()");
  EXPECT_EQ(c.queries[0].source.parameters,
            (std::vector<std::pair<std::string, std::string>>{{"Who", "me"}, {"N", "3"}}));
  EXPECT_EQ(c.queries[1].source.kind, SourceSpec::Kind::artifact);
  EXPECT_EQ(c.queries[1].source.name, "Linux.Sys.Users");
  EXPECT_EQ(c.queries[1].lane, schemas::Lane::RESULTS);
  // Event-table entries follow, on the events lane, with the next ids.
  EXPECT_EQ(c.queries[2].name, "Linux.Events.ProcessCreation");
  EXPECT_EQ(c.queries[2].artifact, "Linux.Events.ProcessCreation");
  EXPECT_EQ(c.queries[2].source.kind, SourceSpec::Kind::artifact);
  EXPECT_EQ(c.queries[2].source.parameters, (std::vector<std::pair<std::string, std::string>>{{"period", "2"}}));
  EXPECT_EQ(c.queries[2].lane, schemas::Lane::EVENTS);
  EXPECT_EQ(c.queries[2].id, 8u);
  EXPECT_EQ(c.queries[3].name, "procs2");
  EXPECT_EQ(c.queries[3].id, 9u);
}

TEST(AgentConfig, DefaultYamlIsTheDefaultsPlusAHeartbeatAndTwoEventArtifacts) {
  std::string yaml = default_agent_config_yaml();
  EXPECT_NE(yaml.find("# "), std::string::npos);
  AgentConfig expected;
  QuerySpec heartbeat;
  heartbeat.name = heartbeat.artifact = "heartbeat";
  heartbeat.id = 1;
  heartbeat.source.kind = SourceSpec::Kind::vql;
  heartbeat.source.query = "SELECT * FROM clock(period=1)";
  QuerySpec processes;
  processes.name = processes.artifact = processes.source.name = "Linux.Events.ProcessCreation";
  processes.id = 2;
  processes.source.kind = SourceSpec::Kind::artifact;
  QuerySpec drives = processes;
  processes.source.parameters = {{"Period", "1"}};
  drives.name = drives.artifact = drives.source.name = "Linux.Detection.Thumbdrives.List";
  drives.id = 3;
  expected.queries = {heartbeat, processes, drives};
  EXPECT_EQ(dump(parse_agent_config(yaml, "agent.yaml")), dump(expected));
}

TEST(AgentConfig, LoadsFiles) {
  TempDir dir;
  std::string path = dir.path("agent.yaml").string();
  std::ofstream(path) << "log: {level: warn}\nqueries: [{name: q, lane: results}]\n";
  auto c = load_agent_config(path);
  EXPECT_EQ(c.log.level, "warn");
  ASSERT_EQ(c.queries.size(), 1u);
  EXPECT_EQ(c.queries[0].lane, schemas::Lane::RESULTS);

  std::ofstream(path) << "log: {level: loud}\n";
  auto error = [](const std::string& p) {
    try {
      load_agent_config(p);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_EQ(
      error(path),
      path +
          ": log.level: expected trace, debug, info, warn, error, critical or off, got \"loud\"");
  EXPECT_EQ(error(dir.path("missing.yaml").string()),
            dir.path("missing.yaml").string() + ": cannot read: No such file or directory");
  EXPECT_EQ(error(dir.root().string()), dir.root().string() + ": cannot read: is a directory");
}

TEST(AgentConfig, SyntaxErrorsGiveLineAndColumn) {
  expect_parse_errors({
      {"log:\n  level: info\n    file: x\n", "agent.yaml: line 3, column 9: illegal map value"},
      {"buffer: {dir: x, limit: 5: 6}\n",
       "agent.yaml: line 1, column 26: end of map flow not found"},
      // an unclosed bracket is noticed where the input ends
      {"log:\n  level: info\nbuffer: {dir: x\n",
       "agent.yaml: line 4, column 1: end of map flow not found"},
      {"queries:\n  - name: a\n    lane: [events\n",
       "agent.yaml: line 4, column 1: end of sequence flow not found"},
  });
}

TEST(AgentConfig, StructureErrors) {
  expect_parse_errors({
      {"- a", "agent.yaml: expected a map, got a list"},
      {"just text", "agent.yaml: expected a map, got \"just text\""},
      {"[a]: 1", "agent.yaml: expected a key, got a list"},
      {"bufer: {}", "agent.yaml: bufer: unknown key; allowed: buffer, link, log, inspector, artifacts, vql, sensors, event_table, queries"},
      {"buffer: {size: 1}",
       "agent.yaml: buffer.size: unknown key; allowed: dir, limit, sync, compact_threshold, pending_budget, commit_interval_ms"},
      {"log: {lvl: info}", "agent.yaml: log.lvl: unknown key; allowed: level, file"},
      {"link: {type: file, dir: x}",
       "agent.yaml: link.dir: unknown key for a file link; allowed: type, path"},
      {"link: {type: offline, path: x}",
       "agent.yaml: link.path: unknown key for an offline link; allowed: type"},
      {"queries: [{name: a, sorce: {}}]",
       "agent.yaml: queries[0].sorce: unknown key; allowed: name, id, artifact, lane, source, "
       "batch, "
       "max_in_flight"},
      {"queries: [{name: a, batch: {row: 1}}]",
       "agent.yaml: queries[0].batch.row: unknown key; allowed: rows, bytes, delay_ms"},
      {"queries: [{name: a, source: {rate: 5}}]",
       "agent.yaml: queries[0].source.rate: unknown key for a clock source; allowed: type, "
       "period_ms"},
      {"queries: [{name: a, source: {type: synthetic, period_ms: 5}}]",
       "agent.yaml: queries[0].source.period_ms: unknown key for a synthetic source; allowed: "
       "type, rate, "
       "row_size, max_rows, fail_after"},
      {"buffer: {dir: a, dir: b}", "agent.yaml: buffer.dir: duplicate key"},
      {"buffer: 5", "agent.yaml: buffer: expected a map, got \"5\""},
      {"log: [info]", "agent.yaml: log: expected a map, got a list"},
      {"link: ftp:x",
       "agent.yaml: link: expected a map, file, file:PATH, host or offline, got \"ftp:x\""},
      {"queries: {name: a}", "agent.yaml: queries: expected a list of queries, got a map"},
      {"queries: [heartbeat]", "agent.yaml: queries[0]: expected a map, got \"heartbeat\""},
      {"queries: [{name: a, batch: 5}]", "agent.yaml: queries[0].batch: expected a map, got \"5\""},
  });
}

TEST(AgentConfig, ValueErrors) {
  expect_parse_errors({
      // the example of the header, at the third query
      {"queries:\n- {name: a}\n- {name: b}\n- {name: c, source: {type: synthetic, rate: fast}}",
       "agent.yaml: queries[2].source.rate: expected a non-negative number, got \"fast\""},
      {"queries: [{name: a, source: {type: synthetic, rate: -1}}]",
       "agent.yaml: queries[0].source.rate: expected a non-negative number, got \"-1\""},
      {"queries: [{name: a, source: {type: synthetic, rate: .inf}}]",
       "agent.yaml: queries[0].source.rate: expected a non-negative number, got \".inf\""},
      {"queries: [{name: a, source: {type: synthetic, rate: }}]",
       "agent.yaml: queries[0].source.rate: expected a non-negative number, got nothing"},
      {"queries: [{name: a, source: {type: synthetic, max_rows: 1.5}}]",
       "agent.yaml: queries[0].source.max_rows: expected a non-negative integer, got \"1.5\""},
      {"queries: [{name: a, source: {type: synthetic, row_size: big}}]",
       "agent.yaml: queries[0].source.row_size: expected a size such as 1000, 10kB, 64MiB or 1GiB, "
       "got \"big\""},
      {"queries: [{name: a, source: {type: vql}}]", "agent.yaml: queries[0].source.query: missing; a vql source needs one"},
      {"queries: [{name: a, source: {type: sql}}]",
       "agent.yaml: queries[0].source.type: expected clock, synthetic, vql, artifact or host, got \"sql\""},
      {"queries: [{name: a, source: {type: artifact, query: x}}]",
       "agent.yaml: queries[0].source.query: unknown key for a artifact source; allowed: type, name, parameters"},
      {"queries: [{name: a, source: {type: vql, query: x, parameters: [1]}}]",
       "agent.yaml: queries[0].source.parameters: expected a map of parameters, got a list"},
      {"event_table: [{parameters: {a: 1}}]",
       "agent.yaml: event_table[0].artifact: missing; every entry names an event artifact"},
      {"queries: [{name: X.Y}]\nevent_table: [{artifact: X.Y}]",
       "agent.yaml: event_table[0]: name \"X.Y\" is already used by a query (give this entry a name)"},
      {"queries: [{name: a, source: {period_ms: 0}}]",
       "agent.yaml: queries[0].source.period_ms: expected an integer from 1 to 86400000, got "
       "\"0\""},
      {"queries: [{name: a, id: 0}]",
       "agent.yaml: queries[0].id: expected an integer from 1 to 4294967295, got \"0\""},
      {"queries: [{name: a, id: -3}]",
       "agent.yaml: queries[0].id: expected an integer from 1 to 4294967295, got \"-3\""},
      // Ids from 2^32 on are the collector's flow ids.
      {"queries: [{name: a, id: 4294967296}]",
       "agent.yaml: queries[0].id: expected an integer from 1 to 4294967295, got \"4294967296\""},
      {"queries: [{name: a, lane: urgent}]",
       "agent.yaml: queries[0].lane: expected control, events, results or uploads, got \"urgent\""},
      {"queries: [{name: a, max_in_flight: 0}]",
       "agent.yaml: queries[0].max_in_flight: expected an integer from 1 to 64, got \"0\""},
      {"queries: [{name: a, max_in_flight: 65}]",
       "agent.yaml: queries[0].max_in_flight: expected an integer from 1 to 64, got \"65\""},
      {"queries: [{name: a, batch: {rows: 0}}]",
       "agent.yaml: queries[0].batch.rows: expected a positive integer, got \"0\""},
      {"queries: [{name: a, batch: {bytes: 0}}]",
       "agent.yaml: queries[0].batch.bytes: expected a positive size, got \"0\""},
      {"queries: [{name: a, batch: {delay_ms: 1s}}]",
       "agent.yaml: queries[0].batch.delay_ms: expected an integer from 0 to 86400000, got \"1s\""},
      {"buffer: {limit: lots}",
       "agent.yaml: buffer.limit: expected a size such as 1000, 10kB, 64MiB or 1GiB, got \"lots\""},
      {"buffer: {limit: 0}", "agent.yaml: buffer.limit: expected a positive size, got \"0\""},
      {"buffer: {limit: 99999999TiB}",
       "agent.yaml: buffer.limit: expected a size below 16EiB, got \"99999999TiB\""},
      // Beyond any map the process could have (mdb_env_open failed with exit 1).
      {"buffer: {limit: 100000TiB}",
       "agent.yaml: buffer.limit: expected a size up to 16TiB (the buffer maps three times its limit "
       "into memory), got \"100000TiB\""},
      {"buffer: {limit: 16385GiB}",
       "agent.yaml: buffer.limit: expected a size up to 16TiB (the buffer maps three times its limit "
       "into memory), got \"16385GiB\""},
      // A row that no record could hold (it restarted forever on bad_alloc).
      {"queries: [{name: a, source: {type: synthetic, row_size: 1TiB}}]",
       "agent.yaml: queries[0].source.row_size: expected a size up to 4032KiB (a row must fit in one record), "
       "got \"1TiB\""},
      {"queries: [{name: a, source: {type: synthetic, row_size: 4128769}}]",
       "agent.yaml: queries[0].source.row_size: expected a size up to 4032KiB (a row must fit in one record), "
       "got \"4128769\""},
      {"buffer: {sync: sometimes}",
       "agent.yaml: buffer.sync: expected full or none, got \"sometimes\""},
      {"buffer: {dir: \"\"}", "agent.yaml: buffer.dir: expected a non-empty path, got \"\""},
      {"buffer: {dir: {a: 1}}", "agent.yaml: buffer.dir: expected a non-empty path, got a map"},
      {"link: {type: ftp}", "agent.yaml: link.type: expected file, offline, collector or host, got \"ftp\""},
      {"link: {type: collector, address: nope}",
       "agent.yaml: link.address: expected host:port, such as 127.0.0.1:4750, got \"nope\""},
      {"link: {type: collector, address: \"h:70000\"}",
       "agent.yaml: link.address: expected host:port, such as 127.0.0.1:4750, got \"h:70000\""},
      {"link: {type: collector, addresses: []}",
       "agent.yaml: link.addresses: expected a list of host:port, such as [10.0.0.1:4750, 10.0.0.2:4750], got a list"},
      {"link: {type: collector, addresses: [\"a:1\", nope]}",
       "agent.yaml: link.addresses[1]: expected host:port, such as 127.0.0.1:4750, got \"nope\""},
      {"link: {type: collector, insecure: maybe}",
       "agent.yaml: link.insecure: expected true or false, got \"maybe\""},
      {"link: {type: collector, path: x}",
       "agent.yaml: link.path: unknown key for a collector link; allowed: type, address, addresses, "
       "server_name, ca, cert, key, insecure, agent_id, backoff_initial_ms, backoff_cap_ms, max_delay_ms"},
      {"log: {level: loud}",
       "agent.yaml: log.level: expected trace, debug, info, warn, error, critical or off, got "
       "\"loud\""},
      {"log: {file: [a]}", "agent.yaml: log.file: expected a string, got a list"},
  });
}

TEST(AgentConfig, BoundsThemselvesAreAccepted) {
  auto c = parse_agent_config("buffer: {limit: 16TiB}\n"
                              "queries: [{name: a, source: {type: synthetic, row_size: 4032KiB}}]",
                              "agent.yaml");
  EXPECT_EQ(c.buffer.limit_bytes, 16ull << 40);
  EXPECT_EQ(c.queries.at(0).source.row_size, 4032ull << 10);
}

TEST(AgentConfig, QueryErrors) {
  const std::string name_rule = "expected a name of letters, digits, '_', '.' and '-', got ";
  expect_parse_errors({
      {"queries: [{id: 3}]", "agent.yaml: queries[0].name: missing; every query needs a name"},
      {"queries: [{name: a}, ~]", "agent.yaml: queries[1].name: missing; every query needs a name"},
      {"queries: [{name: a b}]", "agent.yaml: queries[0].name: " + name_rule + "\"a b\""},
      {"queries: [{name: \"\"}]", "agent.yaml: queries[0].name: " + name_rule + "\"\""},
      {"queries: [{name: a, artifact: x/y}]",
       "agent.yaml: queries[0].artifact: " + name_rule + "\"x/y\""},
      {"queries: [{name: a}, {name: b}, {name: a}]",
       "agent.yaml: queries[2].name: name \"a\" is already used by queries[0]"},
      {"queries: [{name: a, id: 5}, {name: b, id: 5}]",
       "agent.yaml: queries[1].id: id 5 is already used by queries[0]"},
      {"queries: [{name: a}, {name: b, id: 1}]",
       "agent.yaml: queries[1].id: id 1 is already used by queries[0]"},
      {"queries: [{name: a, id: 2}, {name: b}]",
       "agent.yaml: queries[1].id: id 2 is already used by queries[0] (a query without an id gets "
       "its "
       "position, 1..N)"},
      // An implicit id is taken by a later explicit one, far apart.
      {"queries: [{name: a}, {name: b}, {name: c}, {name: d, id: 1}]",
       "agent.yaml: queries[3].id: id 1 is already used by queries[0]"},
      {"queries: [{name: a}, {name: b}, {name: c}, {name: b, id: 9}]",
       "agent.yaml: queries[3].name: name \"b\" is already used by queries[1]"},
      // Names are unique across the queries and the event table.
      {"event_table: [{artifact: X.Y}, {artifact: X.Y}]",
       "agent.yaml: event_table[1]: name \"X.Y\" is already used by event_table[0] (give this entry a name)"},
      {"event_table: [{artifact: X.Y, name: a}, {artifact: Z, name: a}]",
       "agent.yaml: event_table[1]: name \"a\" is already used by event_table[0]"},
      // Event-table entries take the ids after the queries', never a flow id.
      {"queries: [{name: a, id: 4294967294}]\nevent_table: [{artifact: X}, {artifact: Y}]",
       "agent.yaml: event_table[1]: no id left below 4294967296 for this entry (the queries' ids reach "
       "4294967295)"},
  });
  // Different names, and ids given, are fine.
  auto c = parse_agent_config("queries: [{name: a, id: 2}, {name: b, id: 1}]\n"
                              "event_table: [{artifact: X.Y}, {artifact: X.Y, name: b2}]",
                              "agent.yaml");
  ASSERT_EQ(c.queries.size(), 4u);
  EXPECT_EQ(c.queries[2].id, 3u);
  EXPECT_EQ(c.queries[3].name, "b2");
  EXPECT_EQ(c.queries[3].id, 4u);
}

// Reading the queries takes linear time (it compared every pair: 40,000
// took 24 s): 100,000 parse, and a duplicate at the end of a long list is
// found and names the first holder.
TEST(AgentConfig, ManyQueriesParseAndDuplicatesAmongThemAreFound) {
  auto list = [](size_t n) {
    std::string yaml = "queries:\n";
    for (size_t i = 0; i < n; ++i) yaml += "- {name: q" + std::to_string(i) + "}\n";
    return yaml;
  };
  constexpr size_t n = 100000;
  auto c = parse_agent_config(list(n), "agent.yaml");
  ASSERT_EQ(c.queries.size(), n);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(c.queries[i].id, i + 1);
  EXPECT_EQ(c.queries[n - 1].name, "q" + std::to_string(n - 1));
  EXPECT_EQ(parse_error(list(10000) + "- {name: q17}\n"),
            "agent.yaml: queries[10000].name: name \"q17\" is already used by queries[17]");
  EXPECT_EQ(parse_error(list(10000) + "- {name: last, id: 9999}\n"),
            "agent.yaml: queries[10000].id: id 9999 is already used by queries[9998]");
}

TEST(AgentConfig, Overrides) {
  AgentConfig c;
  for (const char* assignment :
       {"buffer.limit=64MiB", "buffer.sync=none", "buffer.dir=/x", "buffer.compact_threshold=0",
        "log.level=debug", "log.file=/l.log", "link=offline"})
    apply_override(c, assignment);
  EXPECT_EQ(c.buffer.limit_bytes, 64u << 20);
  EXPECT_EQ(c.buffer.sync, persistence::SyncPolicy::none);
  EXPECT_EQ(c.buffer.dir, "/x");
  EXPECT_EQ(c.buffer.compact_threshold_bytes, 0u);
  EXPECT_EQ(c.log.level, "debug");
  EXPECT_EQ(c.log.file, "/l.log");
  EXPECT_EQ(c.link.kind, LinkSpec::Kind::offline);

  apply_override(c, "link=file:/tmp/x.jsonl");
  EXPECT_EQ(c.link.kind, LinkSpec::Kind::file);
  EXPECT_EQ(c.link.path, "/tmp/x.jsonl");
  apply_override(c, "link.path=/y=1: z.jsonl");  // taken literally, '=' and ': ' included
  EXPECT_EQ(c.link.path, "/y=1: z.jsonl");
  apply_override(c, "log.file=");
  EXPECT_EQ(c.log.file, "");
  apply_override(c, "link.type=offline");
  EXPECT_EQ(c.link.kind, LinkSpec::Kind::offline);

  c.queries.resize(1);
  apply_override(c, "log.level=off");  // untouched sections stay as they are
  EXPECT_EQ(c.queries.size(), 1u);
}

TEST(AgentConfig, OverrideErrors) {
  AgentConfig offline;
  offline.link.kind = LinkSpec::Kind::offline;
  EXPECT_EQ(override_error("buffer.limit"), "--set: expected key=value, got \"buffer.limit\"");
  EXPECT_EQ(override_error("=5"), "--set: expected key=value, got \"=5\"");
  EXPECT_EQ(override_error("buffer.limt=1"),
            "--set: buffer.limt: unknown key; allowed: dir, limit, sync, compact_threshold, pending_budget, commit_interval_ms");
  EXPECT_EQ(override_error("bufer.limit=1"),
            "--set: bufer: unknown key; allowed: buffer, link, log, inspector, artifacts, vql, sensors, event_table, queries");
  EXPECT_EQ(override_error("buffer.limit=big"),
            "--set: buffer.limit: expected a size such as 1000, 10kB, 64MiB or 1GiB, got \"big\"");
  EXPECT_EQ(override_error("buffer=x"), "--set: buffer: expected a map, got \"x\"");
  EXPECT_EQ(
      override_error("log.level.x=1"),
      "--set: log.level: expected trace, debug, info, warn, error, critical or off, got a map");
  EXPECT_EQ(override_error("link=ftp:x"),
            "--set: link: expected a map, file, file:PATH, host or offline, got \"ftp:x\"");
  EXPECT_EQ(override_error("link=file:"),
            "--set: link: expected a map, file, file:PATH, host or offline, got \"file:\"");
  EXPECT_EQ(override_error("link.path=/x", offline),
            "--set: link.path: unknown key for an offline link; allowed: type");
  EXPECT_EQ(override_error("queries=x"), "--set: queries: expected a list of queries, got \"x\"");
}

TEST(AgentConfig, ParseSize) {
  const std::vector<std::pair<std::string, uint64_t>> good = {
      {"0", 0},
      {"1000", 1000},
      {"1000B", 1000},
      {"10kB", 10000},
      {"5MB", 5000000},
      {"2GB", 2000000000},
      {"1TB", 1000000000000},
      {"512KiB", 512 << 10},
      {"64MiB", 64 << 20},
      {"1GiB", 1ull << 30},
      {"3TiB", 3ull << 40},
      {"64 MiB", 64 << 20},
      {"18446744073709551615", 18446744073709551615ull},
      {"16777215TiB", 16777215ull << 40}};
  for (const auto& [text, bytes] : good) {
    SCOPED_TRACE(text);
    EXPECT_EQ(parse_size(text), bytes);
  }
  for (const char* junk : {"", "lots", "-1", "+1", "1.5GiB", "10 ", " 10", "10  MiB", "10 kb",
                           "10KB", "10mib", "1GiBs", "GiB", "0x10"}) {
    SCOPED_TRACE(junk);
    EXPECT_THROW(parse_size(junk), std::invalid_argument);
  }
  for (const char* huge : {"18446744073709551616", "16777216TiB"}) {
    SCOPED_TRACE(huge);
    EXPECT_THROW(parse_size(huge), std::invalid_argument);
  }
  try {
    parse_size("lots");
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "expected a size such as 1000, 10kB, 64MiB or 1GiB, got \"lots\"");
  }
}


TEST(AgentConfig, CollectedQueryReadsParametersLikeSourceKeys) {
  CollectSpec c{kFirstFlowId + 7, "Outpost.Test.Synthetic", "", {{"rate", "50"}, {"max_rows", "10"}}, "", ""};
  QuerySpec q = collected_query(c, schemas::Lane::RESULTS);
  EXPECT_EQ(q.id, kFirstFlowId + 7);
  EXPECT_EQ(q.name, "F." + std::to_string(kFirstFlowId + 7));
  EXPECT_EQ(q.artifact, "Outpost.Test.Synthetic");
  EXPECT_EQ(q.lane, schemas::Lane::RESULTS);
  EXPECT_EQ(q.source.kind, SourceSpec::Kind::synthetic);
  EXPECT_EQ(q.source.rate, 50);
  EXPECT_EQ(q.source.max_rows, 10u);
  EXPECT_EQ(collected_query({1, "Outpost.Test.Clock", "", {{"period_ms", "250"}}, "", ""}, schemas::Lane::EVENTS)
                .source.period,
            std::chrono::milliseconds(250));
}

TEST(AgentConfig, CollectedQueryErrorsNameTheArtifactAndParameter) {
  auto error = [](CollectSpec c) {
    try {
      collected_query(c, schemas::Lane::RESULTS);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  // Artifacts other than the test ones, and VQL, are the engine's to check.
  auto other = collected_query({1ull << 33, "Linux.Sys.Users", "", {{"a", "1"}}, "", ""}, schemas::Lane::RESULTS);
  EXPECT_EQ(other.source.kind, SourceSpec::Kind::artifact);
  EXPECT_EQ(other.source.name, "Linux.Sys.Users");
  EXPECT_EQ(other.source.parameters, (std::vector<std::pair<std::string, std::string>>{{"a", "1"}}));
  auto vql = collected_query({1ull << 33, "", "SELECT * FROM info()", {}, "", ""}, schemas::Lane::RESULTS);
  EXPECT_EQ(vql.source.kind, SourceSpec::Kind::vql);
  EXPECT_EQ(vql.source.query, "SELECT * FROM info()");
  EXPECT_EQ(vql.artifact, "VQL");
  EXPECT_EQ(error({1, "Outpost.Test.Clock", "", {{"period_ms", "soon"}}, "", ""}),
            "collect Outpost.Test.Clock: parameter.period_ms: expected an integer from 1 to 86400000, "
            "got \"soon\"");
  EXPECT_EQ(error({1, "Outpost.Test.Clock", "", {{"rate", "5"}}, "", ""}),
            "collect Outpost.Test.Clock: parameter.rate: unknown key for a clock source; allowed: type, "
            "period_ms");
  EXPECT_EQ(error({1, "Outpost.Test.Clock", "", {{"period_ms", "5"}, {"period_ms", "6"}}, "", ""}),
            "collect Outpost.Test.Clock: parameter period_ms: given twice");
  EXPECT_EQ(error({1, "Outpost.Test.Clock", "", {{"period_ms", "0"}}, "", ""}),
            "collect Outpost.Test.Clock: parameter.period_ms: expected an integer from 1 to 86400000, "
            "got \"0\"");
  EXPECT_EQ(error({1, "Outpost.Test.Synthetic", "", {{"row_size", "1GiB"}}, "", ""}),
            "collect Outpost.Test.Synthetic: parameter.row_size: expected a size up to 4032KiB (a row must "
            "fit in one record), got \"1GiB\"");
  EXPECT_EQ(error({1, "Outpost.Test.Clock", "", {{"type", "synthetic"}}, "", ""}),
            "collect Outpost.Test.Clock: parameter type: not a parameter of this artifact");
  // A definition sent with the request is the engine's, even under a test source's name.
  auto sent = collected_query({1ull << 33, "Outpost.Test.Clock", "", {}, "", "name: Outpost.Test.Clock"},
                              schemas::Lane::RESULTS);
  EXPECT_EQ(sent.source.kind, SourceSpec::Kind::artifact);
  EXPECT_EQ(sent.source.definition, "name: Outpost.Test.Clock");
  EXPECT_EQ(error({1ull << 33, "X", "SELECT * FROM info()", {}, "", "name: X"}),
            "collect X: a query and an artifact definition: give one");
}

TEST(AgentConfig, PendingBudget) {
  EXPECT_EQ(AgentConfig{}.pending_budget, kDefaultPendingBudget);
  EXPECT_EQ(parse_agent_config(default_agent_config_yaml(), "d").pending_budget, kDefaultPendingBudget);
  EXPECT_EQ(parse_agent_config("buffer: {pending_budget: 8MiB}", "agent.yaml").pending_budget, 8ull << 20);
  AgentConfig c;
  apply_override(c, "buffer.pending_budget=1MiB");
  EXPECT_EQ(c.pending_budget, 1ull << 20);
  EXPECT_NE(parse_error("buffer: {pending_budget: 0}").find("agent.yaml: buffer.pending_budget: "),
            std::string::npos);
  // Held in RAM and added to the store's limit: bounded (a huge one overflowed the map size).
  EXPECT_EQ(parse_error("buffer: {pending_budget: 4611686018427387904}"),
            "agent.yaml: buffer.pending_budget: expected a size up to 64GiB (appends held in RAM), got "
            "\"4611686018427387904\"");
}

TEST(AgentConfig, CommitInterval) {
  EXPECT_EQ(AgentConfig{}.commit_interval, std::chrono::milliseconds(0));
  EXPECT_EQ(parse_agent_config(default_agent_config_yaml(), "d").commit_interval, std::chrono::milliseconds(0));
  EXPECT_EQ(parse_agent_config("buffer: {commit_interval_ms: 250}", "agent.yaml").commit_interval,
            std::chrono::milliseconds(250));
  AgentConfig c;
  apply_override(c, "buffer.commit_interval_ms=1000");
  EXPECT_EQ(c.commit_interval, std::chrono::seconds(1));
  EXPECT_NE(parse_error("buffer: {commit_interval_ms: -5}").find("agent.yaml: buffer.commit_interval_ms: "),
            std::string::npos);
}

}  // namespace
}  // namespace outpost

namespace outpost {
namespace {

TEST(AgentConfig, InspectorSection) {
  auto c = parse_agent_config(
      "inspector: {socket: /run/o.sock, control: true, warnings: {slow_handler_ms: 50, restarts: 5}}\n", "a.yaml");
  EXPECT_EQ(c.inspector.socket, "/run/o.sock");
  EXPECT_TRUE(c.inspector.control);
  EXPECT_EQ(c.inspector.warnings.slow_handler.count(), 50);
  EXPECT_EQ(c.inspector.warnings.restarts, 5u);
  EXPECT_EQ(c.inspector.warnings.backpressure.count(), 60000);  // the default
  EXPECT_FALSE(parse_agent_config("{}", "a.yaml").inspector.control);  // read-only unless asked
  EXPECT_TRUE(parse_agent_config("inspector: {socket: ~}", "a.yaml").inspector.socket.empty());
  EXPECT_EQ(parse_error("inspector: {socket: /" + std::string(120, 'x') + "}"),
            "agent.yaml: inspector.socket: at most 96 bytes (a unix socket's path is short); this one has 121");
  EXPECT_EQ(parse_error("inspector: {warnings: {slow_ms: 5}}"),
            "agent.yaml: inspector.warnings.slow_ms: unknown key; allowed: mailbox_backlog_ms, slow_handler_ms, "
            "backpressure_ms, link_offline_ms, restarts, restart_window_ms, recent_ms");
  // The metrics listener: loopback unless allowed beyond it.
  EXPECT_EQ(parse_agent_config("inspector: {metrics: 127.0.0.1:9464}", "a.yaml").inspector.metrics, "127.0.0.1:9464");
  EXPECT_EQ(parse_agent_config("inspector: {metrics: '[::1]:0'}", "a.yaml").inspector.metrics, "[::1]:0");
  EXPECT_EQ(parse_error("inspector: {metrics: 0.0.0.0:9464}"),
            "agent.yaml: inspector.metrics: 0.0.0.0:9464 is not a loopback address: the metrics would be served "
            "beyond this host; set inspector.metrics_remote: true to allow that");
  EXPECT_EQ(parse_agent_config("inspector: {metrics: 0.0.0.0:9464, metrics_remote: true}", "a.yaml").inspector.metrics,
            "0.0.0.0:9464");
  EXPECT_EQ(parse_error("inspector: {metrics: 9464}"),
            "agent.yaml: inspector.metrics: expected host:port, such as 127.0.0.1:9464 (port 0: any free one), got \"9464\"");
}

}  // namespace
}  // namespace outpost
