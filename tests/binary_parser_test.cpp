// parse_binary(): vtypes profiles over files we write, through the engine;
// the semantics around it that artifacts reading binary files use
// ({SELECT} columns, =~ on NULL and lists, str() of a list); and
// parse_json(), whose JSON reader profiles are read with, leniently.

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>

#include "queries/engine.hpp"
#include "tests/log_capture.hpp"
#include "tests/vql_test_util.hpp"

namespace outpost::vql {
namespace {

std::vector<std::string> run(const std::string& vql, std::vector<Binding> params = {}) {
  return json_lines(run_rows(default_registry(), vql, Waits::fail, 1000, std::move(params)));
}

// A login record of our own layout: type (int16), pid (int32 at 4), user
// (16 bytes at 8), time (uint32 at 24): 32 bytes.
std::string record(int16_t type, int32_t pid, const std::string& user, uint32_t time) {
  std::string r(32, '\0');
  std::memcpy(&r[0], &type, 2);
  std::memcpy(&r[4], &pid, 4);
  std::memcpy(&r[8], user.data(), std::min<size_t>(user.size(), 16));
  std::memcpy(&r[24], &time, 4);
  return r;
}

// As artifacts write them: # comments, trailing commas, a count lambda that
// reads the caller's scope, and text after the profile (ignored).
const char* kLogins = R"([
  ["File", 0, [
    # every record of the file, up to MaxCount
    ["records", 0, "Array", {"type": "login", "count": "x=>MaxCount", "max_count": 100,}],
  ]],
  ["login", 32, [
    ["type", 0, "Enumeration", {"type": "short int", "choices": {"7": "USER", "8": "DEAD"}}],
    ["pid", 4, "int"],
    ["user", 8, "String", {"length": 16}],
    ["time", 24, "Timestamp", {"type": "uint32"}],
  ]]
]]])";

class BinaryFile : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = ::testing::TempDir() + "outpost-binary-" + std::to_string(::getpid());
    std::ofstream(path_, std::ios::binary) << record(7, 100, "alice", 1700000000) << record(8, 100, "", 1700003600)
                                           << record(3, 5, "bob", 1700007200);
  }
  void TearDown() override { std::remove(path_.c_str()); }
  std::vector<Binding> params(int64_t max_count) {
    return {{"P", Value(kLogins), nullptr}, {"F", Value(path_), nullptr}, {"MaxCount", Value(max_count), nullptr}};
  }
  std::string path_;
};

TEST_F(BinaryFile, RecordsReadAsTheProfileSays) {
  auto rows = run(R"(
      SELECT * FROM foreach(row=parse_binary(filename=F, profile=P, struct="File").records,
                            query={SELECT type, pid, user, time FROM scope()}))",
                  params(1000));
  EXPECT_EQ(rows, (std::vector<std::string>{
                      R"({"type":"USER","pid":100,"user":"alice","time":"2023-11-14T22:13:20.000000000Z"})",
                      R"({"type":"DEAD","pid":100,"user":"","time":"2023-11-14T23:13:20.000000000Z"})",
                      R"({"type":"3","pid":5,"user":"bob","time":"2023-11-15T00:13:20.000000000Z"})"}));
  // The count lambda reads the caller's MaxCount; an array stops at the end of the file.
  EXPECT_EQ(run("SELECT len(list=parse_binary(filename=F, profile=P, struct='File').records) AS N FROM scope()",
                params(2)),
            std::vector<std::string>{R"({"N":2})"});
  // A struct's JSON is its members.
  EXPECT_EQ(run("SELECT parse_binary(filename=F, profile=P, struct='login', offset=64) AS R FROM scope()", params(1)),
            std::vector<std::string>{
                R"({"R":{"type":"3","pid":5,"user":"bob","time":"2023-11-15T00:13:20.000000000Z"}})"});
}

