// Files whose close(2) fails, on a real FUSE filesystem (outpost-faulty-fs,
// every flush EIO): a query that reads one gets its data and the agent goes
// on (kj::AutoCloseFd's destructor would throw the error, and from a stream's
// destructor end the process); a copy(), a tempfile() or sqlite()'s private
// copy written to one is a failed write.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "queries/engine.hpp"
#include "queries/linux_util.hpp"
#include "tests/faulty_fs.hpp"
#include "tests/log_capture.hpp"
#include "tests/temp_dir.hpp"
#include "tests/vql_test_util.hpp"

namespace outpost::vql {
namespace {

// Run with vql.allow_execve, which copy() needs; the streams, and their files, are closed by the end.
std::vector<std::string> run(const std::string& vql) { return json_lines(run_rows_allowed(default_registry(), vql)); }

TEST(CloseErrors, AFileWhoseCloseFailsIsReadWholeAndTheQueryGoesOn) {
  testing::FaultyFs fs;
  if (!fs.skip_reason().empty()) GTEST_SKIP() << fs.skip_reason();
  std::string file = fs.path("lines.txt");
  {  // the fault is real
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << errno_message(errno);
    errno = 0;
    EXPECT_EQ(::close(fd), -1);
    EXPECT_EQ(errno, EIO);
  }
  EXPECT_EQ(run("SELECT Line FROM parse_lines(filename='" + file + "')"),
            (std::vector<std::string>{R"({"Line":"one"})", R"({"Line":"two"})", R"({"Line":"three"})"}));
  // Ended before the file's end: the stream closes it as it goes.
  EXPECT_EQ(run("SELECT Line FROM parse_lines(filename='" + file + "') LIMIT 1"),
            (std::vector<std::string>{R"({"Line":"one"})"}));
  EXPECT_EQ(run("SELECT Data, Error FROM read_file(filenames='" + file + "')"),
            (std::vector<std::string>{R"({"Data":"one\u000atwo\u000athree\u000a","Error":""})"}));
  EXPECT_EQ(run("SELECT read_file(filename='" + file + "') AS Data FROM scope()"),
            (std::vector<std::string>{R"({"Data":"one\u000atwo\u000athree\u000a"})"}));
  EXPECT_EQ(run("SELECT hash(path='" + file + "').SHA256 AS SHA256 FROM scope()"),
            (std::vector<std::string>{R"({"SHA256":"b6285c57e8797db5d4c51c80d6f11938afda9b11c6a003549709189e9b4b92a2"})"}));
}

TEST(CloseErrors, ACopyWhoseCloseFailsIsAFailedCopy) {
  testing::FaultyFs fs;
  if (!fs.skip_reason().empty()) GTEST_SKIP() << fs.skip_reason();
  std::string dest = fs.path("copy.txt");
  testing::LogCapture log;
  EXPECT_EQ(run("SELECT copy(filename='abc', accessor='data', dest='" + dest + "') AS X FROM scope()"),
            (std::vector<std::string>{R"({"X":null})"}));
  EXPECT_NE(log.text().find("copy(): dest: writing " + dest + ": Input/output error"), std::string::npos)
      << log.text();
}

TEST(CloseErrors, ATempFileWhoseCloseFailsIsAFailedWrite) {
  testing::FaultyFs fs;
  if (!fs.skip_reason().empty()) GTEST_SKIP() << fs.skip_reason();
  testing::TmpdirSet tmp(fs.dir());
  testing::LogCapture log;
  EXPECT_EQ(run("SELECT tempfile(data='abc') AS X FROM scope()"), (std::vector<std::string>{R"({"X":null})"}));
  EXPECT_NE(log.text().find("tempfile(): writing " + fs.dir() + "/outpost-tmp-"), std::string::npos) << log.text();
  EXPECT_NE(log.text().find(": Input/output error"), std::string::npos) << log.text();
}

// sqlite() on bytes (accessor='data') writes them to a private copy in $TMPDIR.
TEST(CloseErrors, ASqliteCopyWhoseCloseFailsIsAnErrorNotRows) {
  testing::FaultyFs fs;
  if (!fs.skip_reason().empty()) GTEST_SKIP() << fs.skip_reason();
  testing::TempDir dir;
  std::string db = dir.path("a.db").string();
  sqlite3* c = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &c), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(c, "CREATE TABLE t(i); INSERT INTO t VALUES (42)", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(c);
  auto bytes = read_whole_file(db, 1 << 20);
  ASSERT_TRUE(bytes);
  std::vector<Binding> params{{"D", Value(*bytes), nullptr}};
  auto query = "SELECT * FROM sqlite(file=D, accessor='data', query='SELECT i FROM t')";
  ASSERT_EQ(json_lines(run_rows(default_registry(), query, Waits::fail, 1000, params)),
            (std::vector<std::string>{R"({"i":42})"}));  // the bytes are a database
  testing::TmpdirSet tmp(fs.dir());
  testing::LogCapture log;
  EXPECT_EQ(json_lines(run_rows(default_registry(), query, Waits::fail, 1000, params)), std::vector<std::string>{});
  EXPECT_NE(log.text().find("cannot write a private copy: Input/output error"), std::string::npos) << log.text();
}

}  // namespace
}  // namespace outpost::vql
