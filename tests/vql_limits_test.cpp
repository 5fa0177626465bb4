// VQL's bounds on work and size: ORDER BY and hash() spread over calls,
// read_file's rows below the record-size limit, VqlSource's bytes per pull,
// and plugin arguments refused before a query starts.

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "queries/vql_source.hpp"
#include "tests/temp_dir.hpp"

namespace outpost::vql {
namespace {

using outpost::testing::TempDir;

std::string compile_error(const std::string& vql) {
  try {
    Engine(default_registry()).compile(vql);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

std::string sha256sum(const std::filesystem::path& file) {
  FILE* pipe = popen(("sha256sum '" + file.string() + "'").c_str(), "r");
  if (!pipe) return "";
  char buf[256] = {};
  std::string out = fgets(buf, sizeof buf, pipe) ? buf : "";
  pclose(pipe);
  return out.substr(0, out.find(' '));
}

void write_file(const std::filesystem::path& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
  ASSERT_TRUE(out.good()) << path;
}

std::string patterned(size_t size, unsigned seed) {
  std::string data(size, '\0');
  for (size_t i = 0; i < size; ++i) data[i] = static_cast<char>(i * seed + i / 4096);
  return data;
}

// A query over rows {K, I} given as a list parameter (a source that gives
// them all in one call).
struct Keyed : ::testing::Test {
  Engine engine{default_registry()};
  Env env;
  std::unique_ptr<RowStream> start(const std::string& vql, size_t rows, int64_t keys) {
    List list;
    for (size_t i = 0; i < rows; ++i) {
      Dict d;
      d.set("K", static_cast<int64_t>((i * 7919) % static_cast<size_t>(keys)));
      d.set("I", static_cast<int64_t>(i));
      list.push_back(Value(std::move(d)));
    }
    return engine.start(vql, {{"rows", Value(std::move(list)), nullptr}}, env);
  }
};

TEST_F(Keyed, OrderBySortsInSlicesAndKeepsTiesInOrder) {
  constexpr size_t kRows = 200000;
  auto stream = start("SELECT K, I FROM rows ORDER BY K", kRows, 1000);
  std::vector<Row> rows;
  int calls_before_rows = 0;
  for (int calls = 0; calls < 100000 && rows.empty(); ++calls, ++calls_before_rows) {
    Step step = stream->next(rows, kRows);  // a budget that takes all input at once
    if (rows.empty()) {
      ASSERT_EQ(step.state, Step::State::more);
    }
  }
  // The sort of 200,000 rows took several calls, none holding the thread for all of it.
  EXPECT_GE(calls_before_rows, 4);
  for (int calls = 0; calls < 100000; ++calls)
    if (stream->next(rows, 1000).state == Step::State::done) break;
  ASSERT_EQ(rows.size(), kRows);
  for (size_t i = 1; i < rows.size(); ++i) {
    int64_t k0 = *rows[i - 1].find("K")->as_int(), k1 = *rows[i].find("K")->as_int();
    ASSERT_LE(k0, k1) << "at " << i;
    if (k0 == k1) {
      ASSERT_LT(*rows[i - 1].find("I")->as_int(), *rows[i].find("I")->as_int()) << "a tie moved at " << i;
    }
  }
}

TEST_F(Keyed, OrderByDescendingWithLimit) {
  auto stream = start("SELECT K, I FROM rows ORDER BY K DESC LIMIT 3", 5000, 5000);
  std::vector<Row> rows;
  for (int calls = 0; calls < 1000; ++calls)
    if (stream->next(rows, 100).state == Step::State::done) break;
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(*rows[0].find("K")->as_int(), 4999);
  EXPECT_EQ(*rows[1].find("K")->as_int(), 4998);
  EXPECT_EQ(*rows[2].find("K")->as_int(), 4997);
}

TEST_F(Keyed, HashOfBigFilesIsSpreadOverCallsWithoutRepeatingEffects) {
  TempDir tmp;
  auto a = tmp.path("a.bin"), b = tmp.path("b.bin");
  write_file(a, patterned(5 * (1 << 20) + 123, 31));
  write_file(b, patterned(3 * (1 << 20) + 7, 17));
  std::vector<Row> rows;
  int calls = 0;
  auto stream = engine.start("LET A = '" + a.string() + "' LET B = '" + b.string() +
                                 "' SELECT hash(path=A).SHA256 AS HA, upload(file=A).Size AS UA, "
                                 "hash(path=B).SHA256 AS HB FROM rows",
                             {{"rows", Value(List{Value(Dict{})}), nullptr}}, env);
  for (; calls < 1000 && rows.empty(); ++calls) {
    Step step = stream->next(rows, 100);
    if (rows.empty()) {
      ASSERT_EQ(step.state, Step::State::more);
    }
  }
  // 8 MiB at 1 MiB per call: the row came after several calls, not in the first.
  EXPECT_GE(calls, 8);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(to_string(*rows[0].find("HA")), sha256sum(a));
  EXPECT_EQ(to_string(*rows[0].find("HB")), sha256sum(b));
  EXPECT_EQ(*rows[0].find("UA")->as_int(), 5 * (1 << 20) + 123);
  EXPECT_EQ(env.upload_requests.size(), 1u) << "a row taken up again asked for its upload again";
}

TEST_F(Keyed, HashInASubqueryARowNeedsIsSpreadOverCallsToo) {
  TempDir tmp;
  auto a = tmp.path("a.bin");
  write_file(a, patterned(4 * (1 << 20) + 5, 13));
  // get() turns the subquery into a list while the outer row is evaluated:
  // the outer row is taken up again, the hash going on where it stopped.
  auto stream = engine.start("LET A = '" + a.string() +
                                 "' SELECT get(item={SELECT hash(path=A).SHA256 AS H FROM rows}, field=0).H AS HA "
                                 "FROM rows",
                             {{"rows", Value(List{Value(Dict{})}), nullptr}}, env);
  std::vector<Row> rows;
  int calls = 0;
  for (; calls < 1000 && rows.empty(); ++calls) stream->next(rows, 100);
  EXPECT_GE(calls, 4);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(to_string(*rows[0].find("HA")), sha256sum(a));
}

TEST(VqlLimits, HashOfADeviceIsAnErrorNotAHang) {
  Engine engine(default_registry());
  Env env;
  auto stream = engine.start("SELECT hash(path='/dev/zero') AS H FROM info()", {}, env);
  std::vector<Row> rows;
  for (int calls = 0; calls < 100 && stream->next(rows, 10).state != Step::State::done; ++calls) {
  }
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(to_json(rows[0]),
            "{\"H\":{\"Path\":\"/dev/zero\",\"Error\":\"a character device, not a regular file (it may never end)\"}}");
}

TEST(VqlLimits, ReadFileRowsAndPullsStayBelowTheRecordLimit) {
  TempDir tmp;
  auto big = tmp.path("big.txt");
  std::string data = patterned(8000000, 7);
  write_file(big, data);
  auto query = std::make_shared<const ast::Query>(Engine(default_registry()).compile(
      "SELECT * FROM read_file(filenames='" + big.string() + "', length=8000000)"));
  VqlSource source(Engine(default_registry()), {query}, {});
  std::string joined;
  int64_t expected_offset = 0;
  for (int pulls = 0; pulls < 1000; ++pulls) {
    schemas::RowBatchWriter batch(1, "a", "s", schemas::Lane::RESULTS, source.columns());
    auto r = source.pull(batch, 256);
    // A batch a pull filled: far below the record-size limit (4 MiB).
    EXPECT_LE(batch.encoded_size(), size_t{5} << 19);
    if (batch.row_count()) {
      auto encoded = batch.finish();
      schemas::RecordView view(encoded.words());
      for (auto row : view.record().getRowBatch().getRows()) {
        EXPECT_EQ(row[1].getInt64(), expected_offset);
        auto bytes = row[2].getText();
        EXPECT_LE(bytes.size(), size_t{1} << 20);
        joined.append(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
        expected_offset += static_cast<int64_t>(bytes.size());
        EXPECT_EQ(std::string(row[3].getText().cStr()), "");
      }
    }
    if (r.state == PullResult::State::done) break;
  }
  EXPECT_TRUE(joined == data) << joined.size() << " bytes of " << data.size();
}

TEST(VqlLimits, PluginArgumentsAreCheckedBeforeTheQueryStarts) {
  EXPECT_EQ(compile_error("SELECT * FROM clock(period=0)"),
            "line 1, column 15: clock(): period: expected seconds from 0.01 to 86400");
  EXPECT_EQ(compile_error("SELECT * FROM clock(period=-1)"),
            "line 1, column 15: clock(): period: expected seconds from 0.01 to 86400");
  EXPECT_EQ(compile_error("SELECT * FROM watch_processes(period=0)"),
            "line 1, column 15: watch_processes(): period: expected seconds from 0.01 to 86400");
  EXPECT_EQ(compile_error("SELECT * FROM watch_mounts(period=100000)"),
            "line 1, column 15: watch_mounts(): period: expected seconds from 0.01 to 86400");
  EXPECT_EQ(compile_error("SELECT * FROM clock(perod=1)"),
            "line 1, column 15: clock(): perod: unknown argument (expected period)");
  EXPECT_EQ(compile_error("SELECT * FROM read_file(filenames='x', length=100000000)"),
            "line 1, column 15: read_file(): length: must be 0 to 67108864, got 100000000");
  EXPECT_EQ(compile_error("SELECT * FROM tail(filename='')"), "line 1, column 15: tail(): filename: must not be empty");
  EXPECT_EQ(compile_error("SELECT * FROM watch_directory(path='/tmp', recursive='yes')"),
            "line 1, column 15: watch_directory(): recursive: expected bool, got string");
  EXPECT_EQ(compile_error("SELECT * FROM glob(globs=['/etc/*', '/tmp/[abc'])"),
            "line 1, column 15: glob(): globs: unterminated [ in [abc");
  EXPECT_EQ(compile_error("SELECT * FROM kill(pid=0)"), "line 1, column 15: kill(): pid: must be a single process id, got 0");
  EXPECT_EQ(compile_error("SELECT * FROM pslist(pid=-3)"), "line 1, column 15: pslist(): pid: must be positive, got -3");
  // Nested queries too; values known only when the query runs are checked then.
  EXPECT_NE(compile_error("SELECT * FROM foreach(row={SELECT * FROM clock(period=0)})").find("clock(): period:"),
            std::string::npos);
  EXPECT_EQ(compile_error("SELECT * FROM clock(period=0.5)"), "(no error)");
  EXPECT_EQ(compile_error("LET p = 0 SELECT * FROM clock(period=p)"), "(no error)");
}

}  // namespace
}  // namespace outpost::vql
