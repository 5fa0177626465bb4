// execve(): real programs, their output as rows, and what happens to them
// when the query ends first.

#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <thread>

#include "queries/engine.hpp"

namespace outpost::vql {
namespace {

Permissions allowed() {
  Permissions p;
  p.execve = true;
  return p;
}

// Pulls `stream` until it ends or `rows` has `until` rows, waiting as it asks.
void pull(RowStream& stream, std::vector<Row>& rows, size_t until = SIZE_MAX) {
  for (int i = 0; i < 100000 && rows.size() < until; ++i) {
    Step s = stream.next(rows, 100);
    if (s.state == Step::State::done) return;
    if (s.state == Step::State::wait) std::this_thread::sleep_for(s.wait);
  }
}

std::vector<std::string> run(const std::string& vql, Permissions permissions = allowed()) {
  Engine engine(default_registry(), nullptr, permissions);
  Env env;
  auto stream = engine.start(vql, {}, env);
  std::vector<Row> rows;
  pull(*stream, rows);
  std::vector<std::string> out;
  for (auto& r : rows) out.push_back(to_json(r));
  return out;
}

bool gone(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

// Gone, or a zombie its parent has not reaped yet.
bool dead(pid_t pid) {
  if (gone(pid)) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  return line.empty() || line.find(") Z ") != std::string::npos;
}

TEST(Execve, RefusedUnlessTheConfigurationAllowsIt) {
  try {
    run("SELECT * FROM execve(argv=['true'])", Permissions{});
    ADD_FAILURE() << "it ran";
  } catch (const QueryError& e) {
    EXPECT_STREQ(e.what(), "execve(): refused: this agent's configuration does not let queries run programs "
                           "(vql.allow_execve: true allows it)");
  }
}

TEST(Execve, WithSepEachPieceOfStdoutAndStderrIsARowThenTheReturnCode) {
  EXPECT_EQ(run("SELECT * FROM execve(argv=['sh', '-c', 'echo one; echo two >&2; printf three; exit 3'], sep='\\n')"),
            (std::vector<std::string>{
                R"({"Stdout":"one","Stderr":"","ReturnCode":0,"Complete":false})",
                R"({"Stdout":"two","Stderr":"","ReturnCode":0,"Complete":false})",
                R"({"Stdout":"three","Stderr":"","ReturnCode":0,"Complete":false})",
                R"({"Stdout":"","Stderr":"","ReturnCode":3,"Complete":true})"}));
}

TEST(Execve, WithoutSepOutputComesInRowsOfLengthAndTheRestWithTheReturnCode) {
  EXPECT_EQ(run("SELECT Stdout, ReturnCode, Complete FROM execve(argv=['printf', 'abcdefghij'], length=4)"),
            (std::vector<std::string>{R"({"Stdout":"abcd","ReturnCode":0,"Complete":false})",
                                      R"({"Stdout":"efgh","ReturnCode":0,"Complete":false})",
                                      R"({"Stdout":"ij","ReturnCode":0,"Complete":true})"}));
}

TEST(Execve, NoShellAGivenEnvironmentReplacesTheAgentsAndCwdIsHonoured) {
  EXPECT_EQ(run("SELECT Stdout FROM execve(argv=['echo', '$HOME', '*'], sep='\\n')"),
            (std::vector<std::string>{R"({"Stdout":"$HOME *"})", R"({"Stdout":""})"}));
  EXPECT_EQ(run("SELECT Stdout FROM execve(argv=['/usr/bin/env'], env=dict(ONLY='this'), cwd='/', sep='\\n')"),
            (std::vector<std::string>{R"({"Stdout":"ONLY=this"})", R"({"Stdout":""})"}));
  EXPECT_EQ(run("SELECT Stdout FROM execve(argv=['pwd'], cwd='/tmp', sep='\\n')"),
            (std::vector<std::string>{R"({"Stdout":"/tmp"})", R"({"Stdout":""})"}));
}

TEST(Execve, AProgramThatCannotStartGivesOneRowWithTheError) {
  EXPECT_EQ(run("SELECT * FROM execve(argv=['/nonexistent/program'])"),
            (std::vector<std::string>{R"({"Stdout":"","Stderr":"execve(): /nonexistent/program: No such file or )"
                                      R"(directory","ReturnCode":1,"Complete":true})"}));
}

// Its timeout holds while the program writes as fast as it can.
TEST(Execve, AProgramThatNeverStopsWritingIsKilledAtItsTimeout) {
  Engine engine(default_registry(), nullptr, allowed());
  Env env;
  auto stream = engine.start("SELECT ReturnCode FROM execve(argv=['yes', 'xxxxxxxxxxxxxxxx'], "
                             "length=64, timeout=1) WHERE Complete",
                             {}, env);
  std::vector<Row> rows;
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (Step s; std::chrono::steady_clock::now() < until;) {
    s = stream->next(rows, 100);
    if (s.state == Step::State::done) break;
    if (s.state == Step::State::wait) std::this_thread::sleep_for(s.wait);
  }
  ASSERT_EQ(rows.size(), 1u) << "not killed within 20 s";
  EXPECT_EQ(to_json(rows[0]), R"({"ReturnCode":137})");
}

// The program and what it started are killed when the query ends first.
TEST(Execve, TheTimeoutAndAnEndedQueryKillTheProgramAndItsChildren) {
  auto rows = run("SELECT Stderr, ReturnCode FROM execve(argv=['sh', '-c', 'sleep 30 & wait'], timeout=1)");
  EXPECT_EQ(rows, (std::vector<std::string>{R"({"Stderr":"execve(): killed after its timeout of 1 s","ReturnCode":137})"}));

  Engine engine(default_registry(), nullptr, allowed());
  Env env;
  auto stream = engine.start("SELECT Stdout FROM execve(argv=['sh', '-c', 'echo $$; sleep 30 & echo $!; wait'], sep='\\n')",
                             {}, env);
  std::vector<Row> pids;
  pull(*stream, pids, 2);
  ASSERT_EQ(pids.size(), 2u);
  pid_t shell = std::stoi(to_string(*pids[0].find("Stdout")));
  pid_t sleeper = std::stoi(to_string(*pids[1].find("Stdout")));
  EXPECT_FALSE(gone(shell));
  EXPECT_FALSE(gone(sleeper));
  stream.reset();  // the query is cancelled
  EXPECT_TRUE(gone(shell));  // killed and reaped before the stream was gone
  // The sleeper, reparented, is killed too (its new parent reaps it, maybe later).
  bool killed = false;
  for (int i = 0; i < 500 && !(killed = dead(sleeper)); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(killed);
}

}  // namespace
}  // namespace outpost::vql
