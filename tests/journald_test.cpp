// parse_journald() and watch_journald() over journal files the tests make
// themselves: entries written in journal export format and turned into a
// journal file by systemd-journal-remote (Debian package
// systemd-journal-remote; the tests are skipped without it).

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "queries/engine.hpp"
#include "tests/log_capture.hpp"
#include "tests/temp_dir.hpp"
#include "tests/vql_test_util.hpp"

namespace outpost::vql {


namespace {

using namespace std::chrono_literals;
using Entry = std::vector<std::pair<std::string, std::string>>;

const Registry& registry() { return default_registry(); }

std::string journal_remote() {
  for (const char* p : {"/usr/lib/systemd/systemd-journal-remote", "/lib/systemd/systemd-journal-remote"})
    if (::access(p, X_OK) == 0) return p;
  return "";
}

// An entry at `seconds` past the epoch (and as many microseconds on the
// monotonic clock), with `fields` after _BOOT_ID. An entry's fields are
// stored in the order their values first appeared in the file, so tests use
// values not seen before to keep the order written.
Entry entry(int64_t seconds, Entry fields) {
  Entry e = {{"__REALTIME_TIMESTAMP", std::to_string(seconds * 1'000'000)},
             {"__MONOTONIC_TIMESTAMP", std::to_string(seconds)},
             {"_BOOT_ID", "0123456789abcdef0123456789abcdef"}};
  e.insert(e.end(), fields.begin(), fields.end());
  return e;
}

// Journal export format: NAME=value lines, a value holding a newline written
// as NAME, newline, its size (64-bit little endian), the bytes, newline; an
// empty line ends an entry.
std::string export_format(const std::vector<Entry>& entries) {
  std::string out;
  for (auto& e : entries) {
    for (auto& [name, value] : e) {
      if (value.find('\n') == std::string::npos) {
        out += name + "=" + value + "\n";
        continue;
      }
      out += name + "\n";
      for (int i = 0; i < 8; ++i) out += static_cast<char>((uint64_t{value.size()} >> (8 * i)) & 0xff);
      out += value + "\n";
    }
    out += "\n";
  }
  return out;
}

class JournalFiles : public ::testing::Test {
 protected:
  // Appends `entries` to the journal file `name` (made when absent); its path.
  std::string write(const std::string& name, const std::vector<Entry>& entries) {
    auto path = dir_.path(name).string(), input = path + ".export", log = path + ".log";
    std::ofstream(input, std::ios::binary) << export_format(entries);
    std::string command = tool_ + " -o '" + path + "' - < '" + input + "' > '" + log + "' 2>&1";
    if (std::system(command.c_str()) != 0) {
      std::stringstream text;
      text << std::ifstream(log).rdbuf();
      ADD_FAILURE() << command << ": " << text.str();
    }
    return path;
  }

  std::vector<std::string> run(const std::string& vql, std::vector<Binding> params = {}) {
    return json_lines(run_rows(registry(), vql, Waits::fail, 1000, std::move(params)));
  }

  std::string error_of(const std::string& vql) {
    return error_of_run([&] { run(vql); });
  }

