// The VQL parser: queries that parse, printed back in canonical form (which
// must itself parse to the same form), and malformed ones with their exact
// error messages.

#include <gtest/gtest.h>

#include "queries/parser.hpp"

namespace outpost::vql {
namespace {

struct Good {
  const char* query;
  const char* canonical;
};

const Good kGood[] = {
    {"select * from info()", "SELECT * FROM info()"},
    {"SELECT Name, Pid AS P FROM pslist() WHERE Pid > 100",
     "SELECT Name, Pid AS P FROM pslist() WHERE (Pid > 100)"},
    // Velociraptor's precedence: AND binds looser than OR.
    {"SELECT * FROM pslist() WHERE Name =~ 'ssh' AND Pid > 100 OR NOT Exe = \"\"",
     "SELECT * FROM pslist() WHERE ((Name =~ 'ssh') AND ((Pid > 100) OR (NOT (Exe = ''))))"},
    {"SELECT a || b | c && d, x[1:], x[:-1], x[:], (1, 2,), (3,), (4) FROM x",
     "SELECT (((a || b) || c) && d), x[1:], x[:-1], x[:], [1, 2], [3], 4 FROM x"},
    {"LET f(a, b) = a + b LET q() = SELECT * FROM f(a=1, b=2,) SELECT [1, 2,] FROM Artifact.Linux.`Sys`.Users()",
     "LET f(a, b) = (a + b); LET q() = SELECT * FROM f(a=1, b=2); SELECT [1, 2] FROM Artifact.Linux.Sys.Users()"},
    {"SELECT a + b * c - d / e % f FROM x", "SELECT ((a + (b * c)) - ((d / e) % f)) FROM x"},
    {"SELECT -Pid, -5, - 2.5, 1e3, 0x1F FROM x", "SELECT (-Pid), -5, -2.5, 1000.0, 31 FROM x"},
    {"SELECT Stat.Size, Stat.Mtime.Sec, L[0], L[1 + 1] FROM x",
     "SELECT Stat.Size, Stat.Mtime.Sec, L[0], L[(1 + 1)] FROM x"},
    {"SELECT [1, 'a', TRUE, NULL, []], dict(a=1, b=[2]) FROM x",
     "SELECT [1, 'a', TRUE, NULL, []], dict(a=1, b=[2]) FROM x"},
    {"SELECT format(format='%v-%v', args=[a, b]) AS F FROM x",
     "SELECT format(format='%v-%v', args=[a, b]) AS F FROM x"},
    {"SELECT * FROM foreach(row={SELECT Pid FROM pslist()}, query={SELECT * FROM stat(filename=Pid)})",
     "SELECT * FROM foreach(row={SELECT Pid FROM pslist()}, query={SELECT * FROM stat(filename=Pid)})"},
    {"LET p = SELECT * FROM pslist() SELECT Name FROM p ORDER BY Name DESC LIMIT 5",
     "LET p = SELECT * FROM pslist(); SELECT Name FROM p ORDER BY Name DESC LIMIT 5"},
    {"LET n <= 1 + 2; LET m = n * 2; SELECT m FROM info();",
     "LET n <= (1 + 2); LET m = (n * 2); SELECT m FROM info()"},
    {"SELECT x FROM y ORDER BY x ASC", "SELECT x FROM y ORDER BY x"},
    {"LET f(a, b='x') = a SELECT Group, limit AS Order FROM x GROUP BY Group ORDER BY Order",
     "LET f(a, b='x') = a; SELECT `Group`, `limit` AS `Order` FROM x GROUP BY `Group` ORDER BY `Order`"},
    {"SELECT a, count() AS n FROM x WHERE b GROUP BY a, b + 1 ORDER BY n LIMIT 3",
     "SELECT a, count() AS n FROM x WHERE b GROUP BY a, (b + 1) ORDER BY n LIMIT 3"},
    {"SELECT 'it''s' FROM x", nullptr},  // '' is not an escape: two strings -> error (see kBad)
    {"SELECT 'a\\'b\\n\\x41\\d' FROM x", "SELECT 'a\\'b\\x0aA\\\\d' FROM x"},
    {"SELECT '''raw \\n 'quoted' ''' FROM x", "SELECT 'raw \\\\n \\'quoted\\' ' FROM x"},
    {"SELECT `Odd Name`, `select` FROM x", "SELECT `Odd Name`, `select` FROM x"},
    {"SELECT a IN [1, 2], a != b, a <> b, a <= b FROM x",
     "SELECT (a IN [1, 2]), (a != b), (a != b), (a <= b) FROM x"},
    {"-- a comment\nSELECT /* inline */ 1 FROM x // trailing", "SELECT 1 FROM x"},
    {"SELECT NOT NOT a FROM x", "SELECT (NOT (NOT a)) FROM x"},
    {"SELECT (a OR b) AND c FROM x", "SELECT ((a OR b) AND c) FROM x"},
    {"SELECT * FROM x WHERE a = 1 = 2", nullptr},  // comparisons do not chain (see kBad)
};

TEST(VqlParser, GoodQueriesPrintCanonicallyAndRoundTrip) {
  for (auto& g : kGood) {
    if (!g.canonical) continue;
    SCOPED_TRACE(g.query);
    ast::Query q;
    ASSERT_NO_THROW(q = parse(g.query));
    std::string printed = ast::print(q);
    EXPECT_EQ(printed, g.canonical);
    ast::Query again;
    ASSERT_NO_THROW(again = parse(printed)) << printed;
    EXPECT_EQ(ast::print(again), printed);
  }
}

struct Bad {
  const char* query;
  const char* error;
};

const Bad kBad[] = {
    {"", "line 1, column 1: expected SELECT or LET, found end of query"},
    {"SELEC * FROM x", "line 1, column 1: expected SELECT or LET, found identifier 'SELEC'"},
    {"SELECT * FROM", "line 1, column 14: expected a plugin or a LET name after FROM, found end of query"},
    {"SELECT FROM x", "line 1, column 8: expected an expression, found 'FROM'"},
    {"SELECT * FROM x WHERE", "line 1, column 22: expected an expression, found end of query"},
    {"SELECT a,\n  FROM x", "line 2, column 3: expected an expression, found 'FROM'"},
    {"SELECT * FROM pslist(pid 1)", "line 1, column 26: expected '=', found number 1"},
    {"SELECT * FROM pslist(1)",
     "line 1, column 22: expected an argument name (arguments are named: name=value), found number 1"},
    {"SELECT * FROM pslist(a=1, a=2)", "line 1, column 27: argument 'a' given twice"},
    {"SELECT * FROM x LIMIT 'a'", "line 1, column 23: expected a whole number after LIMIT, found string 'a'"},
    {"SELECT * FROM x ORDER Name", "line 1, column 23: expected BY, found identifier 'Name'"},
    {"SELECT * FROM x GROUP a", "line 1, column 23: expected BY, found identifier 'a'"},
    {"SELECT 'abc FROM x", "line 1, column 8: string not closed: expected ', found end of query"},
    {"SELECT 1 FROM x /* never closed", "line 1, column 17: comment not closed: expected */, found end of query"},
    {"SELECT # FROM x", "line 1, column 8: unexpected character '#'"},
    {"SELECT 99999999999999999999 FROM x", "line 1, column 8: number 99999999999999999999 is too large"},
    {"SELECT 1e999 FROM x", "line 1, column 8: number 1e999 is too large"},  // found by the fuzzer
    {"SELECT 12abc FROM x", "line 1, column 10: expected a digit, found 'a'"},
    {"SELECT 'it''s' FROM x", "line 1, column 12: expected FROM, found string 's'"},
    {"SELECT * FROM x WHERE a = 1 = 2", "line 1, column 29: expected SELECT or LET, found '='"},
    {"SELECT (1 FROM x", "line 1, column 11: expected ')', found 'FROM'"},
    {"SELECT [1, 2 FROM x", "line 1, column 14: expected ']', found 'FROM'"},
    {"SELECT {SELECT * FROM y FROM x", "line 1, column 25: expected '}', found 'FROM'"},
    {"LET = 1", "line 1, column 5: expected a name after LET, found '='"},
    {"LET x 1", "line 1, column 7: expected '=', found number 1"},
    {"SELECT a. FROM x", "line 1, column 11: expected a field name after '.', found 'FROM'"},
    {"SELECT '\\x4' FROM x", "line 1, column 10: expected two hex digits after \\x"},
    {"SELECT `` FROM x", "line 1, column 8: empty identifier ``"},
};

TEST(VqlParser, MalformedQueriesGiveExactErrors) {
  for (auto& b : kBad) {
    SCOPED_TRACE(b.query);
    try {
      parse(b.query);
      ADD_FAILURE() << "parsed";
    } catch (const ParseError& e) {
      EXPECT_EQ(std::string(e.what()), b.error);
    }
  }
}

TEST(VqlParser, HostileNestingAndSizeAreRefusedNotCrashed) {
  std::string deep = "SELECT " + std::string(10000, '(') + "1" + std::string(10000, ')') + " FROM x";
  EXPECT_THROW(parse(deep), ParseError);
  std::string nots = "SELECT ";
  for (int i = 0; i < 10000; ++i) nots += "NOT ";
  EXPECT_THROW(parse(nots + "1 FROM x"), ParseError);
  std::string chain = "SELECT a";
  for (int i = 0; i < 100000; ++i) chain += " + a";
  EXPECT_THROW(parse(chain + " FROM x"), ParseError);
  std::string fields = "SELECT a";
  for (int i = 0; i < 100000; ++i) fields += ".b";
  EXPECT_THROW(parse(fields + " FROM x"), ParseError);
  std::string subqueries = "SELECT * FROM foreach(row=";
  for (int i = 0; i < 1000; ++i) subqueries += "{SELECT * FROM foreach(row=";
  EXPECT_THROW(parse(subqueries), ParseError);
  EXPECT_THROW(parse("SELECT '" + std::string(kMaxQueryBytes, 'a') + "' FROM x"), ParseError);
  // Just inside the bounds still parses.
  std::string ok = "SELECT " + std::string(50, '(') + "1" + std::string(50, ')') + " FROM x";
  EXPECT_NO_THROW(parse(ok));
}

TEST(VqlParser, ColumnNamesFollowTheExpression) {
  auto q = parse("SELECT Name, Stat.Size, Pid + 1, basename(path=FullPath), 1 AS One FROM x");
  std::vector<std::string> names;
  for (auto& c : q.statements[0].select->columns) names.push_back(ast::column_name(c));
  EXPECT_EQ(names, (std::vector<std::string>{"Name", "Stat.Size", "Pid + 1", "basename(path=FullPath)", "One"}));
}

}  // namespace
}  // namespace outpost::vql