TEST_F(BinaryFile, LambdasPlaceFieldsAndSizeStrings) {
  // A header that says where its table is and how long its name is; big-endian fields.
  std::string data(8, '\0');
  data[3] = 12;  // offset of the table (uint32b at 0)
  data[7] = 5;   // name length (uint32b at 4)
  data += std::string("ab\0\0", 4) + "hello" + "\x13";
  auto rows = run(R"(
      LET Prof = '''[["H", 0, [
          ["at", 0, "uint32b"], ["length", 4, "uint32b"],
          ["name", "x=>x.at", "String", {"length": "x=>x.length"}],
          ["flags", "x=>x.at + x.length", "BitField", {"type": "uint8", "start_bit": 1, "end_bit": 3}],
          ["short", 8, "String", {}]]]]'''
      SELECT parse_binary(accessor="data", filename=D, profile=Prof, struct="H") AS H FROM scope())",
                  {{"D", Value(data), nullptr}});
  EXPECT_EQ(rows, (std::vector<std::string>{R"({"H":{"at":12,"length":5,"name":"hello","flags":1,"short":"ab"}})"}));
}

TEST_F(BinaryFile, BadProfilesAndFilesAreNamed) {
  // A row's error is logged, naming what and where, and its value is NULL, as Velociraptor's.
  auto logged = [&](const std::string& profile, const std::string& file, const std::string& message) {
    testing::LogCapture log;
    auto rows = run("SELECT parse_binary(filename=F, profile=P, struct='File') AS X FROM scope()",
                    {{"P", Value(profile), nullptr}, {"F", Value(file), nullptr}});
    EXPECT_EQ(rows, std::vector<std::string>{R"({"X":null})"});
    EXPECT_NE(log.text().find(message), std::string::npos) << log.text();
  };
  logged("[[\"File\", 0, [\n[\"a\" 0]]]]", path_, "parse_binary(): profile: line 2: expected , or ]");
  logged("[[\"File\", 0,\n", path_, "parse_binary(): profile: line 2: unexpected end");
  logged("[[\"File\", 0, [\n# a comment\n{\"a\" 0}]]]", path_, "parse_binary(): profile: line 3: expected :");
  logged("[[\"File\", 0, [{1: 0}]]]", path_, "parse_binary(): profile: line 1: expected a key");
  logged("[{\"a\": 1 2}]", path_, "parse_binary(): profile: line 1: expected , or }");
  logged("[[\"File\", 0, [[\"a\", 0, uint8]]]]", path_, "parse_binary(): profile: line 1: unexpected 'u'");
  logged("[[\"File\", 1e, []]]", path_, "parse_binary(): profile: line 1: bad number 1e");
  logged("[[\"File\", 0, [[\"a\\u12\", 0, \"uint8\"]]]]", path_, "parse_binary(): profile: line 1: bad \\u escape");
  logged("[[\"File", path_, "parse_binary(): profile: line 1: unterminated string");
  // Values nest 64 deep at most (the outermost list is at 0).
  logged(std::string(66, '[') + std::string(66, ']'), path_, "parse_binary(): profile: line 1: nested too deep");
  logged(std::string(65, '[') + std::string(65, ']'), path_,
         "parse_binary(): profile: a definition is [name, size, [fields...]]");
  logged("[[\"File\", 0, [[\"a\", 0]]]]", path_, "parse_binary(): profile: File: a field is [name, offset, type, {options}]");
  logged(kLogins, path_ + ".missing", "parse_binary(): cannot open " + path_ + ".missing");
  logged("[[\"Other\", 0, []]]", path_, "parse_binary(): struct: \"File\" is not in the profile");
  logged("[[\"File\", 0, [[\"a\", 0, \"Pointer\"]]]]", path_,
         "parse_binary(): profile: File.a: type \"Pointer\" is not supported");
  logged("[[\"File\", 0, [[\"a\", 0, \"Array\", {\"type\": \"nothing\"}]]]]", path_,
         "parse_binary(): profile: File.a[]: type \"nothing\" is not supported");
}

