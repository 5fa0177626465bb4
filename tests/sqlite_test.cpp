// sqlite(): databases the tests make with the SQLite C API in a temp dir,
// read in place, from accessor='data' bytes, and as a private copy while
// another connection holds them locked; writes, ATTACH and hostile files
// refused or logged, never a crash or a hang.

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "queries/engine.hpp"
#include "tests/log_capture.hpp"
#include "tests/temp_dir.hpp"
#include "tests/vql_test_util.hpp"

namespace outpost::vql {

namespace {

using outpost::testing::TempDir;
using outpost::testing::TmpdirSet;
using Lines = std::vector<std::string>;
namespace fs = std::filesystem;

const Registry& registry() { return default_registry(); }

Binding var(const std::string& name, Value value) { return {name, std::move(value), nullptr}; }

// A connection of the test's own (the other program using the database).
class Connection {
 public:
  explicit Connection(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) != SQLITE_OK)
      ADD_FAILURE() << path << ": " << sqlite3_errmsg(db_);
  }
  ~Connection() { sqlite3_close(db_); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void exec(const std::string& sql) {
    char* error = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error) != SQLITE_OK)
      ADD_FAILURE() << sql << ": " << (error ? error : "?");
    sqlite3_free(error);
  }

 private:
  sqlite3* db_ = nullptr;
};

// Every storage class, and empty text and blob.
const std::string kTable =
    "CREATE TABLE t(i INTEGER, f REAL, s TEXT, b BLOB, n);"
    "INSERT INTO t VALUES (42, 1.5, 'forty-two', x'00ff10', NULL);"
    "INSERT INTO t VALUES (-7, -0.25, '', x'', NULL);";

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  ASSERT_TRUE(out.good()) << path;
}

// Bytes of a fixed pseudo-random sequence (mt19937's output is the same everywhere).
std::string random_bytes(size_t size, uint32_t seed) {
  std::mt19937 gen(seed);
  std::string bytes(size, '\0');
  for (auto& c : bytes) c = static_cast<char>(gen() & 0xff);
  return bytes;
}

