// The agent as a real process: SIGTERM shuts it down in order with every
// produced row committed; kill -9 loses nothing that was committed.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "persistence/buffer_store.hpp"
#include "tests/actor_test_util.hpp"
#include "tests/process_util.hpp"
#include "tests/temp_dir.hpp"


// Built with ASan or TSan: gcc says so with __SANITIZE_*__, clang 14 only
// through __has_feature.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define OUTPOST_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define OUTPOST_TEST_SANITIZED 1
#endif
#endif
#ifndef OUTPOST_TEST_SANITIZED
#define OUTPOST_TEST_SANITIZED 0
#endif
namespace outpost {
namespace {
using namespace outpost::testing;
namespace fs = std::filesystem;

pid_t start_agent(const fs::path& config, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args{OUTPOST_AGENT, "--config", config.string()};
  args.insert(args.end(), extra.begin(), extra.end());
  return spawn(args);
}

struct AgentTest : ::testing::Test {
  TempDir tmp;
  Processes started;  // killed at the end, so a failed test leaves no agent behind
  fs::path config = tmp.path("agent.yaml");
  fs::path log = tmp.path("agent.log");

  void write_config(const std::string& link, bool with_query, const std::string& limit = "256MiB") {
    std::ofstream(config) << "buffer: {dir: " << tmp.path("buf").string()
                          << ", limit: " << limit << ", sync: full}\n"
                          << "link: " << link << "\n"
                          << "log: {level: info, file: " << log.string() << "}\n"
                          << "inspector: {socket: " << tmp.path("inspector.sock").string() << "}\n"
                          << (with_query ? "queries:\n"
                                           "  - name: syn\n"
                                           "    id: 7\n"
                                           "    source: {type: synthetic, rate: 20000, row_size: 64}\n"
                                           "    batch: {rows: 100, delay_ms: 5}\n"
                                         : "queries: []\n");
  }

  pid_t start(const std::vector<std::string>& extra = {}) {
    return started.add(start_agent(config, extra));
  }

  bool log_says(const std::string& text) { return slurp(log).find(text) != std::string::npos; }