// A profile's JSON: // comments too, hex numbers, and JSON's escapes in strings.
TEST(VqlSemantics, ProfileJsonTakesCommentsHexAndEscapes) {
  const char* profile = R"(// the struct
      [["S", 0x3, [
        ["b", 0x2, "uint8"],  // its third byte
        ["v", 0, "Value", {"value": "a\/b\"c\u00e9"}],
      ]]])";
  auto rows = run("SELECT parse_binary(accessor='data', filename=D, profile=P, struct='S') AS S FROM scope()",
                  {{"D", Value(std::string("\x01\x02\x03")), nullptr}, {"P", Value(profile), nullptr}});
  EXPECT_EQ(rows, std::vector<std::string>{"{\"S\":{\"b\":3,\"v\":\"a/b\\\"c\xc3\xa9\"}}"});
}

// parse_json(): keys in order (a repeated key's last value, in its first
// place), whole numbers that fit as ints, other numbers as doubles; what is
// not exactly one JSON object, or nests more than 100 deep, is NULL.
TEST(VqlSemantics, ParseJsonKeepsOrderTypesNumbersAndBoundsNesting) {
  auto one = [](const std::string& data) {
    auto rows = run("SELECT parse_json(data=D) AS J FROM scope()", {{"D", Value(data), nullptr}});
    return rows.size() == 1 ? rows[0] : "<rows>";
  };
  EXPECT_EQ(one(R"({"b": 1, "a": [1, -3, 2.5, 99999999999999999999, true, null, {}], "b": 2})"),
            R"({"J":{"b":2,"a":[1,-3,2.5,1e+20,true,null,{}]}})");
  EXPECT_EQ(one(R"({"s": "a\/b\"c\u00e9\ud83d\ude00"})"), "{\"J\":{\"s\":\"a/b\\\"c\xc3\xa9\xf0\x9f\x98\x80\"}}");
  EXPECT_EQ(one(R"({"a": 1,})"), R"({"J":null})");
  EXPECT_EQ(one(R"({"a": 1} x)"), R"({"J":null})");
  EXPECT_EQ(one(R"({"a": tru})"), R"({"J":null})");
  EXPECT_EQ(one(R"({"s": "\ud83d"})"), R"({"J":null})");  // an unpaired surrogate
  auto deep = [](int levels) { return std::string(levels, '[') + std::string(levels, ']'); };
  EXPECT_EQ(one("{\"a\":" + deep(100) + "}"), "{\"J\":{\"a\":" + deep(100) + "}}");
  EXPECT_EQ(one("{\"a\":" + deep(101) + "}"), R"({"J":null})");
}

// The same for an object wider than a narrow dict (its keys indexed): a
// repeated key's last value in its first place, every key readable.
TEST(VqlSemantics, ParseJsonOfAWideObjectKeepsItsKeys) {
  std::string data = "{";
  for (int i = 0; i < 200; ++i) data += "\"k" + std::to_string(i) + "\":" + std::to_string(i) + ",";
  data += R"("k3": "again", "k150": "again too", "end": 1})";
  auto rows = run("LET J = parse_json(data=D) SELECT len(list=J) AS N, J.k3 AS A, J.k150 AS B, J.k199 AS C, J.end AS E, "
                  "items(item=J)[3] AS I FROM scope()",
                  {{"D", Value(data), nullptr}});
  EXPECT_EQ(rows, std::vector<std::string>{
                      R"({"N":201,"A":"again","B":"again too","C":199,"E":1,"I":{"_key":"k3","_value":"again"}})"});
}

