// yara() and proc_yara(): rules of our own over files and data we write,
// and over this test process's memory.

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>

#include "queries/engine.hpp"
#include "tests/log_capture.hpp"
#include "tests/temp_dir.hpp"
#include "tests/vql_test_util.hpp"

namespace outpost::vql {

namespace {

using outpost::testing::TempDir;

const Registry& registry() { return default_registry(); }

void write_file(const std::filesystem::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
  ASSERT_TRUE(out.good()) << path;
}

std::vector<std::string> yara_json(const std::string& vql, std::vector<Binding> params = {}) {
  return json_lines(run_rows(registry(), vql, Waits::fail, 1000, std::move(params)));
}

Binding list(const std::string& name, const std::vector<std::string>& items) {
  List values(items.begin(), items.end());
  return {name, Value(std::move(values)), nullptr};
}

const char* kHelloRule = R"(rule Hello : greeting test {
  meta:
    author = "outpost"
    score = 7
    ok = true
  strings:
    $h = "HELLO"
  condition:
    $h
})";

TEST(Yara, FindsStringsAtTheirOffsetsInSeveralFiles) {
  TempDir dir;
  write_file(dir.path("a"), "xxxxHELLOyyyy");
  write_file(dir.path("b"), std::string(100, '.') + "HELLO");
  write_file(dir.path("none"), "hello, lowercase only");
  auto rows = yara_json("SELECT Rule, Meta, Tags, String, FileName, File.Size AS Size FROM yara(files=Files, "
                        "rules=Rules, context=2)",
                        {list("Files", {dir.path("a").string(), dir.path("b").string(), dir.path("none").string()}),
                         {"Rules", Value(kHelloRule), nullptr}});
  const std::string row =
      R"({"Rule":"Hello","Meta":{"author":"outpost","score":7,"ok":true},"Tags":["greeting","test"],"String":)";
  // HexData as Go's hex.Dump writes it, split at its newlines.
  const std::string a_hex = "00000000  78 78 48 45 4c 4c 4f 79  79                       |xxHELLOyy|";
  const std::string b_hex = "00000000  2e 2e 48 45 4c 4c 4f                              |..HELLO|";
  EXPECT_EQ(rows, (std::vector<std::string>{
                      row + R"({"Name":"$h","Offset":4,"HexData":[")" + a_hex + R"(",""],"Data":"xxHELLOyy"},)" +
                          R"("FileName":")" + dir.path("a").string() + R"(","Size":13})",
                      row + R"({"Name":"$h","Offset":100,"HexData":[")" + b_hex + R"(",""],"Data":"..HELLO"},)" +
                          R"("FileName":")" + dir.path("b").string() + R"(","Size":105})"}));
}

TEST(Yara, ScansABigFileInSlicesWithConditionsOverTheWholeFile) {
  TempDir dir;
  constexpr size_t kMiB = size_t{1} << 20;
  std::string data(3 * kMiB, '.');
  data.replace(0, 4, "MAGI");
  data.replace(kMiB - 3, 8, "NEEDLE-1");        // across the end of the first 1 MiB block
  data.replace(5 * kMiB / 2, 8, "NEEDLE-2");    // in the third block
  data.replace(kMiB - 100, 8, "NEEDLE-3");      // where the first two blocks overlap: counted once
  write_file(dir.path("big"), data);
  const std::string rules = R"(rule Far {
    strings: $a = "NEEDLE-1" $b = "NEEDLE-2" $c = "NEEDLE-3"
    condition: uint32be(0) == 0x4d414749 and filesize == 3145728 and #a == 1 and #c == 1 and $b
  })";
  Args args("yara", {{"files", Value(dir.path("big").string())}, {"rules", Value(rules)}, {"number", Value(10)}});
  Env env;
  auto stream = registry().plugin("yara")->make(args, env);
  std::vector<Row> rows;
  int calls = 1;
  while (stream->next(rows, 100).state != Step::State::done) ++calls;
  EXPECT_GE(calls, 3) << "3 MiB scanned in one call";
  std::vector<std::string> hits;
  for (auto& r : rows) {
    auto string = r.find("String")->as_dict();
    hits.push_back(*string->find("Name")->as_string() + "@" + std::to_string(*string->find("Offset")->as_int()));
  }
  EXPECT_EQ(hits, (std::vector<std::string>{"$a@" + std::to_string(kMiB - 3), "$b@" + std::to_string(5 * kMiB / 2),
                                            "$c@" + std::to_string(kMiB - 100)}));

  // Dropped in the middle of a scan: libyara's suspended scan is ended.
  auto dropped = registry().plugin("yara")->make(args, env);
  EXPECT_EQ(dropped->next(rows, 100).state, Step::State::more);
  dropped.reset();
}