  // Seq column values of every row the store holds for query 7, per record seq.
  std::map<uint64_t, std::vector<uint64_t>> stored_rows() {
    persistence::StoreOptions o;
    o.dir = tmp.path("buf");
    persistence::BufferStore store(o);
    std::map<uint64_t, std::vector<uint64_t>> rows;
    uint64_t after = 0;
    for (;;) {
      auto got = store.read(Lane::EVENTS, after, 1000, 64u << 20);
      if (got.records.empty()) return rows;
      for (auto& r : got.records) {
        after = r.seq;
        schemas::RecordView view(r.words);
        for (auto row : view.record().getRowBatch().getRows())
          rows[r.seq].push_back(row[0].getUint64());
      }
    }
  }
};

TEST_F(AgentTest, SigtermStoresEveryProducedRowAndExitsZero) {
  write_config("{type: offline}", true);
  pid_t agent = start();
  ASSERT_TRUE(eventually([&] { return log_says("agent running"); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(700));  // let rows flow
  kill(agent, SIGTERM);
  ASSERT_EQ(wait_exit(agent), 0) << slurp(log);

  std::smatch m;
  std::string text = slurp(log);
  ASSERT_TRUE(std::regex_search(text, m, std::regex("query syn stopped: (\\d+) rows produced, (\\d+) rows committed")))
      << text;
  uint64_t produced = std::stoull(m[1]);
  EXPECT_EQ(produced, std::stoull(m[2]));
  EXPECT_GT(produced, 0u);
  std::vector<uint64_t> seqs;
  for (auto& [record, rows] : stored_rows()) seqs.insert(seqs.end(), rows.begin(), rows.end());
  ASSERT_EQ(seqs.size(), produced);
  for (uint64_t i = 0; i < produced; ++i) ASSERT_EQ(seqs[i], i + 1);
}

TEST_F(AgentTest, KillNineLosesNothingCommittedAndTheLinkDeliversItAfterRestart) {
  write_config("{type: offline}", true);
  pid_t agent = start();
  ASSERT_TRUE(eventually([&] { return log_says("agent running"); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  kill(agent, SIGKILL);
  wait_exit(agent);

  auto committed = stored_rows();  // what survived: every record is whole
  ASSERT_FALSE(committed.empty());
  uint64_t expect = 1;
  for (auto& [record, rows] : committed)
    for (uint64_t seq : rows) ASSERT_EQ(seq, expect++) << "gap or reorder in record " << record;

  write_config("{type: file, path: " + tmp.path("out.jsonl").string() + "}", false);
  agent = start();
  std::set<uint64_t> want;
  for (auto& [record, rows] : committed) want.insert(record);
  ASSERT_TRUE(eventually([&] {
    std::set<uint64_t> seen;
    std::ifstream in(tmp.path("out.jsonl"));
    for (std::string line; std::getline(in, line);)
      seen.insert(std::stoull(line.substr(line.find("\"seq\":") + 6)));
    return seen == want;
  }));
  kill(agent, SIGTERM);
  EXPECT_EQ(wait_exit(agent), 0) << slurp(log);
  // Acked records are gone; one whose ack was still in flight at SIGTERM may
  // remain, and is delivered again next time (the file link is at-least-once).
  for (auto& [record, rows] : stored_rows()) EXPECT_TRUE(want.count(record)) << record;
}

TEST_F(AgentTest, SigtermWithAFullBufferAndNoLinkStoresWhatWasHandedOverAndExitsPromptly) {
  write_config("{type: offline}", true, "1MiB");  // full within a second
  pid_t agent = start();
  ASSERT_TRUE(eventually([&] { return log_says("buffer: full ("); })) << slurp(log);
  kill(agent, SIGTERM);
  ASSERT_EQ(wait_exit(agent), 0) << slurp(log);
  // The query's last batches waited for space; the shutdown reserve took them.
  EXPECT_FALSE(log_says("refused")) << slurp(log);
  EXPECT_FALSE(log_says("rows not stored")) << slurp(log);
  std::smatch m;
  std::string text = slurp(log);
  ASSERT_TRUE(std::regex_search(text, m, std::regex("query syn stopped: (\\d+) rows produced, (\\d+) rows committed")))
      << text;
  EXPECT_EQ(m[1], m[2]);
  size_t stored = 0;
  for (auto& [record, rows] : stored_rows()) stored += rows.size();
  EXPECT_EQ(stored, std::stoull(m[1]));
}

// The reproduction: read_file of an 8 MB file next to a clock on
// the same lane. read_file cuts the data into rows of at most 1 MiB, each
// with its Offset, and they all arrive; a row that still comes out bigger
// than the record limit (five copies of a 1 MiB column) is refused at its
// source with a clear error; the clock's rows keep arriving; nothing is
// refused at shutdown.
TEST_F(AgentTest, ARowAboveTheRecordLimitIsRefusedAtItsSourceAndTheLaneGoesOn) {
  auto big = tmp.path("big.txt");
  std::ofstream(big) << std::string(8000000, 'b');
  auto out = tmp.path("out.jsonl");
  std::string read = "read_file(filenames='" + big.string() + "', length=";
  std::ofstream(config) << "buffer: {dir: " << tmp.path("buf").string() << ", limit: 256MiB}\n"
                        << "link: {type: file, path: " << out.string() << "}\n"
                        << "log: {file: " << log.string() << "}\n"
                        << "queries:\n"
                        << "  - name: big\n    source: {type: vql, query: \"SELECT * FROM " << read
                        << "8000000)\"}\n"
                        << "  - name: wide\n    source: {type: vql, query: \"SELECT Data AS A, Data AS B, "
                           "Data AS C, Data AS D, Data AS E FROM "
                        << read << "1048576)\"}\n"
                        << "  - name: clock\n    source: {type: vql, query: \"SELECT Tick FROM clock(period=0.05)\"}\n";
  pid_t agent = start();
  auto count = [&](const std::string& what) {
    std::ifstream in(out);
    size_t n = 0;
    for (std::string line; std::getline(in, line);) n += line.find(what) != std::string::npos;
    return n;
  };
  auto ticks = [&] { return count("\"Tick\":"); };
  ASSERT_TRUE(eventually([&] { return log_says("query wide: refused 1 row(s) bigger than the record limit of 4194304 bytes"); }))
      << slurp(log);
  ASSERT_TRUE(eventually([&] { return count("\"Offset\":") == 8; })) << "8 MB in rows of 1 MiB\n" << slurp(log);
  size_t seen = ticks();
  ASSERT_TRUE(eventually([&] { return ticks() >= seen + 10; })) << "the clock's rows stopped\n" << slurp(log);
  kill(agent, SIGTERM);
  ASSERT_EQ(wait_exit(agent), 0) << slurp(log);
  EXPECT_FALSE(log_says("not stored")) << slurp(log);
  EXPECT_FALSE(log_says("buffer: full")) << slurp(log);
  EXPECT_NE(slurp(out).find("bigger than the record limit"), std::string::npos)
      << "the refusal reaches the collector's side too";
}

TEST_F(AgentTest, SecondSignalForcesExit) {
  write_config("{type: offline}", true);
  pid_t agent = start();
  ASSERT_TRUE(eventually([&] { return log_says("agent running"); }));
  // Both signals are pending when it resumes, so the second arrives while
  // the ordered shutdown the first one started is still running.
  kill(agent, SIGSTOP);
  kill(agent, SIGINT);
  kill(agent, SIGTERM);
  kill(agent, SIGCONT);
  EXPECT_EQ(wait_exit(agent), 130) << slurp(log);
  EXPECT_TRUE(log_says("exiting without waiting")) << slurp(log);
}

TEST_F(AgentTest, InvalidConfigNamesTheKeyAndExitsTwo) {
  std::ofstream(config) << "buffer: {limit: lots}\n";
  pid_t agent = start();
  EXPECT_EQ(wait_exit(agent), 2);
}

// outpost-agent's one-shot commands: output and exit code.
std::pair<int, std::string> run_command(const TempDir& tmp, std::vector<std::string> args) {
  auto out = tmp.path("command.out");
  std::filesystem::remove(out);
  args.insert(args.begin(), OUTPOST_AGENT);
  int code = wait_exit(spawn(args, out));
  return {code, slurp(out)};
}

// Its mappings, or "" once it has exited.
std::string maps_of(pid_t pid) { return slurp("/proc/" + std::to_string(pid) + "/maps"); }

TEST_F(AgentTest, SigtermAtStartupGetsAnOrderedShutdown) {
#if OUTPOST_TEST_SANITIZED
  GTEST_SKIP() << "a sanitizer's allocator maps its memory: there is no [heap] to wait for";
#endif
  const std::string agent_binary = fs::canonical(OUTPOST_AGENT).string();
  write_config("{type: offline}", true);
  for (int i = 0; i < 10; ++i) {
    SCOPED_TRACE(i);
    pid_t agent = start();
    // Once exec'd (the agent's binary is mapped), its heap appears at the
    // first malloc: in libstdc++'s initialisation, after the loader and
    // before main and its option parsing (where the signals were still
    // unblocked). Nothing of the agent's own code ran yet.
    auto started_up = [&] {
      std::string maps = maps_of(agent);
      return maps.find(agent_binary) != std::string::npos && maps.find("[heap]") != std::string::npos;
    };
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!started_up() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    kill(agent, SIGTERM);
    ASSERT_EQ(wait_exit(agent), 0) << "128 + SIGTERM (15) means the signal killed it\n" << slurp(log);
  }
  EXPECT_TRUE(log_says("received: shutting down")) << slurp(log);
}

TEST_F(AgentTest, LogFileIsAlsoWrittenNotInsteadOfTheConsole) {
  write_config("{type: offline}", false);
  auto console = tmp.path("console.txt");
  pid_t agent = started.add(spawn({OUTPOST_AGENT, "--config", config.string()}, console));
  ASSERT_TRUE(eventually([&] { return log_says("agent running"); })) << slurp(console);
  EXPECT_TRUE(eventually([&] { return slurp(console).find("agent running") != std::string::npos; }))
      << slurp(console);
  kill(agent, SIGTERM);
  EXPECT_EQ(wait_exit(agent), 0);
  EXPECT_NE(slurp(console).find("agent stopped"), std::string::npos) << slurp(console);
  EXPECT_TRUE(log_says("agent stopped")) << slurp(log);
}

// What the process cannot hold is refused at start, exit 2, with the key
// named: not exit 1 from mdb_env_open, nor a restart loop on bad_alloc.
TEST_F(AgentTest, SizesBeyondWhatTheAgentCanHoldAreRefusedWithTheKeyNamed) {
  write_config("{type: offline}", false);
  auto huge = run_command(tmp, {"--config", config.string(), "--set", "buffer.limit=100000TiB"});
  EXPECT_EQ(huge.first, 2) << huge.second;
  EXPECT_NE(huge.second.find("--set: buffer.limit: expected a size up to 16TiB"), std::string::npos) << huge.second;

  // Within the bound, but more address space than this process may have.
  // (Not under a sanitizer: its shadow memory alone needs more than ulimit -v allows.)
#if !OUTPOST_TEST_SANITIZED
  auto out = tmp.path("limited.out");
  pid_t limited = spawn({"/bin/sh", "-c",
                         "ulimit -v 3000000 && exec " + std::string(OUTPOST_AGENT) + " --config " +
                             config.string() + " --set buffer.limit=2GiB"},
                        out);
  EXPECT_EQ(wait_exit(limited), 2) << slurp(out);
  EXPECT_NE(slurp(out).find(config.string() + ": buffer.limit: a limit of 2147483648 bytes and a pending_budget of "
                                               "67108864 bytes need a map of 6592MiB, "
                                               "more address space than this process can reserve"),
            std::string::npos)
      << slurp(out);
#endif

  std::ofstream(config, std::ios::trunc)
      << "buffer: {dir: " << tmp.path("buf").string() << "}\nlink: offline\n"
      << "queries: [{name: big, source: {type: synthetic, row_size: 1GiB}}]\n";
  auto row_out = tmp.path("row.out");
  pid_t row = started.add(spawn({OUTPOST_AGENT, "--config", config.string()}, row_out));
  EXPECT_EQ(wait_exit(row, std::chrono::seconds(20)), 2) << slurp(row_out);
  EXPECT_NE(slurp(row_out).find("queries[0].source.row_size: expected a size up to 4032KiB"), std::string::npos)
      << slurp(row_out);
}

TEST_F(AgentTest, LocalCommandsReadAndCheckTheConfiguration) {
  const std::string one = "SELECT 1 AS One FROM info()";
  // Refused, even where the command would not need the key.
  EXPECT_EQ(run_command(tmp, {"--set", "log.levl=debug", "query", one}),
            (std::pair<int, std::string>{
                2, "outpost-agent: invalid configuration: --set: log.levl: unknown key; allowed: level, file\n"}));
  EXPECT_EQ(run_command(tmp, {"artifacts", "list", "--set", "link=ftp:x"}),
            (std::pair<int, std::string>{2, "outpost-agent: invalid configuration: --set: link: expected a map, "
                                            "file, file:PATH, host or offline, got \"ftp:x\"\n"}));
  std::ofstream(config) << "buffer: {limit: lots}\n";
  EXPECT_EQ(run_command(tmp, {"--config", config.string(), "collect", "Linux.Sys.Users"}),
            (std::pair<int, std::string>{2, "outpost-agent: invalid configuration: " + config.string() +
                                                ": buffer.limit: expected a size such as 1000, 10kB, 64MiB or "
                                                "1GiB, got \"lots\"\n"}));
  auto missing = run_command(tmp, {"query", one, "--config", tmp.path("nope.yaml").string()});
  EXPECT_EQ(missing.first, 2) << missing.second;
  EXPECT_NE(missing.second.find("nope.yaml"), std::string::npos) << missing.second;

  // A valid one is used: its log settings apply (a file beside the console).
  write_config("{type: offline}", false);
  EXPECT_EQ(run_command(tmp, {"--config", config.string(), "--set", "log.level=debug", "query", one}),
            (std::pair<int, std::string>{0, "{\"One\":1}\n"}));
  EXPECT_TRUE(fs::exists(log));
}

TEST_F(AgentTest, ArtifactsListShowsEachFirstSentenceWhole) {
  auto list = run_command(tmp, {"artifacts", "list"});
  ASSERT_EQ(list.first, 0);
  // Its description's first sentence spans three lines of the YAML.
  EXPECT_NE(list.second.find("\nLinux.Detection.Thumbdrives.List (event): When a removable drive is mounted, "
                             "lists its files and watches it, reporting every file created, changed or moved "
                             "onto it until it is removed.\n"),
            std::string::npos)
      << list.second;
  EXPECT_NE(list.second.find("\nLinux.Network.Netstat: TCP and UDP sockets with the process that owns each, "
                             "from /proc/net.\n"),
            std::string::npos)
      << list.second;
  std::istringstream lines(list.second);
  int n = 0;
  for (std::string line; std::getline(lines, line); ++n) EXPECT_EQ(line.back(), '.') << line;
  EXPECT_GE(n, 8);
}

TEST_F(AgentTest, QueryCollectAndArtifactsRunLocally) {
  EXPECT_EQ(run_command(tmp, {"query", "SELECT 1 + 1 AS Two, upcase(string=Who) AS W FROM info()", "-p", "Who=me"}),
            (std::pair<int, std::string>{0, "{\"Two\":2,\"W\":\"ME\"}\n"}));
  EXPECT_EQ(run_command(tmp, {"query", "SELECT * FROM pslist("}),
            (std::pair<int, std::string>{2, "outpost-agent: line 1, column 22: expected an argument name (arguments "
                                            "are named: name=value), found end of query\n"}));
  auto users = run_command(tmp, {"collect", "Linux.Sys.Users"});
  EXPECT_EQ(users.first, 0);
  EXPECT_NE(users.second.find("{\"Name\":\"root\",\"Uid\":0,"), std::string::npos) << users.second;
  EXPECT_EQ(run_command(tmp, {"collect", "Linux.Sys.Pslist", "-p", "ProcessRegex=("}).first, 2);
  auto ticks = run_command(tmp, {"query", "SELECT Tick FROM clock(period=0.05)", "-n", "3"});
  EXPECT_EQ(ticks, (std::pair<int, std::string>{0, "{\"Tick\":1}\n{\"Tick\":2}\n{\"Tick\":3}\n"}));
  auto list = run_command(tmp, {"artifacts", "list"});
  EXPECT_NE(list.second.find("Linux.Detection.Thumbdrives.List (event): "), std::string::npos) << list.second;
  EXPECT_EQ(run_command(tmp, {"artifacts", "show", "Nope"}).first, 2);
}

TEST_F(AgentTest, DefinitionsFromADirectoryAreListedCollectedAndChecked) {
  auto defs = tmp.path("defs");
  fs::create_directories(defs / "deeper");
  std::ofstream(defs / "deeper" / "hello.yaml")
      << "name: Custom.Hello\ndescription: Says hello. Twice.\nparameters: [{name: Who, default: you}]\n"
      << "sources:\n  - query: SELECT 'hello ' + Who AS Greeting FROM scope()\n";
  std::ofstream(defs / "broken.yaml") << "name: Custom.Broken\nsources:\n  - query: |\n"
                                      << "      SELECT nothing(x=1), a ! b FROM scope()\n"
                                      << "  - query: SELECT * FROM nowhere(y=2) WHERE later(z=3)\n";
  // collect and list see them; what did not load is said on stderr and the rest goes on.
  auto hello = run_command(tmp, {"--definitions", defs.string(), "collect", "Custom.Hello", "-p", "Who=there"});
  EXPECT_EQ(hello.first, 0) << hello.second;
  EXPECT_NE(hello.second.find("{\"Greeting\":\"hello there\"}\n"), std::string::npos) << hello.second;
  EXPECT_NE(hello.second.find((defs / "broken.yaml").string() + ": not loaded: sources[0].query: line 1, column 24: "
                              "unexpected character '!'"),
            std::string::npos)
      << hello.second;
  auto list = run_command(tmp, {"artifacts", "list", "--definitions", defs.string()});
  EXPECT_NE(list.second.find("\nCustom.Hello: Says hello.\n"), std::string::npos) << list.second;
  EXPECT_EQ(run_command(tmp, {"artifacts", "list"}).second.find("Custom.Hello"), std::string::npos);

  // check lists every problem of the one that does not load, and what it needs.
  auto check = run_command(tmp, {"artifacts", "check", defs.string()});
  EXPECT_EQ(check.first, 1);
  EXPECT_NE(check.second.find("Custom.Hello (" + (defs / "deeper" / "hello.yaml").string() + "): loads\n"),
            std::string::npos)
      << check.second;
  EXPECT_NE(check.second.find("Custom.Broken (" + (defs / "broken.yaml").string() + "): does not load\n"
                              "  needs function later()\n  needs plugin nowhere()\n"
                              "  needs syntax: unexpected character '!'\n"),
            std::string::npos)
      << check.second;
  EXPECT_NE(check.second.find("  sources[1].query: line 1, column 15: unknown plugin nowhere()\n"
                              "  sources[1].query: line 1, column 34: unknown function later()\n"),
            std::string::npos)
      << check.second;
  EXPECT_NE(check.second.find("\n1 of 2 load.\n"), std::string::npos) << check.second;
  EXPECT_EQ(run_command(tmp, {"artifacts", "check", tmp.path("missing").string()}),
            (std::pair<int, std::string>{2, "outpost-agent: " + tmp.path("missing").string() +
                                                ": no such file or directory\n"}));
  fs::create_directories(tmp.path("empty"));
  EXPECT_EQ(run_command(tmp, {"artifacts", "check", tmp.path("empty").string()}).first, 2);

  // A running agent's configured query names one (artifacts.paths in its configuration).
  auto delivered = tmp.path("delivered.jsonl");
  std::ofstream(config) << "buffer: {dir: " << tmp.path("buf").string() << "}\n"
                        << "link: {type: file, path: " << delivered.string() << "}\nlog: {file: " << log.string()
                        << "}\nartifacts: {paths: [" << defs.string() << "]}\n"
                        << "queries: [{name: hello, source: {type: artifact, name: Custom.Hello}}]\n";
  pid_t agent = start();
  ASSERT_TRUE(eventually([&] { return slurp(delivered).find("\"Greeting\":\"hello you\"") != std::string::npos; }))
      << slurp(log);
  kill(agent, SIGTERM);
  EXPECT_EQ(wait_exit(agent), 0);
  EXPECT_NE(slurp(log).find("artifacts: " + (defs / "broken.yaml").string() + ": not loaded: "), std::string::npos);
}

TEST_F(AgentTest, ConfiguredVqlRunsAndABadQueryStopsTheStart) {
  auto delivered = tmp.path("delivered.jsonl");
  std::ofstream(config) << "buffer: {dir: " << tmp.path("buf").string() << "}\n"
                        << "link: {type: file, path: " << delivered.string() << "}\nlog: {file: " << log.string()
                        << "}\nqueries:\n  - name: vql\n    id: 7\n"
                        << "    source: {type: vql, query: \"SELECT Tick FROM clock(period=0.05)\"}\n";
  // The Tick of each row the link delivered, in order.
  auto delivered_ticks = [&] {
    std::vector<uint64_t> ticks;
    static const std::regex tick("\"Tick\":(\\d+)");
    std::istringstream in(slurp(delivered));
    std::smatch m;
    for (std::string line; std::getline(in, line);)
      if (std::regex_search(line, m, tick)) ticks.push_back(std::stoull(m[1]));
    return ticks;
  };
  pid_t agent = start();
  ASSERT_TRUE(eventually([&] { return delivered_ticks().size() >= 3; })) << slurp(log);
  kill(agent, SIGTERM);
  EXPECT_EQ(wait_exit(agent), 0);
  // Delivered, then what the buffer still holds.
  std::vector<uint64_t> ticks = delivered_ticks();
  for (auto& [seq, r] : stored_rows()) ticks.insert(ticks.end(), r.begin(), r.end());
  ASSERT_GE(ticks.size(), 3u);
  for (size_t i = 0; i < ticks.size(); ++i) EXPECT_EQ(ticks[i], i + 1) << "a tick lost or repeated";

  std::ofstream(config, std::ios::trunc) << "buffer: {dir: " << tmp.path("buf").string() << "}\nlink: offline\n"
                                         << "queries: [{name: broken, source: {type: vql, query: \"SELECT * FROM nope()\"}}]\n";
  auto out = run_command(tmp, {"-c", config.string()});
  EXPECT_EQ(out.first, 2);
  EXPECT_NE(out.second.find("query broken: line 1, column 15: unknown plugin nope()"), std::string::npos) << out.second;
}

TEST_F(AgentTest, SecondAgentOnTheSameBufferIsRefused) {
  write_config("{type: offline}", false);
  pid_t first = start();
  ASSERT_TRUE(eventually([&] { return log_says("agent running"); }));
  pid_t second = start();
  EXPECT_EQ(wait_exit(second), 1);
  EXPECT_TRUE(log_says("in use by process " + std::to_string(first))) << slurp(log);
  kill(first, SIGTERM);
  EXPECT_EQ(wait_exit(first), 0);
}

}  // namespace
}  // namespace outpost