  std::string tool_ = journal_remote();
  testing::TempDir dir_;
};

// The tests that make journal files.
class Journald : public JournalFiles {
 protected:
  void SetUp() override {
    if (tool_.empty())
      GTEST_SKIP() << "systemd-journal-remote is not installed (Debian package systemd-journal-remote)";
  }
};

// Rows of an event query until `want` came or `timeout` passed.
std::vector<std::string> pull(RowStream& s, size_t want, std::chrono::milliseconds timeout) {
  std::vector<Row> rows;
  for (auto deadline = std::chrono::steady_clock::now() + timeout;
       rows.size() < want && std::chrono::steady_clock::now() < deadline;) {
    Step step = s.next(rows, 100);
    if (step.state == Step::State::done) break;
    if (step.state != Step::State::more) std::this_thread::sleep_for(20ms);
  }
  return json_lines(rows);
}

// The rows of one call: a watch's first call opens its files and finds their end.
std::vector<std::string> first_call(RowStream& s) {
  std::vector<Row> rows;
  s.next(rows, 100);
  return json_lines(rows);
}

constexpr int64_t T = 1'700'000'000;  // 2023-11-14T22:13:20Z

TEST_F(Journald, ParseGivesEveryEntryAsWritten) {
  auto path = write("a.journal", {entry(T, {{"_PID", "42"},
                                            {"_UID", "1000"},
                                            {"_COMM", "sshd"},
                                            {"_SELINUX_CONTEXT", "unconfined\n"},
                                            {"_SYSTEMD_OWNER_UID", "1001"},
                                            {"_SOURCE_REALTIME_TIMESTAMP", "1699999999123456"},
                                            {"PRIORITY", "6"},
                                            {"SYSLOG_IDENTIFIER", "sshd"},
                                            {"MESSAGE", "Accepted publickey for root"},
                                            {"CPU_USAGE_NSEC", "5643944000"}}),
                                  entry(T + 1, {{"MESSAGE", "second"}})});
  EXPECT_EQ(run("SELECT * FROM parse_journald(filename='" + path + "')"),
            (std::vector<std::string>{
                R"({"System":{"Seq":1,"Timestamp":"2023-11-14T22:13:20.000000000Z",)"
                R"("_BOOT_ID":"0123456789abcdef0123456789abcdef","_PID":42,"_UID":1000,"_COMM":"sshd",)"
                R"("_SELINUX_CONTEXT":"unconfined\u000a","_SYSTEMD_OWNER_UID":"1001",)"
                R"("SOURCE_REALTIME_TIMESTAMP":"2023-11-14T22:13:19.123456000Z"},)"
                R"("EventData":{"PRIORITY":6,"SYSLOG_IDENTIFIER":"sshd","MESSAGE":"Accepted publickey for root",)"
                R"("CPU_USAGE_NSEC":"5643944000"}})",
                R"({"System":{"Seq":2,"Timestamp":"2023-11-14T22:13:21.000000000Z",)"
                R"("_BOOT_ID":"0123456789abcdef0123456789abcdef"},"EventData":{"MESSAGE":"second"}})"}));
}

TEST_F(Journald, RawGivesEveryFieldAsText) {
  auto path = write("a.journal", {entry(T, {{"_PID", "42"},
                                            {"_SOURCE_REALTIME_TIMESTAMP", "1699999999123456"},
                                            {"PRIORITY", "6"},
                                            {"MESSAGE", "hello"}})});
  EXPECT_EQ(run("SELECT * FROM parse_journald(filename='" + path + "', raw=TRUE)"),
            (std::vector<std::string>{
                R"({"Timestamp":"2023-11-14T22:13:20.000000000Z","_BOOT_ID":"0123456789abcdef0123456789abcdef",)"
                R"("_PID":"42","_SOURCE_REALTIME_TIMESTAMP":"1699999999123456","PRIORITY":"6","MESSAGE":"hello"})"}));
}

// Velociraptor's parser reads numbers with Go's strconv.ParseInt(s, 0, 64);
// what it does not read stays text.
TEST_F(Journald, NumbersAndTimesAreTypedAsVelociraptorTypesThem) {
  auto path = write("a.journal", {entry(T, {{"CODE_LINE", "0x10"},
                                            {"TID", "010"},
                                            {"PRIORITY", "+3"},
                                            {"SYSLOG_FACILITY", "-1"},
                                            {"_PID", "1_000"},
                                            {"_UID", "_1"},
                                            {"SYSLOG_PID", "12a"},
                                            {"ERRONO", "9223372036854775808"},
                                            {"_AUDIT_SESSION", "0b101"},
                                            {"SYSLOG_TIMESTAMP", "1700000005"},
                                            {"CODE_FUNC", "1234"}})});
  EXPECT_EQ(run("SELECT System, EventData FROM parse_journald(filename='" + path + "')"),
            (std::vector<std::string>{
                R"({"System":{"Seq":1,"Timestamp":"2023-11-14T22:13:20.000000000Z",)"
                R"("_BOOT_ID":"0123456789abcdef0123456789abcdef","_PID":1000,"_UID":"_1","_AUDIT_SESSION":5},)"
                R"("EventData":{"CODE_LINE":16,"TID":8,"PRIORITY":3,"SYSLOG_FACILITY":-1,"SYSLOG_PID":"12a",)"
                R"("ERRONO":"9223372036854775808","SYSLOG_TIMESTAMP":"2023-11-14T22:13:25.000000000Z",)"
                R"("CODE_FUNC":"1234"}})"}));
}

// A big field (stored compressed by systemd-journal-remote) comes whole:
// libsystemd's 64 KiB size hint is turned off.
TEST_F(Journald, LongFieldsComeWhole) {
  auto path = write("a.journal", {entry(T, {{"MESSAGE", std::string(100000, 'x') + "end"}})});
  EXPECT_EQ(run("SELECT len(list=EventData.MESSAGE) AS N, EventData.MESSAGE =~ 'xend$' AS End "
                "FROM parse_journald(filename='" + path + "')"),
            (std::vector<std::string>{R"({"N":100003,"End":true})"}));
}

TEST_F(Journald, TimeBoundsIncludeBothEnds) {
  auto path = write("a.journal", {entry(T, {{"MESSAGE", "one"}}), entry(T + 1, {{"MESSAGE", "two"}}),
                                  entry(T + 2, {{"MESSAGE", "three"}})});
  auto messages = [&](const std::string& bounds) {
    return run("SELECT EventData.MESSAGE AS M FROM parse_journald(filename='" + path + "'" + bounds + ")");
  };
  EXPECT_EQ(messages(", start_time='2023-11-14T22:13:21Z', end_time=1700000001"),
            (std::vector<std::string>{R"({"M":"two"})"}));
  EXPECT_EQ(messages(", start_time=timestamp(epoch=1700000001)"),
            (std::vector<std::string>{R"({"M":"two"})", R"({"M":"three"})"}));
  EXPECT_EQ(messages(", end_time='2023-11-14T22:13:20.5Z'"), (std::vector<std::string>{R"({"M":"one"})"}));
  EXPECT_EQ(messages(", start_time=NULL, end_time=NULL").size(), 3u);
}

TEST_F(Journald, FilesAreReadInTurn) {
  auto a = write("a.journal", {entry(T, {{"MESSAGE", "a1"}}), entry(T + 2, {{"MESSAGE", "a2"}})});
  auto b = write("b.journal", {entry(T + 1, {{"MESSAGE", "b1"}})});
  EXPECT_EQ(run("SELECT System.Seq AS S, EventData.MESSAGE AS M FROM parse_journald(filename=['" + b + "', '" + a +
                "'])"),
            (std::vector<std::string>{R"({"S":1,"M":"b1"})", R"({"S":1,"M":"a1"})", R"({"S":2,"M":"a2"})"}));
}

// Shaped as Linux.Forensics.Journal calls it: a glob's OSPath, times NULL
// when its parameters are empty.
TEST_F(Journald, ReadsWhatGlobFindsWithoutTimes) {
  write("a.journal", {entry(T, {{"SYSLOG_IDENTIFIER", "sshd"}, {"MESSAGE", "a1"}}),
                      entry(T + 1, {{"SYSLOG_IDENTIFIER", "cron"}, {"MESSAGE", "a2"}})});
  auto rows = run("SELECT EventData.MESSAGE AS M FROM foreach(row={SELECT OSPath FROM glob(globs=Glob)}, "
                  "query={SELECT * FROM parse_journald(filename=OSPath, start_time=After, end_time=Before) "
                  "WHERE EventData.SYSLOG_IDENTIFIER =~ 'SSH'})",
                  {{"Glob", dir_.path("*.journal").string(), {}}, {"After", Value(), {}}, {"Before", Value(), {}}});
  EXPECT_EQ(rows, (std::vector<std::string>{R"({"M":"a1"})"}));
}

TEST_F(Journald, EachCallReadsAtMostItsBudget) {
  std::vector<Entry> entries;
  for (int i = 0; i < 5; ++i) entries.push_back(entry(T + i, {{"MESSAGE", "m" + std::to_string(i)}}));
  auto path = write("a.journal", entries);
  Env env;
  auto stream = registry().plugin("parse_journald")->make(Args("parse_journald", {{"filename", path}}), env);
  std::vector<Row> rows;
  Step step;
  for (int calls = 0; calls < 10 && step.state != Step::State::done; ++calls) {
    size_t before = rows.size();
    step = stream->next(rows, 2);
    EXPECT_LE(rows.size() - before, 2u);
  }
  EXPECT_EQ(step.state, Step::State::done);
  EXPECT_EQ(rows.size(), 5u);
}

TEST_F(JournalFiles, FailuresNameThePluginAndTheFile) {
  auto text = dir_.path("text.journal").string(), empty = dir_.path("empty.journal").string();
  std::ofstream(text) << std::string(4096, 'x');
  std::ofstream{empty};
  auto missing = dir_.path("missing.journal").string();
  // parse_journald() logs each file it cannot read and goes on, as Velociraptor's.
  testing::LogCapture log;
  EXPECT_EQ(run("SELECT * FROM parse_journald(filename=['" + missing + "', '" + text + "', '" + empty + "'])"),
            std::vector<std::string>{});
  const std::string not_journal = ": not a journal file, or a truncated or corrupt one: ";
  EXPECT_NE(log.text().find("parse_journald(): " + missing + ": No such file or directory"), std::string::npos)
      << log.text();
  EXPECT_NE(log.text().find("parse_journald(): " + text + not_journal + "Bad message"), std::string::npos);
  EXPECT_NE(log.text().find("parse_journald(): " + empty + not_journal + "No data available"), std::string::npos);
  EXPECT_EQ(error_of("SELECT * FROM watch_journald(filename='" + missing + "')"),
            "watch_journald(): " + missing + ": No such file or directory");
  // Constant arguments are checked before the query runs, at their place.
  EXPECT_EQ(error_of("SELECT * FROM parse_journald(filename='x.journal', accessor='data')"),
            "line 1, column 15: parse_journald(): accessor: a journal is a binary file, not text: \"data\" is not "
            "supported (file or auto)");
  EXPECT_EQ(error_of("SELECT * FROM watch_journald(filename='x.journal', accessor='ntfs')"),
            "line 1, column 15: watch_journald(): accessor: \"ntfs\" is not supported: file, auto");
  EXPECT_EQ(error_of("SELECT * FROM parse_journald(filename='x.journal', start_time='yesterday')"),
            "line 1, column 15: parse_journald(): start_time: expected a time (RFC 3339 or epoch seconds), got "
            "string");
}

TEST_F(Journald, WatchGivesOnlyEntriesAddedAfterItStarted) {
  auto path = write("a.journal", {entry(T, {{"MESSAGE", "old1"}}), entry(T + 1, {{"MESSAGE", "old2"}})});
  ASSERT_TRUE(registry().plugin("watch_journald")->event);
  Engine engine(registry());
  Env env;
  auto stream = engine.start("SELECT System.Seq AS S, EventData.MESSAGE AS M FROM watch_journald(filename='" +
                                 path + "')",
                             {}, env);
  EXPECT_EQ(first_call(*stream), std::vector<std::string>{});  // it has started, at the end
  write("a.journal", {entry(T + 2, {{"MESSAGE", "new1"}})});
  EXPECT_EQ(pull(*stream, 1, 3s), (std::vector<std::string>{R"({"S":3,"M":"new1"})"}));
}

// journald rotates by renaming the file and starting a new one: what the
// old one got before, then the new one from its start.
TEST_F(Journald, WatchFollowsRotation) {
  auto path = write("system.journal", {entry(T, {{"MESSAGE", "old"}})});
  Engine engine(registry());
  Env env;
  auto stream = engine.start(
      "SELECT System.Seq AS S, EventData.MESSAGE AS M FROM watch_journald(filename='" + path + "', raw=FALSE)", {},
      env);
  EXPECT_EQ(first_call(*stream), std::vector<std::string>{});  // it has started, at the end
  write("system.journal", {entry(T + 1, {{"MESSAGE", "before rotation"}})});
  std::filesystem::rename(path, dir_.path("system@1.journal"));
  write("system.journal", {entry(T + 2, {{"MESSAGE", "after rotation"}})});
  EXPECT_EQ(pull(*stream, 2, 3s),
            (std::vector<std::string>{R"({"S":2,"M":"before rotation"})", R"({"S":1,"M":"after rotation"})"}));
}

}  // namespace
}  // namespace outpost::vql