TEST(Yara, AFileThatCannotBeOpenedIsSkippedWithAWarning) {
  TempDir dir;
  write_file(dir.path("a"), "HELLO");
  outpost::testing::LogCapture log;
  auto rows = yara_json("SELECT String.Offset AS O, str(str=FileName) AS F FROM yara(files=Files, rules=Rules)",
                        {list("Files", {dir.path("missing").string(), dir.path("a").string()}),
                         {"Rules", Value(kHelloRule), nullptr}});
  EXPECT_EQ(rows, std::vector<std::string>{R"({"O":0,"F":")" + dir.path("a").string() + R"("})"});
  EXPECT_NE(log.text().find("warning vql: yara(): " + dir.path("missing").string() +
                            ": cannot open: No such file or directory"),
            std::string::npos)
      << log.text();
}

TEST(Yara, RulesThatDoNotCompileAreAnErrorWithTheirLine) {
  auto error = error_of_run([] {
    yara_json("SELECT * FROM yara(files='x', accessor='data', "
              "rules='rule X {\n strings: $a = \"a\"\n condition: $a or or\n}')");
  });
  EXPECT_NE(error.find("yara(): rules: line 3: syntax error"), std::string::npos) << error;
  error = error_of_run([] { yara_json("SELECT * FROM proc_yara(pid=1, rules='include \"/etc/passwd\"')"); });
  EXPECT_NE(error.find("proc_yara(): rules: line 1: includes are disabled"), std::string::npos) << error;
  error = error_of_run([] { yara_json("SELECT * FROM yara(files='x', accessor='data', rules='YARA\x01\x02')"); });
  EXPECT_NE(error.find("yara(): rules: compiled rules are not accepted"), std::string::npos) << error;
}

// Velociraptor's own cases (artifacts/testdata/server/testcases/yara.in.yaml).
TEST(Yara, DataNumberStartEndAndContext) {
  auto offsets = [](const std::string& args) {
    return yara_json("SELECT String.Offset AS O, str(str=String.Data) AS D FROM yara(accessor='data', "
                     "files='regfXXXXXXXXXXXXXXXXXXXXXXprogram', rules='rule X { strings: $a = \"X\" condition: "
                     "any of them }'" + args + ")");
  };
  EXPECT_EQ(offsets(""), std::vector<std::string>{R"({"O":4,"D":"X"})"});
  EXPECT_EQ(offsets(", number=2"), (std::vector<std::string>{R"({"O":4,"D":"X"})", R"({"O":5,"D":"X"})"}));
  EXPECT_EQ(offsets(", start=10"), std::vector<std::string>{R"({"O":10,"D":"X"})"});
  EXPECT_EQ(offsets(", start=10, end=12, number=20"),
            (std::vector<std::string>{R"({"O":10,"D":"X"})", R"({"O":11,"D":"X"})"}));
  EXPECT_EQ(offsets(", context=2"), std::vector<std::string>{R"({"O":4,"D":"gfXXX"})"});
  EXPECT_EQ(offsets(", context=10"), std::vector<std::string>{R"({"O":4,"D":"regfXXXXXXXXXXX"})"});
}

