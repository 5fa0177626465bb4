// getpid(), version(), pathspec(), tempdir(), copy(), delay() and query()
// (misc_functions.cpp), through the whole engine.

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "queries/engine.hpp"
#include "tests/log_capture.hpp"
#include "tests/vql_test_util.hpp"

namespace outpost::vql {

namespace {

using namespace std::chrono_literals;

const Registry& registry() { return default_registry(); }

std::vector<std::string> run(const std::string& vql, Waits waits = Waits::fail) {
  return json_lines(run_rows(registry(), vql, waits));
}

std::vector<std::string> run_allowed(const std::string& vql) { return json_lines(run_rows_allowed(registry(), vql)); }

// The value of `expr`, as JSON.
std::string one(const std::string& expr, bool allowed = false) {
  std::string vql = "SELECT " + expr + " AS X FROM scope()";
  auto rows = allowed ? run_allowed(vql) : run(vql);
  if (rows.size() != 1) return "<" + std::to_string(rows.size()) + " rows>";
  return rows[0].substr(5, rows[0].size() - 6);  // {"X":...}
}

std::string error_of(const std::string& vql) {
  return error_of_run([&] { run(vql); });
}

std::string read(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class Scratch {
 public:
  Scratch() {
    char tmpl[] = "/tmp/outpost-misc-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
  }
  ~Scratch() { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

 private:
  std::filesystem::path dir_;
};

TEST(MiscFunctions, GetpidIsTheAgentsProcess) {
  EXPECT_EQ(one("getpid()"), std::to_string(::getpid()));
  EXPECT_EQ(run("SELECT Pid FROM pslist(pid=getpid())"),
            std::vector<std::string>{"{\"Pid\":" + std::to_string(::getpid()) + "}"});
}

TEST(MiscFunctions, VersionIsNullForWhatTheAgentLacks) {
  EXPECT_EQ(one("version(function='getpid')"), "1");
  EXPECT_EQ(one("version(plugin='query')"), "1");
  EXPECT_EQ(one("version(plugin='getpid')"), "null");  // a function, not a plugin
  EXPECT_EQ(one("version(function='shell_session')"), "null");
  EXPECT_EQ(one("version()"), "0");
  // Linux.Sys.BashShell's preconditions choose its second source.
  EXPECT_EQ(run("SELECT 1 AS A FROM scope() WHERE version(function='shell_session') AND TRUE").size(), 0u);
  EXPECT_EQ(run("SELECT 1 AS A FROM scope() WHERE NOT version(function='shell_session') OR NOT TRUE").size(), 1u);
}

TEST(MiscFunctions, PathspecParsesPathsAndJsonPathspecs) {
  EXPECT_EQ(one("pathspec(parse='/usr/bin/ls').Basename"), "\"ls\"");
  EXPECT_EQ(one("str(str=pathspec(parse='/usr//bin/./ls')[:2])"), "\"/usr/bin\"");
  // Generic paths: either separator, and quotes around a component holding one.
  EXPECT_EQ(one("pathspec(parse='''C:\\Windows\\\"a/b\"\\x''').Components"), "[\"C:\",\"Windows\",\"a/b\",\"x\"]");
  EXPECT_EQ(one("pathspec(parse='''a\\b/c''', path_type='linux').Components"), "[\"a\\\\b\",\"c\"]");
  // Linux.Detection.Yara.Process names its uploads so.
  EXPECT_EQ(one("pathspec(Path=format(format='%v-%v.dmp', args=['bash', 12]))"), "\"/bash-12.dmp\"");
  EXPECT_EQ(one("pathspec(Path='m/n.txt', DelegateAccessor='file', DelegatePath='/tmp/x.zip')"),
            R"("{\"DelegateAccessor\":\"file\",\"DelegatePath\":\"/tmp/x.zip\",\"Path\":\"/m/n.txt\"}")");
  std::string parsed = "pathspec(parse='{\"DelegateAccessor\":\"file\",\"DelegatePath\":\"/tmp/x.zip\",\"Path\":\"a/b\"}')";
  EXPECT_EQ(one(parsed + ".DelegatePath"), "\"/tmp/x.zip\"");
  EXPECT_EQ(one(parsed + ".Path"), "\"/a/b\"");
  EXPECT_EQ(one("(" + parsed + " + 'c').Dirname.Components"), "[\"a\",\"b\"]");
  EXPECT_EQ(one("(" + parsed + " + 'c').DelegateAccessor"), "\"file\"");
  EXPECT_EQ(one("pathspec(DelegatePath='/x.zip', Delegate=pathspec(parse='/y.zip')).DelegatePath"),
            R"("{\"Path\":\"/y.zip\"}")");
  EXPECT_EQ(one("pathspec(parse='C:\\\\x', path_type='windows')"), "null");  // logged
}

TEST(MiscFunctions, TempdirGoesWithAllInItWhenTheQueryEnds) {
  auto rows = run_allowed(
      "LET Dir <= tempdir() "
      "LET Copy <= copy(filename='hello', accessor='data', dest=Dir + '/a/b.txt', create_directories=TRUE) "
      "SELECT Dir, Copy, read_file(filename=Copy) AS Text FROM scope()");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_NE(rows[0].find("\"Text\":\"hello\""), std::string::npos) << rows[0];
  auto begin = rows[0].find("\"Dir\":\"") + 7, end = rows[0].find('"', begin);
  std::string dir = rows[0].substr(begin, end - begin);
  const char* tmp = std::getenv("TMPDIR");
  EXPECT_EQ(dir.rfind(std::string(tmp ? tmp : "/tmp") + "/outpost-tmp-", 0), 0u) << dir;
  EXPECT_NE(rows[0].find("\"Copy\":\"" + dir + "/a/b.txt\""), std::string::npos) << rows[0];
  EXPECT_FALSE(std::filesystem::exists(dir)) << dir << " outlived its query";
}

TEST(MiscFunctions, CopyWritesDestWithItsPermissions) {
  Scratch s;
  std::ofstream(s.path("src")) << "abc";
  mode_t umask = ::umask(0);
  ::umask(umask);
  EXPECT_EQ(one("copy(filename='" + s.path("src") + "', dest='" + s.path("dst") + "', permissions='0750')", true),
            "\"" + s.path("dst") + "\"");
  EXPECT_EQ(read(s.path("dst")), "abc");
  EXPECT_EQ(std::filesystem::status(s.path("dst")).permissions(), std::filesystem::perms(0750 & ~umask));
  one("copy(filename='de', accessor='data', dest='" + s.path("dst") + "', append=TRUE)", true);
  EXPECT_EQ(read(s.path("dst")), "abcde");
  one("copy(filename='" + s.path("src") + "', dest='" + s.path("rw") + "', permissions='rw-r-----')", true);
  EXPECT_EQ(std::filesystem::status(s.path("rw")).permissions(), std::filesystem::perms(0640 & ~umask));
  // As Velociraptor: appending needs dest to be there.
  EXPECT_EQ(one("copy(filename='x', accessor='data', dest='" + s.path("none") + "', append=TRUE)", true), "null");
  EXPECT_FALSE(std::filesystem::exists(s.path("none")));
}

TEST(MiscFunctions, CopyRefusesWithoutExecveAboveItsLimitAndBadModes) {
  Scratch s;
  std::ofstream(s.path("src")) << "abc";
  std::filesystem::resize_file(s.path("src"), (64 << 20) + 1);  // sparse
  testing::LogCapture log;
  EXPECT_EQ(one("copy(filename='" + s.path("src") + "', dest='" + s.path("dst") + "')"), "null");
  EXPECT_NE(log.text().find("copy(): refused"), std::string::npos) << log.text();
  EXPECT_EQ(one("copy(filename='" + s.path("src") + "', dest='" + s.path("dst") + "')", true), "null");
  EXPECT_NE(log.text().find("copy(): filename: more than 64 MiB"), std::string::npos) << log.text();
  EXPECT_EQ(one("copy(filename='a', accessor='data', dest='" + s.path("dst") + "', permissions='rwz')", true), "null");
  EXPECT_NE(log.text().find("copy(): permissions: \"rwz\""), std::string::npos) << log.text();
  EXPECT_FALSE(std::filesystem::exists(s.path("dst")));
}

TEST(MiscFunctions, DelayGivesEachRowItsDelayLater) {
  Engine engine(registry());
  Env env;
  auto stream = engine.start("SELECT * FROM delay(query={SELECT 1 AS A FROM scope()}, delay=1)", {}, env);
  auto start = std::chrono::steady_clock::now();
  std::vector<Row> rows;
  Step step = stream->next(rows, 10);
  EXPECT_TRUE(rows.empty());
  ASSERT_EQ(step.state, Step::State::wait);
  EXPECT_GT(step.wait, 500ms);
  EXPECT_LE(step.wait, 1s);
  for (int i = 0; i < 100 && step.state != Step::State::done; ++i) {
    std::this_thread::sleep_for(step.wait);
    step = stream->next(rows, 10);
  }
  EXPECT_EQ(json_lines(rows), std::vector<std::string>{"{\"A\":1}"});
  EXPECT_GE(std::chrono::steady_clock::now() - start, 1s);
  // Without delay, through a buffer of one row.
  EXPECT_EQ(run("SELECT * FROM delay(query=[dict(A=1), dict(A=2), dict(A=3)], delay=0, buffer_size=1)"),
            (std::vector<std::string>{"{\"A\":1}", "{\"A\":2}", "{\"A\":3}"}));
  EXPECT_NE(error_of("SELECT * FROM delay(query={SELECT 1 FROM scope()}, delay=1, buffer_size=-1)")
                .find("delay(): buffer_size: expected rows >= 0"),
            std::string::npos);
}

TEST(MiscFunctions, QueryRunsTextInAScopeOfItsOwn) {
  EXPECT_EQ(run("SELECT * FROM query(query='LET Y = X + 1 SELECT X AS A FROM scope() SELECT Y AS A FROM scope()', "
                "env=dict(X=5))"),
            (std::vector<std::string>{"{\"A\":5}", "{\"A\":6}"}));
  EXPECT_EQ(run("LET X = 7 SELECT * FROM query(query='SELECT X AS A FROM scope()')"),
            std::vector<std::string>{"{\"A\":null}"});
  // Two in turn: the second starts once the first run, and its engine, are gone.
  EXPECT_EQ(run("SELECT * FROM chain(a={SELECT * FROM query(query='SELECT 1 AS A FROM scope()')}, "
                "b={SELECT * FROM query(query='SELECT 2 AS A FROM scope()')})"),
            (std::vector<std::string>{"{\"A\":1}", "{\"A\":2}"}));
  EXPECT_EQ(error_of("SELECT * FROM query(query='SELECT * FROM nosuch()')").rfind("query(): query: ", 0), 0u);
  EXPECT_EQ(error_of("SELECT * FROM query(query='SELECT 1 FROM scope()', inherit=TRUE)").rfind("query(): inherit: ", 0),
            0u);
  EXPECT_NE(error_of("LET Q = SELECT * FROM query(query=Q) SELECT * FROM Q").find("query(): queries run each other more"),
            std::string::npos);
}

TEST(MiscFunctions, QueryRunsStoredQueriesUntilExitOrTimeout) {
  // Linux.Sys.BashShell's form.
  EXPECT_EQ(run("LET S = SELECT X AS A FROM scope() SELECT * FROM query(query=S, env=dict(X=3), inherit=TRUE, "
                "timeout=10)"),
            std::vector<std::string>{"{\"A\":3}"});
  EXPECT_EQ(run("SELECT * FROM query(query={SELECT _value AS V FROM foreach(row=[1, 2, 3, 4])}, exit='x => x.V = 3')"),
            (std::vector<std::string>{"{\"V\":1}", "{\"V\":2}"}));
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(run("SELECT * FROM query(query={SELECT * FROM delay(query={SELECT 1 AS A FROM scope()}, delay=60)}, "
                "timeout=0.2)",
                Waits::sleep),
            std::vector<std::string>{});
  EXPECT_LT(std::chrono::steady_clock::now() - start, 30s);  // ended by its timeout, not the row's delay
}

}  // namespace
}  // namespace outpost::vql