// What `dir` holds: "copy/<file>" for each file in a private copy's
// directory (outpost-sqlite-*), the other names as they are; sorted.
Lines held(const fs::path& dir) {
  Lines out;
  for (auto& e : fs::directory_iterator(dir)) {
    std::string name = e.path().filename().string();
    if (name.rfind("outpost-sqlite-", 0) == 0 && e.is_directory()) {
      for (auto& f : fs::directory_iterator(e.path())) out.push_back("copy/" + f.path().filename().string());
    } else {
      out.push_back(name);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool has(const Lines& lines, const std::string& line) {
  return std::find(lines.begin(), lines.end(), line) != lines.end();
}

// The plugin's rows for `args`, pulled from its own stream one per call,
// and what `dir` held when the first came and when the stream said done
// (before it is destroyed: the plugin must remove its copy itself).
struct Pulled {
  Lines rows, during, after;
};

Pulled pull_one_at_a_time(std::vector<std::pair<std::string, Value>> args, const fs::path& dir) {
  Env env;
  auto stream = registry().plugin("sqlite")->make(Args("sqlite", std::move(args)), env);
  Pulled p;
  std::vector<Row> rows;
  for (int calls = 0;; ++calls) {
    if (calls == 10000) {
      ADD_FAILURE() << "the stream did not end";
      break;
    }
    size_t before = rows.size();
    Step step = stream->next(rows, 1);
    EXPECT_LE(rows.size(), before + 1);
    if (before == 0 && rows.size() == 1) p.during = held(dir);
    if (step.state == Step::State::done) break;
    if (step.state != Step::State::more) {
      ADD_FAILURE() << "a finite query waited";
      break;
    }
  }
  p.after = held(dir);
  p.rows = json_lines(rows);
  return p;
}

class Sqlite : public ::testing::Test {
 protected:
  // A database `name` in the test's directory, made by `sql`; its path.
  std::string make_db(const std::string& name, const std::string& sql = kTable) {
    auto path = dir_.path(name).string();
    Connection(path).exec(sql);
    return path;
  }

  Lines run(const std::string& vql, std::vector<Binding> params = {}) {
    return json_lines(run_rows(registry(), vql, Waits::fail, 1000, std::move(params)));
  }
  // `sql` run on `path` by "SELECT * FROM sqlite(file=F, query=Q, args=A)".
  Lines query(const std::string& path, const std::string& sql, Value args = Value()) {
    return run("SELECT * FROM sqlite(file=F, query=Q, args=A)", {var("F", path), var("Q", sql), var("A", args)});
  }
  std::string error_of(const std::string& path, const std::string& sql, Value args = Value()) {
    return error_of_run([&] { query(path, sql, args); });
  }

  TempDir dir_;
};

TEST_F(Sqlite, GivesTypedColumnsInTheirOrder) {
  auto path = make_db("a.db");
  auto rows = run_rows(registry(), "SELECT * FROM sqlite(file=F, query='SELECT * FROM t')", Waits::fail, 1000,
                       {var("F", path)});
  ASSERT_EQ(rows.size(), 2u);
  Lines names;
  for (auto& item : rows[0].items()) names.push_back(item.first);
  EXPECT_EQ(names, (Lines{"i", "f", "s", "b", "n"}));
  const Row& r = rows[0];
  ASSERT_TRUE(r.find("i") && r.find("i")->as_int());
  EXPECT_EQ(*r.find("i")->as_int(), 42);
  ASSERT_TRUE(r.find("f") && r.find("f")->as_double());
  EXPECT_EQ(*r.find("f")->as_double(), 1.5);
  ASSERT_TRUE(r.find("s") && r.find("s")->as_string());
  EXPECT_EQ(*r.find("s")->as_string(), "forty-two");
  ASSERT_TRUE(r.find("b") && r.find("b")->as_string());  // a BLOB's bytes, NUL and 0xff included
  EXPECT_EQ(*r.find("b")->as_string(), std::string("\x00\xff\x10", 3));
  ASSERT_TRUE(r.find("n"));
  EXPECT_TRUE(r.find("n")->is_null());
  // Empty text and an empty blob are empty strings, not NULL.
  EXPECT_EQ(to_json(rows[1]), R"({"i":-7,"f":-0.25,"s":"","b":"","n":null})");
  // Columns as SQLite names them; an expression's type is its value's.
  EXPECT_EQ(query(path, "SELECT i AS x, i + 1, typeof(b), i / 4.0 FROM t WHERE i > 0"),
            (Lines{R"j({"x":42,"i + 1":43,"typeof(b)":"blob","i / 4.0":10.5})j"}));
}

TEST_F(Sqlite, RowsStreamAsPulled) {
  auto path = make_db("a.db");
  // Rows without end: only a stream that steps as it is pulled gives three.
  const std::string endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c";
  EXPECT_EQ(run("SELECT * FROM sqlite(file=F, query=Q) LIMIT 3", {var("F", path), var("Q", endless)}),
            (Lines{R"({"x":1})", R"({"x":2})", R"({"x":3})"}));
  // One row per call when one is asked for.
  auto p = pull_one_at_a_time({{"file", path}, {"query", "SELECT i FROM t ORDER BY i"}}, dir_.root());
  EXPECT_EQ(p.rows, (Lines{R"({"i":-7})", R"({"i":42})"}));
}

TEST_F(Sqlite, ListArgsBindInOrder) {
  auto path = make_db("a.db");
  EXPECT_EQ(run("SELECT * FROM sqlite(file=F, query='SELECT s FROM t WHERE i = ? OR f = ? ORDER BY i', "
                "args=[42, -0.25])",
                {var("F", path)}),
            (Lines{R"({"s":""})", R"({"s":"forty-two"})"}));
  // One value stands for a list of one.
  EXPECT_EQ(run("SELECT * FROM sqlite(file=F, query='SELECT i FROM t WHERE s = ?', args='forty-two')",
                {var("F", path)}),
            (Lines{R"({"i":42})"}));
  // ?NNN by number; bool as INTEGER, NULL as NULL.
  EXPECT_EQ(query(path, "SELECT ?2 AS two, ?1 AS one, typeof(?3) AS three, ?3 AS t, ?4 AS four",
                  Value(List{Value("a"), Value(2), Value(true), Value()})),
            (Lines{R"({"two":2,"one":"a","three":"integer","t":1,"four":null})"}));
  EXPECT_EQ(error_of(path, "SELECT ? AS a", Value(List{Value(1), Value(2)})),
            "sqlite(): args: 2 values for 1 parameters");
  EXPECT_EQ(error_of(path, "SELECT ? AS a"), "sqlite(): args: 0 values for 1 parameters");
}

TEST_F(Sqlite, DictArgsBindByName) {
  auto path = make_db("a.db");
  const std::string sql = "SELECT :name AS a, @n AS b, $v AS c";
  // Keys without the parameters' prefixes.
  EXPECT_EQ(run("SELECT * FROM sqlite(file=F, query=Q, args=dict(name='x', n=42, v=1.5))",
                {var("F", path), var("Q", sql)}),
            (Lines{R"({"a":"x","b":42,"c":1.5})"}));
  // Keys with them; a NULL value binds NULL.
  Dict prefixed;
  prefixed.set(":name", "y");
  prefixed.set("@n", 7);
  prefixed.set("v", Value());
  EXPECT_EQ(query(path, sql, Value(prefixed)), (Lines{R"({"a":"y","b":7,"c":null})"}));
  EXPECT_EQ(run("SELECT * FROM sqlite(file=F, query='SELECT i FROM t WHERE s = :s', args=dict(s='forty-two'))",
                {var("F", path)}),
            (Lines{R"({"i":42})"}));
  Dict partial;
  partial.set("name", "x");
  partial.set("v", 1);
  EXPECT_EQ(error_of(path, sql, Value(partial)), "sqlite(): args: no value for parameter @n");
  EXPECT_EQ(error_of(path, "SELECT ? AS a", Value(partial)),
            "sqlite(): args: no value for parameter ?1 (a dict binds only named ones)");
}

TEST_F(Sqlite, DataAccessorQueriesTheBytesGivenAndRemovesThem) {
  auto path = make_db("a.db");
  auto copies = dir_.path("tmp");
  fs::create_directory(copies);
  TmpdirSet tmpdir(copies);
  auto p = pull_one_at_a_time(
      {{"file", read_bytes(path)}, {"accessor", "data"}, {"query", "SELECT i, s FROM t ORDER BY i"}}, copies);
  EXPECT_EQ(p.rows, (Lines{R"({"i":-7,"s":""})", R"({"i":42,"s":"forty-two"})"}));
  EXPECT_TRUE(has(p.during, "copy/db")) << ::testing::PrintToString(p.during);  // the bytes, as a file
  EXPECT_EQ(p.after, Lines{});                                                   // removed when the rows ended
  testing::LogCapture log;
  EXPECT_EQ(run("SELECT * FROM sqlite(file='no database', accessor='data', query='SELECT 1')"), Lines{});
  EXPECT_NE(log.text().find("sqlite(): data: file is not a database"), std::string::npos) << log.text();
  EXPECT_EQ(held(copies), Lines{});
}

TEST_F(Sqlite, WritesAreRefusedAndTheFileIsUnchanged) {
  auto path = make_db("a.db");
  const std::string bytes = read_bytes(path);
  const Lines files = held(dir_.root());
  for (const char* sql : {"DELETE FROM t", "INSERT INTO t(i) VALUES (1)", "UPDATE t SET i = 0",
                          "REPLACE INTO t(i) VALUES (2)", "DROP TABLE t", "CREATE TABLE u(x)",
                          "CREATE INDEX ti ON t(i)", "ALTER TABLE t ADD COLUMN z"})
    EXPECT_EQ(error_of(path, sql), "sqlite(): query is not read-only") << sql;
  EXPECT_EQ(error_of(path, "PRAGMA user_version = 7"),
            "sqlite(): query refused: PRAGMA user_version with a value is not allowed");
  EXPECT_EQ(error_of(path, "PRAGMA query_only = 0"),
            "sqlite(): query refused: PRAGMA query_only with a value is not allowed");
  EXPECT_EQ(error_of(path, "BEGIN IMMEDIATE"), "sqlite(): query refused: transactions are not allowed");
  EXPECT_EQ(read_bytes(path), bytes);
  EXPECT_EQ(held(dir_.root()), files);  // no journal left beside it
  // Pragmas that report are allowed, as are table-valued functions.
  EXPECT_EQ(query(path, "PRAGMA user_version"), (Lines{R"({"user_version":0})"}));
  EXPECT_EQ(query(path, "SELECT name FROM pragma_table_info('t') WHERE cid < 2"),
            (Lines{R"({"name":"i"})", R"({"name":"f"})"}));
  EXPECT_EQ(query(path, "SELECT count(*) AS n FROM t"), (Lines{R"({"n":2})"}));
}

TEST_F(Sqlite, AttachAndOtherWaysOutAreRefused) {
  auto path = make_db("a.db");
  auto other = dir_.path("other.db").string();
  EXPECT_EQ(error_of(path, "ATTACH DATABASE '" + other + "' AS o"),
            "sqlite(): query refused: ATTACH and DETACH are not allowed");
  EXPECT_FALSE(fs::exists(other));  // ATTACH would have created it
  EXPECT_EQ(error_of(path, "SELECT load_extension('" + other + "')"),
            "sqlite(): query refused: function load_extension() is not allowed");
  EXPECT_EQ(error_of(path, "SELECT fts3_tokenizer('simple')"),
            "sqlite(): query refused: function fts3_tokenizer() is not allowed");
  EXPECT_EQ(error_of(path, "SELECT 1; SELECT 2"), "sqlite(): query: give one SQL statement");
  EXPECT_EQ(error_of(path, "SELECT 1; ATTACH DATABASE '" + other + "' AS o"),
            "sqlite(): query: give one SQL statement");
  EXPECT_FALSE(fs::exists(other));
  EXPECT_EQ(query(path, "SELECT 1 AS one; -- a comment after it"), (Lines{R"({"one":1})"}));
}

TEST_F(Sqlite, CorruptFilesAreLoggedNamingThemAndTheOthersRead) {
  auto good = make_db("good.db");
  auto random = dir_.path("random.db").string();
  write_bytes(random, random_bytes(4096, 7));
  // A real header, then garbage.
  auto mangled = dir_.path("mangled.db").string();
  std::string bytes = read_bytes(good);
  ASSERT_GT(bytes.size(), 100u);
  std::string garbage = random_bytes(bytes.size() - 100, 11);
  bytes.replace(100, garbage.size(), garbage);
  write_bytes(mangled, bytes);
  testing::LogCapture log;
  EXPECT_EQ(run("SELECT * FROM foreach(row=Files, query={SELECT * FROM sqlite(file=_value, query='SELECT count(*) AS "
                "n FROM t')})",
                {var("Files", Value(List{Value(random), Value(mangled), Value(good)}))}),
            (Lines{R"({"n":2})"}));
  EXPECT_NE(log.text().find("sqlite(): " + random + ": file is not a database"), std::string::npos) << log.text();
  EXPECT_NE(log.text().find("sqlite(): " + mangled + ": database disk image is malformed"), std::string::npos)
      << log.text();
}

TEST_F(Sqlite, MissingFileIsLoggedAndNotCreated) {
  auto missing = dir_.path("missing.db").string();
  testing::LogCapture log;
  EXPECT_EQ(query(missing, "SELECT * FROM t"), Lines{});
  EXPECT_NE(log.text().find("sqlite(): " + missing + ": No such file or directory"), std::string::npos)
      << log.text();
  EXPECT_FALSE(fs::exists(missing));
}

TEST_F(Sqlite, FifosAreNotOpened) {
  // Opening a FIFO (or SQLite opening a FIFO journal beside a database)
  // would block until a writer came.
  auto fifo = dir_.path("fifo.db").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto path = make_db("a.db");
  ASSERT_EQ(::mkfifo((path + "-journal").c_str(), 0600), 0);
  testing::LogCapture log;
  EXPECT_EQ(query(fifo, "SELECT * FROM t"), Lines{});
  EXPECT_EQ(query(path, "SELECT * FROM t"), Lines{});
  EXPECT_NE(log.text().find("sqlite(): " + fifo + ": not a regular file"), std::string::npos) << log.text();
  EXPECT_NE(log.text().find("sqlite(): " + path + ": its journal is not a regular file"), std::string::npos)
      << log.text();
}

TEST_F(Sqlite, ExclusivelyLockedDatabaseIsReadFromACopyThenRemoved) {
  auto path = make_db("locked.db");
  Connection writer(path);
  writer.exec("BEGIN EXCLUSIVE; INSERT INTO t(i) VALUES (999);");
  {  // The lock holds: a reader in place is refused.
    sqlite3* probe = nullptr;
    sqlite3_open_v2(path.c_str(), &probe, SQLITE_OPEN_READONLY, nullptr);
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v2(probe, "SELECT count(*) FROM t", -1, &stmt, nullptr);
    if (rc == SQLITE_OK) rc = sqlite3_step(stmt);
    EXPECT_EQ(rc & 0xff, SQLITE_BUSY) << sqlite3_errstr(rc);
    sqlite3_finalize(stmt);
    sqlite3_close(probe);
  }
  auto copies = dir_.path("tmp");
  fs::create_directory(copies);
  TmpdirSet tmpdir(copies);
  auto p = pull_one_at_a_time({{"file", path}, {"query", "SELECT i FROM t ORDER BY i"}}, copies);
  // The last commit: the uncommitted row is not in it.
  EXPECT_EQ(p.rows, (Lines{R"({"i":-7})", R"({"i":42})"}));
  EXPECT_TRUE(has(p.during, "copy/db")) << ::testing::PrintToString(p.during);
  EXPECT_EQ(p.after, Lines{});
  writer.exec("COMMIT");
  EXPECT_EQ(query(path, "SELECT count(*) AS n FROM t"), (Lines{R"({"n":3})"}));
}

TEST_F(Sqlite, WalDatabaseHeldExclusivelyIsReadFromACopyWithItsWal) {
  // As Chrome holds its databases: exclusive locking mode, commits in the WAL.
  auto path = make_db("wal.db");
  Connection writer(path);
  writer.exec("PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;"
              "INSERT INTO t(i) VALUES (100);");
  ASSERT_TRUE(fs::exists(path + "-wal"));
  auto copies = dir_.path("tmp");
  fs::create_directory(copies);
  TmpdirSet tmpdir(copies);
  auto p = pull_one_at_a_time({{"file", path}, {"query", "SELECT i FROM t ORDER BY i"}}, copies);
  EXPECT_EQ(p.rows, (Lines{R"({"i":-7})", R"({"i":42})", R"({"i":100})"}));
  EXPECT_TRUE(has(p.during, "copy/db")) << ::testing::PrintToString(p.during);
  EXPECT_EQ(p.after, Lines{});
  EXPECT_FALSE(fs::exists(path + "-shm"));  // nothing made beside it
}

TEST_F(Sqlite, DatabaseInUseIsReadInPlace) {
  // A WAL database another connection is using (its -wal and -shm there).
  auto path = make_db("live.db", "PRAGMA journal_mode=WAL;" + kTable);
  Connection writer(path);
  writer.exec("PRAGMA wal_autocheckpoint=0; INSERT INTO t(i) VALUES (100);");
  ASSERT_TRUE(fs::exists(path + "-wal") && fs::exists(path + "-shm"));
  auto copies = dir_.path("tmp");
  fs::create_directory(copies);
  TmpdirSet tmpdir(copies);
  auto p = pull_one_at_a_time({{"file", path}, {"query", "SELECT i FROM t ORDER BY i"}}, copies);
  EXPECT_EQ(p.rows, (Lines{R"({"i":-7})", R"({"i":42})", R"({"i":100})"}));
  EXPECT_EQ(p.during, Lines{});  // no copy
}

TEST_F(Sqlite, ClosedWalDatabaseIsReadWithoutCreatingFilesBesideIt) {
  auto path = make_db("closed.db", "PRAGMA journal_mode=WAL;" + kTable);
  ASSERT_FALSE(fs::exists(path + "-wal"));  // checkpointed and removed when closed
  auto copies = dir_.path("tmp");
  fs::create_directory(copies);
  TmpdirSet tmpdir(copies);
  EXPECT_EQ(query(path, "SELECT i FROM t ORDER BY i"), (Lines{R"({"i":-7})", R"({"i":42})"}));
  // Even read-only, SQLite in place would have made a -wal and a -shm here.
  EXPECT_FALSE(fs::exists(path + "-wal"));
  EXPECT_FALSE(fs::exists(path + "-shm"));
  EXPECT_EQ(held(copies), Lines{});
}

TEST_F(Sqlite, APlantedSuperJournalDeletesNothing) {
  auto path = make_db("hot.db");
  const std::string committed = read_bytes(path);
  // A hot journal, as a writer that died mid-transaction leaves it: pages
  // spilled to the database (a cache of 2 pages) before any commit, so the
  // journal is synced with its header. The child uses only SQLite, then
  // goes without committing or closing; its locks go with it.
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    sqlite3* db = nullptr;
    int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr);
    if (rc == SQLITE_OK)
      rc = sqlite3_exec(db,
                        "PRAGMA journal_mode=DELETE; PRAGMA cache_size=2; BEGIN;"
                        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200)"
                        " INSERT INTO t(i, b) SELECT x, randomblob(300) FROM c;"
                        "UPDATE t SET s = 'uncommitted';",
                        nullptr, nullptr, nullptr);
    ::_exit(rc == SQLITE_OK ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  const std::string journal = path + "-journal";
  std::string hot = read_bytes(journal);
  ASSERT_FALSE(hot.empty());
  ASSERT_NE(hot[0], '\0');                 // hot: a reader must roll it back
  ASSERT_NE(read_bytes(path), committed);  // and only a rollback gives the last commit
  // What a real super-journal holds: its child journals' names, each ending in NUL.
  auto victim = dir_.path("victim").string();
  const std::string precious = dir_.path("gone.db-journal").string() + std::string(1, '\0');
  write_bytes(victim, precious);
  // The journal made to end as a writer of several databases ends it: the
  // super-journal's name, its length and the sum of its bytes (big-endian),
  // then the journal magic.
  auto be32 = [](uint32_t v) {
    return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
                       static_cast<char>(v)};
  };
  uint32_t sum = 0;
  for (unsigned char c : victim) sum += c;
  hot += victim + be32(static_cast<uint32_t>(victim.size())) + be32(sum) +
         std::string("\xd9\xd5\x05\xf9\x20\xa1\x63\xd7", 8);
  write_bytes(journal, hot);
  const std::string database = read_bytes(path);
  auto copies = dir_.path("tmp");
  fs::create_directory(copies);
  TmpdirSet tmpdir(copies);
  // Read from a copy rolled back: the last commit.
  EXPECT_EQ(query(path, "SELECT count(*) AS n, max(s) AS s FROM t"), (Lines{R"({"n":2,"s":"forty-two"})"}));
  EXPECT_TRUE(fs::exists(victim));
  EXPECT_EQ(read_bytes(victim), precious);
  // Nothing changed beside it, nothing left behind.
  EXPECT_EQ(read_bytes(path), database);
  EXPECT_EQ(read_bytes(journal), hot);
  EXPECT_EQ(held(copies), Lines{});
}

TEST_F(Sqlite, ARunawayStepIsStopped) {
  auto path = make_db("a.db");
  testing::LogCapture log;
  auto started = std::chrono::steady_clock::now();
  // Counts for ever without giving a row.
  EXPECT_EQ(query(path, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c WHERE x < 0"),
            Lines{});
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(30));
  EXPECT_NE(log.text().find("sqlite(): " + path + ": stopped: a step of the query ran longer than 10 s"),
            std::string::npos)
      << log.text();
}

TEST_F(Sqlite, BadArgumentsAreRefusedBeforeTheQueryRuns) {
  auto e = error_of_run([&] { run("SELECT * FROM sqlite(file='x.db', accessor='ntfs', query='SELECT 1')"); });
  EXPECT_EQ(e, "line 1, column 15: sqlite(): accessor: \"ntfs\" is not supported: file, auto, data");
  e = error_of_run([&] { run("SELECT * FROM sqlite(file='x.db')"); });
  EXPECT_NE(e.find("sqlite(): query: required"), std::string::npos) << e;
  e = error_of_run([&] { run("SELECT * FROM sqlite(file='x.db', query='SELECT 1\\x00')"); });
  EXPECT_NE(e.find("sqlite(): query: holds a NUL byte"), std::string::npos) << e;
}

}  // namespace

}  // namespace outpost::vql