TEST(Yara, ShorthandRulesAndRulesWithoutStrings) {
  EXPECT_EQ(yara_json("SELECT Rule, String.Name AS N, String.Offset AS O FROM yara(accessor='data', "
                      "files='say HELLO \"there\"', rules='nocase ascii: hello, \"there\"', number=5)"),
            (std::vector<std::string>{R"({"Rule":"X","N":"$a0","O":4})", R"({"Rule":"X","N":"$a1","O":10})"}));
  EXPECT_EQ(yara_json("SELECT Rule, String, FileName, File FROM yara(accessor='data', files='abc', "
                      "rules='rule Always { condition: filesize == 3 }')"),
            std::vector<std::string>{R"({"Rule":"Always","String":{"Name":"","Offset":0,"HexData":null,"Data":null},)"
                                     R"("FileName":"abc","File":{"FullPath":"abc","Size":3}})"});
}

TEST(Yara, BoundsOnNumberContextAndRules) {
  auto scan = [](const std::string& args) {
    return run_rows(registry(), "SELECT * FROM yara(accessor='data', files=Data, rules='rule X { strings: $a = \"X\" "
                                "condition: $a }'" + args + ")",
                    Waits::fail, 1000, {{"Data", Value(std::string(200000, 'X')), nullptr}});
  };
  EXPECT_EQ(scan(", number=100000").size(), 10000u);  // number: at most 10000
  // context: at most 64 KiB either side of the match.
  auto rows = scan(", number=2, context=1000000");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].find("String")->as_dict()->find("Data")->as_string()->size(), 1u + 65536);
  EXPECT_EQ(rows[1].find("String")->as_dict()->find("Data")->as_string()->size(), 1u + 1 + 65536);

  auto error = error_of_run([&] {
    run_rows(registry(), "SELECT * FROM yara(accessor='data', files='x', rules=R)", Waits::fail, 1000,
             {{"R", Value("rule X { strings: $a = \"" + std::string(9 << 20, 'X') + "\" condition: $a }"), nullptr}});
  });
  EXPECT_NE(error.find("yara(): rules: longer than 8 MiB"), std::string::npos) << error;
}

TEST(ProcYara, FindsAMarkerInThisProcessHeap) {
  int on_stack = 0;
  auto marker = std::make_unique<std::string>("outpost-proc-yara-" + std::to_string(::getpid()) + "-" +
                                              std::to_string(reinterpret_cast<uintptr_t>(&on_stack)));
  const std::string self = "/" + std::to_string(::getpid());
  auto rows = run_rows(registry(),
                       "SELECT String.Offset AS O, str(str=String.Data) AS D, str(str=FileName) AS F FROM "
                       "proc_yara(pid=Pid, rules='ascii: ' + Marker, number=1000)",
                       Waits::fail, 1000,
                       {{"Pid", Value(static_cast<int64_t>(::getpid())), nullptr},
                        {"Marker", Value(*marker), nullptr}});
  ASSERT_FALSE(rows.empty());
  // Other copies of the marker (the query's text, the rules) are matched
  // too; they may be freed and overwritten before their row reads them back.
  bool found = false;
  for (auto& r : rows) {
    EXPECT_EQ(*r.find("F")->as_string(), self);
    if (r.find("O")->number() != static_cast<double>(reinterpret_cast<uintptr_t>(marker->data()))) continue;
    EXPECT_EQ(*r.find("D")->as_string(), *marker);
    found = true;
  }
  EXPECT_TRUE(found) << "no row at the marker's address";
}

TEST(ProcYara, AProcessThatIsNotThereGivesNoRows) {
  outpost::testing::LogCapture log;
  EXPECT_TRUE(yara_json("SELECT * FROM proc_yara(pid=999999999, rules='ascii: x')").empty());
  EXPECT_NE(log.text().find("vql: proc_yara(): /999999999: cannot read the memory map"), std::string::npos)
      << log.text();
}

}  // namespace
}  // namespace outpost::vql