// Profiles written to hurt: members that read themselves, structs that
// hold themselves twice (2^64 members as JSON), numbers that do not fit.
TEST_F(BinaryFile, HostileProfilesAreBounded) {
  auto one = [&](const std::string& profile, const std::string& expr) {
    auto rows = run("LET S = parse_binary(filename=F, profile=P, struct='S') SELECT " + expr + " AS X FROM scope()",
                    {{"P", Value(profile), nullptr}, {"F", Value(path_), nullptr}});
    return rows.size() == 1 ? rows[0] : "<rows>";
  };
  EXPECT_EQ(one(R"([["S", 0, [["a", "x=>x.a", "uint8"]]]])", "S.a"), R"({"X":null})");
  std::string twice = one(R"([["S", 0, [["a", 0, "S"], ["b", 0, "S"]]]])", "S");
  EXPECT_LT(twice.size(), size_t{4} << 20);
  EXPECT_NE(twice.find("null"), std::string::npos);
  EXPECT_EQ(one(R"([["S", 1e300, [["a", 0, "Array", {"type": "S", "count": 3, "max_count": -1}]]]])", "S.a"),
            R"({"X":[]})");
  EXPECT_EQ(one(R"([["S", 0, [["c", 0, "BitField", {"type": "float64"}]]]])", "S"),
            R"({"X":null})");  // refused before anything is read
  auto rows = run(R"(SELECT parse_binary(accessor='data', filename=D, struct='S', profile='[["S", 0, [
                       ["a", 0, "BitField", {"type": "uint64", "start_bit": 64}],
                       ["b", 0, "Timestamp", {"type": "uint64", "factor": 0}],
                       ["e", 0, "Enumeration", {"type": "uint64"}]]]]') AS X FROM scope())",
                  {{"D", Value(std::string(8, '\xff')), nullptr}});
  EXPECT_EQ(rows, std::vector<std::string>{R"({"X":{"a":0,"b":null,"e":"18446744073709551615"}})"});
}

// A PEM body (base64 in lines) decoded and read with a length taken from the data.
TEST(VqlSemantics, AKeyHeaderReadsFromDecodedData) {
  auto rows = run(R"(
      LET Prof = '''[["Header", 0, [["Magic", 0, "String", {"length": 100,}],
                     ["cipher_length", 15, "uint32b"],
                     ["cipher", 19, "String", {"length": "x=>x.cipher_length"}]]]]'''
      LET Decoded = base64decode(string=parse_string_with_regex(string=Pem, regex="(?sm)KEY-----(.+)-----END").g1)
      SELECT parse_binary(accessor="data", filename=Decoded, profile=Prof, struct="Header") AS H FROM scope())",
                  {{"Pem", Value("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIA\nAAAGYmNyeXB0eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eA==\n-----END OPENSSH PRIVATE KEY-----\n"), nullptr}});
  EXPECT_EQ(rows, (std::vector<std::string>{R"({"H":{"Magic":"openssh-key-v1","cipher_length":10,"cipher":"aes256-ctr"}})"}));
}

TEST(VqlSemantics, SubqueryColumnsCollapseAsVelociraptorsDo) {
  EXPECT_EQ(run("LET T <= SELECT * FROM foreach(row=[1, 2], query={SELECT _value AS A FROM scope()}) "
                "SELECT {SELECT A FROM T} AS Two, {SELECT A FROM T WHERE A = 2} AS One, "
                "{SELECT A, 1 AS B FROM T WHERE A = 1} AS Row, {SELECT A FROM T WHERE A = 3} AS None FROM scope()"),
            std::vector<std::string>{R"({"Two":[1,2],"One":2,"Row":{"A":1,"B":1},"None":[]})"});
}

TEST(VqlSemantics, ForeachOverNullIsNoRows) {
  // parse_xml() of output that is no XML is NULL: the artifact's foreach gives nothing.
  EXPECT_EQ(run("SELECT * FROM foreach(row=parse_json(data='x').a, query={SELECT 1 AS A FROM scope()})"),
            std::vector<std::string>{});
  EXPECT_NE(error_of_run([] { run("SELECT * FROM foreach(query={SELECT 1 AS A FROM scope()})"); }).find("row"),
            std::string::npos);
}

TEST(VqlSemantics, RegexMatchesAsVelociraptorsDoes) {
  EXPECT_EQ(run("SELECT NULL =~ '.' AS A, NULL =~ 'x' AS B, ('ab', 'cd') =~ '^C' AS C, ('ab',) =~ 'z' AS D, "
                "'ABC' =~ 'b' AS E FROM scope()"),
            std::vector<std::string>{R"({"A":true,"B":false,"C":true,"D":false,"E":true})"});
  EXPECT_EQ(run("SELECT str(str=('a', 2, ('b',))) AS S, str(str=dict(a=1)) AS D FROM scope()"),
            std::vector<std::string>{R"({"S":"[a 2 [b]]","D":"{\"a\":1}"})"});
}

}  // namespace
}  // namespace outpost::vql
