// The VQL evaluator: expressions, LET laziness, foreach, subqueries, regex,
// coercions and NULL behaviour, through whole queries.

#include <gtest/gtest.h>

#include "queries/engine.hpp"
#include "tests/vql_test_util.hpp"
#include "tests/log_capture.hpp"

namespace outpost::vql {
namespace {

int g_counter_calls = 0;

// Builtins plus two test sources: range() and a counting function.
const Registry& test_registry() {
  static const Registry r = [] {
    Registry r;
    add_builtin_functions(r);
    add_text_functions(r);
    add_flow_functions(r);
    add_builtin_plugins(r);
    r.add(PluginSpec{"range", "rows N from start to end - 1", {{"start", "int", false, ""}, {"end", "int", true, ""}},
                     false, [](const Args& a, Env&) {
                       std::vector<Row> rows;
                       for (int64_t n = a.integer("start").value_or(0); n < *a.integer("end"); ++n) {
                         Row row;
                         row.set("N", n);
                         row.set("Name", n % 2 ? "odd" : "even");
                         rows.push_back(std::move(row));
                       }
                       return rows_stream(std::move(rows));
                     }});
    r.add(FunctionSpec{"counter", "counts its calls", {}, [](const Args&, Env&) {
                         return Value(int64_t{++g_counter_calls});
                       }});
    return r;
  }();
  return r;
}

// Every row as JSON, pulled `budget` rows at a time.
std::vector<std::string> run(const std::string& vql, size_t budget = 1000, std::vector<Binding> params = {}) {
  return json_lines(run_rows(test_registry(), vql, Waits::fail, budget, std::move(params)));
}

std::string one(const std::string& expr) {
  auto rows = run("SELECT " + expr + " AS X FROM range(end=1)");
  if (rows.size() != 1) return "<" + std::to_string(rows.size()) + " rows>";
  return rows[0].substr(5, rows[0].size() - 6);  // {"X":...}
}

std::string error_of(const std::string& vql) {
  return error_of_run([&] { run(vql); });
}

TEST(VqlEval, Arithmetic) {
  EXPECT_EQ(one("1 + 2 * 3"), "7");
  EXPECT_EQ(one("(1 + 2) * 3"), "9");
  EXPECT_EQ(one("10 / 2"), "5");
  EXPECT_EQ(one("7 / 2"), "3.5");
  EXPECT_EQ(one("7 % 3"), "1");
  EXPECT_EQ(one("1 / 0"), "null");
  EXPECT_EQ(one("1 % 0"), "null");
  EXPECT_EQ(one("1.5 + 1"), "2.5");
  EXPECT_EQ(one("9223372036854775807 + 1"), "9223372036854775808");  // overflow becomes a float
  EXPECT_EQ(one("-(3)"), "-3");
  EXPECT_EQ(one("'a' + 'b'"), "\"ab\"");
  EXPECT_EQ(one("[1] + [2, 3]"), "[1,2,3]");
  EXPECT_EQ(one("[1, 2] + 3"), "[1,2,3]");  // a scalar joins a list, as in Velociraptor
  EXPECT_EQ(one("'a' + ['b']"), "[\"a\",\"b\"]");
  EXPECT_EQ(one("'a' + 1"), "null");
  EXPECT_EQ(one("NULL + 1"), "null");
}

TEST(VqlEval, ComparisonsAndLogic) {
  EXPECT_EQ(one("1 = 1.0"), "true");
  EXPECT_EQ(one("2 > 1 AND 'b' > 'a'"), "true");
  EXPECT_EQ(one("1 < 'a'"), "false");  // different types do not order
  EXPECT_EQ(one("NULL = NULL"), "true");
  EXPECT_EQ(one("NULL != 1"), "true");
  EXPECT_EQ(one("NULL < 1 OR NULL >= 1"), "false");
  EXPECT_EQ(one("NOT NULL"), "true");
  EXPECT_EQ(one("NOT 0 AND NOT ''"), "true");
  EXPECT_EQ(one("[1, dict(a=2)] = [1, dict(a=2)]"), "true");
  EXPECT_EQ(one("2 IN [1, 2]"), "true");
  EXPECT_EQ(one("'a' IN dict(a=1)"), "true");
  EXPECT_EQ(one("'ell' IN 'hello'"), "true");
  EXPECT_EQ(one("3 IN [1, 2]"), "false");
}

TEST(VqlEval, RegexIsCaseInsensitiveAndSafe) {
  EXPECT_EQ(one("'OpenSSH' =~ 'ssh'"), "true");
  EXPECT_EQ(one("'sshd' =~ '^ssh$'"), "false");
  EXPECT_EQ(one("12345 =~ '^[0-9]+$'"), "true");  // non-strings match as text
  EXPECT_EQ(one("NULL =~ '.*'"), "true");  // as Velociraptor's: '', '.' and '.*' match anything
  EXPECT_EQ(one("NULL =~ 'a'"), "false");
  // Catastrophic backtracking elsewhere; linear in RE2.
  EXPECT_EQ(one("'" + std::string(5000, 'a') + "!' =~ '^(a+)+$'"), "false");
  EXPECT_EQ(error_of("SELECT 'a' =~ '(' FROM range(end=1)"),
            "regex '(': missing ): (");
}

TEST(VqlEval, FieldsIndexesAndContainers) {
  EXPECT_EQ(one("dict(a=dict(b=[10, 20])).a.b[1]"), "20");
  EXPECT_EQ(one("[1, 2, 3][-1]"), "3");
  EXPECT_EQ(one("[1, 2][5]"), "null");
  EXPECT_EQ(one("dict(a=1).missing"), "null");
  EXPECT_EQ(one("dict(a=1)['a']"), "1");
  EXPECT_EQ(one("[dict(a=1), dict(a=2)].a"), "[1,2]");
  EXPECT_EQ(one("Unknown"), "null");
  EXPECT_EQ(one("get(item=dict(a=dict(b=5)), field='a.b')"), "5");
  EXPECT_EQ(one("get(item=dict(), field='x', default=7)"), "7");
}

TEST(VqlEval, FunctionsAndCoercions) {
  EXPECT_EQ(one("int(int='0x10') + int(int='12') + int(int=2.9) + int(int=TRUE)"), "31");
  EXPECT_EQ(one("int(int='junk')"), "0");
  EXPECT_EQ(one("int(int='12abc')"), "0");  // all of it is a number, or it is none
}

// atoi() reads integers as Go's ParseInt with base 0 does; what is none gives 0.
TEST(VqlEval, AtoiReadsGoIntegers) {
  EXPECT_EQ(one("[atoi(string='42'), atoi(string='-17'), atoi(string='+8'), atoi(string='0x1F'), atoi(string='0o17')]"),
            "[42,-17,8,31,15]");
  EXPECT_EQ(one("[atoi(string='017'), atoi(string='0b101'), atoi(string='1_000'), atoi(string='0'), atoi(string=7)]"),
            "[15,5,1000,0,7]");
  EXPECT_EQ(one("[atoi(string='9223372036854775807'), atoi(string='-9223372036854775808')]"),
            "[9223372036854775807,-9223372036854775808]");
  // Not integers: 0.
  EXPECT_EQ(one("[atoi(string='9223372036854775808'), atoi(string='08'), atoi(string='1__0'), atoi(string='_1')]"),
            "[0,0,0,0]");
  EXPECT_EQ(one("[atoi(string=''), atoi(string='0x'), atoi(string=' 1'), atoi(string='1.5'), atoi(string=NULL)]"),
            "[0,0,0,0,0]");
}

TEST(VqlEval, SplitAtARegexOrAtALiteralString) {
  EXPECT_EQ(one("split(string='a.b..c', sep_string='.')"), R"(["a","b","","c"])");
  EXPECT_EQ(one("split(string='a.b', sep='.')"), R"(["","","",""])");  // sep is a regex
  EXPECT_EQ(one("split(string='a1b22c', sep='[0-9]+')"), R"(["a","b","c"])");
  EXPECT_EQ(one("split(string='', sep_string=',')"), R"([""])");
  EXPECT_EQ(one("split(string='a,b')"), "null");  // neither separator
}

// regex_replace(): every match, case ignored, $1 and ${name} expanded as Go's Expand does.
TEST(VqlEval, RegexReplaceExpandsGroupsAndIgnoresCase) {
  EXPECT_EQ(one("regex_replace(source='Hello hello HELLO', re='hello', replace='bye')"), R"("bye bye bye")");
  EXPECT_EQ(one("regex_replace(source='key=value', re='(\\w+)=(\\w+)', replace='$2:$1')"), R"("value:key")");
  EXPECT_EQ(one("regex_replace(source='ab', re='(?P<first>a)', replace='[${first}]')"), R"("[a]b")");
  EXPECT_EQ(one("regex_replace(source='ab', re='(a)', replace='${1}x $1x $$ $9')"), R"("ax  $ b")");
  EXPECT_EQ(one("regex_replace(source='abc', re='x*', replace='-')"), R"("-a-b-c-")");
  EXPECT_EQ(one("regex_replace(source='abc', re='b')"), R"("ac")");
  EXPECT_EQ(one("regex_replace(source='abc', re='(', replace='x')"), "null");  // not a regex
  EXPECT_EQ(one("str(str=12)"), "\"12\"");
  EXPECT_EQ(one("str(str=[1, 'a'])"), "\"[1 a]\"");  // Go's %v, as Velociraptor's
  EXPECT_EQ(one("str(str=timestamp(epoch=1700000000))"), "\"2023-11-14T22:13:20.000000000Z\"");
  EXPECT_EQ(one("timestamp(epoch=1700000000123)"), "\"2023-11-14T22:13:20.123000000Z\"");  // ms by size
  EXPECT_EQ(one("timestamp(epoch='2023-11-14T23:13:20.5+01:00')"), "\"2023-11-14T22:13:20.500000000Z\"");
  EXPECT_EQ(one("format(format='%v-%05d-%x-%.2f-%q-%%', args=['a', 42, 255, 3.14159, 'q'])"),
            "\"a-00042-ff-3.14-\\\"q\\\"-%\"");
  EXPECT_EQ(one("format(format='%v %v', args=['only'])"), "\"only %!v(MISSING)\"");
  EXPECT_EQ(one("lowcase(string='AbC') + upcase(string='d')"), "\"abcD\"");
  EXPECT_EQ(one("split(string='a, b,c', sep=', ?')"), "[\"a\",\"b\",\"c\"]");
  EXPECT_EQ(one("join(array=['a', 1, NULL], sep='/')"), "\"a/1/\"");
  EXPECT_EQ(one("len(list=[1, 2]) + len(list='abc') + len(list=dict(a=1))"), "6");
  EXPECT_EQ(one("basename(path='/a/b/c.txt') + ' ' + dirname(path='/a/b/c.txt')"), "\"c.txt /a/b\"");
  EXPECT_EQ(one("basename(path='/a/b/') + ' ' + dirname(path='/a') + ' ' + dirname(path='a')"), "\"b / .\"");
  // A bad value in one row is Velociraptor's: NULL (and a warning), the query goes on.
  EXPECT_EQ(run("SELECT lowcase(string=[N]) AS L, N FROM range(end=1)"),
            (std::vector<std::string>{"{\"L\":null,\"N\":0}"}));
  // A number where a string goes is its text, as Velociraptor coerces it.
  EXPECT_EQ(run("SELECT lowcase(string=N) AS L FROM range(end=1)"), (std::vector<std::string>{"{\"L\":\"0\"}"}));
  EXPECT_EQ(error_of("SELECT lowcase(text='a') FROM range(end=1)"),
            "line 1, column 8: lowcase(): text: unknown argument (expected string)");
}

TEST(VqlEval, SelectWhereOrderLimit) {
  EXPECT_EQ(run("SELECT N FROM range(end=10) WHERE N % 3 = 0"),
            (std::vector<std::string>{"{\"N\":0}", "{\"N\":3}", "{\"N\":6}", "{\"N\":9}"}));
  EXPECT_EQ(run("SELECT N FROM range(end=5) ORDER BY N DESC LIMIT 2"),
            (std::vector<std::string>{"{\"N\":4}", "{\"N\":3}"}));
  EXPECT_EQ(run("SELECT N FROM range(end=100) LIMIT 3", 1).size(), 3u);
  // WHERE and later columns may name an earlier column's alias.
  EXPECT_EQ(run("SELECT N * 10 AS Big, Big + 1 AS Next FROM range(end=3) WHERE Big > 10"),
            (std::vector<std::string>{"{\"Big\":20,\"Next\":21}"}));
  EXPECT_EQ(run("SELECT *, N + 1 AS M FROM range(start=4, end=5)"),
            (std::vector<std::string>{"{\"N\":4,\"Name\":\"even\",\"M\":5}"}));
  EXPECT_EQ(run("SELECT N, Name FROM range(end=4) ORDER BY Name"),
            (std::vector<std::string>{"{\"N\":0,\"Name\":\"even\"}", "{\"N\":2,\"Name\":\"even\"}",
                                      "{\"N\":1,\"Name\":\"odd\"}", "{\"N\":3,\"Name\":\"odd\"}"}));
}

TEST(VqlEval, LetIsLazyAndLetArrowIsEvaluatedOnce) {
  g_counter_calls = 0;
  auto rows = run("LET c = counter() SELECT c AS A, c AS B FROM range(end=2)");
  EXPECT_EQ(rows, (std::vector<std::string>{"{\"A\":1,\"B\":2}", "{\"A\":3,\"B\":4}"}));
  g_counter_calls = 0;
  rows = run("LET c <= counter() SELECT c AS A, c AS B FROM range(end=2)");
  EXPECT_EQ(rows, (std::vector<std::string>{"{\"A\":1,\"B\":1}", "{\"A\":1,\"B\":1}"}));
  // A LET query runs each time it is used.
  g_counter_calls = 0;
  rows = run("LET q = SELECT counter() AS C FROM range(end=1) SELECT * FROM foreach(row=[1, 2], query=q)");
  EXPECT_EQ(rows, (std::vector<std::string>{"{\"C\":1}", "{\"C\":2}"}));
  EXPECT_EQ(error_of("LET x = x + 1 SELECT x FROM range(end=1)"),
            "LET x: evaluation nested more than 64 levels deep (does a LET refer to itself?)");
}

TEST(VqlEval, ForeachSubqueriesAndIf) {
  auto rows = run(
      "SELECT * FROM foreach(row={SELECT N FROM range(start=1, end=3)}, "
      "query={SELECT N AS Outer, N2 FROM foreach(row={SELECT N AS N2 FROM range(end=N)})})",
      1);
  EXPECT_EQ(rows, (std::vector<std::string>{"{\"Outer\":1,\"N2\":0}", "{\"Outer\":2,\"N2\":0}",
                                            "{\"Outer\":2,\"N2\":1}"}));
  EXPECT_EQ(run("LET evens = SELECT N FROM range(end=6) WHERE Name = 'even' "
                "SELECT len(list=evens) AS L, evens.N AS Ns FROM range(end=1)"),
            (std::vector<std::string>{"{\"L\":3,\"Ns\":[0,2,4]}"}));
  EXPECT_EQ(run("SELECT * FROM foreach(row=[dict(a=1), 2])"),
            (std::vector<std::string>{"{\"a\":1}", "{\"_value\":2}"}));
  EXPECT_EQ(run("SELECT * FROM if(condition={SELECT * FROM range(end=0)}, then=[dict(x=1)], else=[dict(x=2)])"),
            (std::vector<std::string>{"{\"x\":2}"}));
  EXPECT_EQ(run("SELECT * FROM if(condition=1 < 2, then={SELECT N FROM range(end=1)})"),
            (std::vector<std::string>{"{\"N\":0}"}));
  EXPECT_TRUE(run("SELECT * FROM if(condition=NULL, then=[dict(x=1)])").empty());
}

TEST(VqlEval, StatementsParametersAndVariablesInFrom) {
  EXPECT_EQ(run("SELECT N FROM range(end=1); SELECT Name FROM range(end=1)"),
            (std::vector<std::string>{"{\"Name\":\"even\"}"}));  // only the last SELECT's rows
  EXPECT_EQ(run("SELECT Who FROM range(end=1)", 1000, {{"Who", Value("param"), nullptr}}),
            (std::vector<std::string>{"{\"Who\":\"param\"}"}));
  EXPECT_EQ(run("LET rows <= SELECT N FROM range(end=2) SELECT N FROM rows"),
            (std::vector<std::string>{"{\"N\":0}", "{\"N\":1}"}));
  EXPECT_EQ(error_of("SELECT * FROM nothing"),
            "line 1, column 15: FROM nothing: no such variable (a plugin needs parentheses: nothing())");
}

TEST(VqlEval, UnknownNamesFailBeforeAnythingRuns) {
  g_counter_calls = 0;
  EXPECT_EQ(error_of("SELECT counter() FROM range(end=1); SELECT nope(x=1) FROM range(end=1)"),
            "line 1, column 44: unknown function nope()");
  EXPECT_EQ(g_counter_calls, 0);
  EXPECT_EQ(error_of("SELECT * FROM rnage(end=1)"), "line 1, column 15: unknown plugin rnage()");
  EXPECT_EQ(error_of("SELECT * FROM counter()"),
            "line 1, column 15: unknown plugin counter() (counter() is a function, not a plugin)");
  EXPECT_EQ(error_of("SELECT range(end=1) FROM range(end=1)"),
            "line 1, column 8: unknown function range() (range() is a plugin: use it after FROM)");
  EXPECT_EQ(error_of("SELECT * FROM range()"), "line 1, column 15: range(): end: required");
  // A required argument the call leaves out, whatever the values will be.
  EXPECT_EQ(error_of("SELECT counter() FROM range(end=1); SELECT lowcase() FROM range(end=1)"),
            "line 1, column 44: lowcase(): string: required");
  EXPECT_EQ(g_counter_calls, 0);
}

TEST(VqlEval, LogicalOperatorsGiveVelociraptorsValues) {
  EXPECT_EQ(one("0 || 'fallback'"), "\"fallback\"");
  EXPECT_EQ(one("'first' || 'second'"), "\"first\"");
  EXPECT_EQ(one("'' || 0"), "0");  // none true: the last one's value
  EXPECT_EQ(one("2 && 'last'"), "\"last\"");
  EXPECT_EQ(one("0 && 'last'"), "false");
  EXPECT_EQ(one("'x' OR 0"), "\"x\"");  // a true left operand's value
  EXPECT_EQ(one("0 OR 'y'"), "true");
  EXPECT_EQ(one("0 OR ''"), "\"\"");
  EXPECT_EQ(one("2 AND 'z'"), "true");
  // AND binds looser than OR: (TRUE OR TRUE) AND FALSE.
  EXPECT_EQ(one("TRUE OR TRUE AND FALSE"), "false");
  EXPECT_EQ(one("[1, 2, 3, 4][1:3]"), "[2,3]");
  EXPECT_EQ(one("'abcdef'[-3:]"), "\"def\"");
  EXPECT_EQ(one("'abcdef'[:2]"), "\"ab\"");
  EXPECT_EQ(one("'abc'[2:1]"), "\"\"");
  EXPECT_EQ(one("(1, 'a',)"), "[1,\"a\"]");
}

TEST(VqlEval, LetFunctionsAndParameterizedQueries) {
  EXPECT_EQ(run("LET Twice(X) = X * 2 SELECT Twice(X=N) AS T FROM range(end=3)"),
            (std::vector<std::string>{"{\"T\":0}", "{\"T\":2}", "{\"T\":4}"}));
  // A query with parameters is a plugin; a parameter not given is NULL, not the caller's variable.
  EXPECT_EQ(run("LET N = 'outer' LET Upto(N, M) = SELECT N AS Got, M FROM range(end=N) "
                "SELECT * FROM Upto(N=2)"),
            (std::vector<std::string>{"{\"Got\":0,\"M\":null}", "{\"Got\":1,\"M\":null}"}));
  // Defined after its first use in the text, called from a function's argument, nested.
  EXPECT_EQ(run("LET Inc(X) = X + 1 LET Twice(X) = Inc(X=Inc(X=X)) SELECT Twice(X=1) AS T FROM range(end=1)"),
            (std::vector<std::string>{"{\"T\":3}"}));
  try {
    run("LET F(X) = X SELECT F(Y=1) FROM range(end=1)");
    ADD_FAILURE() << "ran";
  } catch (const QueryError& e) {
    EXPECT_STREQ(e.what(), "line 1, column 21: F(): Y: not a parameter of LET F");
  }
}

TEST(VqlEval, IfEvaluatesOnlyTheBranchItTakes) {
  // The other branch would fail (F takes no Z), and count a call.
  g_counter_calls = 0;
  EXPECT_EQ(run("LET F(X) = X SELECT if(condition=N = 1, then='one', else=F(Z=1)) AS A, "
                "if(condition=N != 1, then=counter(), else='not counted') AS B FROM range(start=1, end=2)"),
            (std::vector<std::string>{"{\"A\":\"one\",\"B\":\"not counted\"}"}));
  EXPECT_EQ(g_counter_calls, 0);
  EXPECT_EQ(one("if(condition={SELECT * FROM range(end=1)}, then='has a row')"), "\"has a row\"");
  EXPECT_EQ(one("if(condition={SELECT * FROM range(end=0)}, then='has a row')"), "null");
}

TEST(VqlEval, LogWritesOnceWithinItsDedupTimeAndReturnsTrue) {
  testing::LogCapture lines;
  auto rows = run("SELECT log(message='row %v of %v', args=[N, 3]) AS A, "
                  "log(message='each %v', args=N, dedup=-1, level='warn') AS B FROM range(end=3)");
  lines.stop();
  EXPECT_EQ(rows, std::vector<std::string>(3, "{\"A\":true,\"B\":true}"));
  EXPECT_EQ(lines.text(),
            "info vql: DEFAULT: row 0 of 3\nwarning vql: WARN: each 0\nwarning vql: WARN: each 1\n"
            "warning vql: WARN: each 2\n");
}

// No silent wrong answers: a column the source never gives, or a field a
// value does not have, reads as NULL (as in Velociraptor) and is warned
// about once, naming what there is and the nearest name.
TEST(VqlEval, ReadingAColumnOrFieldThatIsNotThereIsWarnedAbout) {
  testing::LogCapture lines;
  auto rows = run("LET D = dict(Port=22, Addr='10.0.0.1') "
                  "SELECT n, Nmae, D.Prot AS P, Name.Port AS Q, D.Port AS R, get(field='Gone') AS G "
                  "FROM range(end=2)");
  lines.stop();
  EXPECT_EQ(rows, std::vector<std::string>(2, "{\"n\":null,\"Nmae\":null,\"P\":null,\"Q\":null,\"R\":22,\"G\":null}"));
  EXPECT_EQ(lines.text(),
            "warning vql: n is no column of the row and no variable: it reads as NULL (the row's columns: N, "
            "Name; did you mean N?)\n"
            "warning vql: Nmae is no column of the row and no variable: it reads as NULL (the row's columns: N, "
            "Name; did you mean Name?)\n"
            "warning vql: D.Prot: D has no field Prot: it reads as NULL (its fields: Port, Addr; did you mean "
            "Port?)\n"
            "warning vql: Name.Port: Name has no field Port: it reads as NULL (a string has no fields)\n");
}

// Velociraptor's: an error of one row's function or inner query is a
// warning in the log, and the query goes on.
TEST(VqlEval, AnErrorInOneRowIsLoggedAndTheQueryGoesOn) {
  testing::LogCapture lines;
  auto rows = run("SELECT * FROM foreach(row={SELECT N FROM range(end=4)}, "
                  "query={SELECT N, M FROM range(start=N, end=if(condition=N = 2, then='two', else=N + 1))})");
  auto functions = run("SELECT N, format(format=if(condition=N = 1, then='%', else='%v'), args=N) AS F, "
                       "format(format='%', args=N) AS Bad FROM range(end=3)");
  lines.stop();
  EXPECT_EQ(rows, (std::vector<std::string>{"{\"N\":0,\"M\":null}", "{\"N\":1,\"M\":null}",
                                            "{\"N\":3,\"M\":null}"}));
  EXPECT_EQ(functions, (std::vector<std::string>{"{\"N\":0,\"F\":\"0\",\"Bad\":null}", "{\"N\":1,\"F\":null,\"Bad\":null}",
                                                 "{\"N\":2,\"F\":\"2\",\"Bad\":null}"}));
  // Each message once (a minute), however many rows have it; M is no column.
  EXPECT_EQ(lines.text(),
            "warning vql: M is no column of the row and no variable: it reads as NULL (the row's columns: N, "
            "Name)\n"
            "warning vql: range(): end: expected int, got string\n"
            "warning vql: format(): format: ends inside a verb\n");
}

// The groups come out in the order first seen, a pull's budget at a time.
TEST(VqlEval, GroupByEmitsItsGroupsWithinEachPullsBudget) {
  Engine engine(test_registry());
  Env env;
  auto stream = engine.start("SELECT N % 3 AS K, count() AS C FROM range(end=10) GROUP BY K", {}, env);
  std::vector<Row> rows;
  for (int i = 0; i < 1000; ++i) {
    size_t before = rows.size();
    Step s = stream->next(rows, 1);
    EXPECT_LE(rows.size() - before, 1u);
    if (s.state == Step::State::done) break;
  }
  std::vector<std::string> json;
  for (auto& r : rows) json.push_back(to_json(r));
  EXPECT_EQ(json, (std::vector<std::string>{"{\"K\":0,\"C\":4}", "{\"K\":1,\"C\":3}", "{\"K\":2,\"C\":3}"}));
}

// A dict wide enough to keep an index of its keys behaves as a narrow one:
// every key found, a set key replaced in its place, copies independent.
TEST(VqlDict, AWideDictFindsReplacesAndCopiesAsANarrowOne) {
  constexpr int64_t kKeys = 3 * Dict::kIndexedFrom;
  Dict d;
  for (int64_t i = 0; i < kKeys; ++i) d.set("key" + std::to_string(i), i);
  d.set("key5", "five");                  // before the index was built
  d.set("key" + std::to_string(kKeys - 1), "last");  // after
  ASSERT_EQ(d.size(), static_cast<size_t>(kKeys));
  for (int64_t i = 0; i < kKeys; ++i) {
    auto* v = d.find("key" + std::to_string(i));
    ASSERT_NE(v, nullptr) << i;
    EXPECT_EQ(d.items()[static_cast<size_t>(i)].first, "key" + std::to_string(i));
    if (i != 5 && i != kKeys - 1) {
      EXPECT_EQ(*v->as_int(), i);
    }
  }
  EXPECT_EQ(*d.find("key5")->as_string(), "five");
  EXPECT_EQ(*d.find("key" + std::to_string(kKeys - 1))->as_string(), "last");
  EXPECT_EQ(d.find("key"), nullptr);
  EXPECT_EQ(d.find("key" + std::to_string(kKeys)), nullptr);

  Dict copy = d;
  copy.set("key7", "seven");
  copy.set("new", true);
  EXPECT_EQ(*d.find("key7")->as_int(), 7);
  EXPECT_EQ(d.find("new"), nullptr);
  EXPECT_EQ(*copy.find("key7")->as_string(), "seven");
  EXPECT_EQ(copy.items().back().first, "new");
  Dict assigned;
  assigned.set("x", 1);
  assigned = copy;
  EXPECT_EQ(assigned.find("x"), nullptr);
  EXPECT_EQ(*assigned.find("key7")->as_string(), "seven");
  Dict moved = std::move(assigned);
  moved.set("key9", "nine");
  EXPECT_EQ(*moved.find("key9")->as_string(), "nine");
  EXPECT_EQ(moved.size(), copy.size());
}

}  // namespace
}  // namespace outpost::vql
