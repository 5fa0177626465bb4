#pragma once
// VQL's tokens. Keywords are case-insensitive; identifiers keep their case
// and may be quoted with backticks (`Some Column`). Comments: -- and // to
// the end of the line, /* ... */.

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace outpost::vql {

struct Position {
  int line = 1;
  int column = 1;
};

struct Token {
  enum class Kind {
    end,
    identifier,
    keyword,  // text holds it in upper case
    integer,
    floating,
    string,
    op,  // = != <> < <= > >= =~ + - * / % ( ) [ ] { } , . ;
  };
  Kind kind = Kind::end;
  std::string text;  // identifier, keyword, operator, or the string's decoded value
  std::string raw;   // a keyword as written (GROUP is also a column's name: Group)
  int64_t integer = 0;
  double floating = 0;
  Position pos;

  bool is_keyword(const char* k) const { return kind == Kind::keyword && text == k; }
  bool is_op(const char* o) const { return kind == Kind::op && text == o; }
  // As an error message shows it: "'WHERE'", "identifier 'foo'", "end of query".
  std::string describe() const;
};

// A query that does not parse: "line L, column C: expected X, found Y".
class ParseError : public std::runtime_error {
 public:
  ParseError(Position pos, const std::string& problem);
  Position pos;
};

// A string's text as it goes between single quotes: ' and \ escaped,
// control characters as \xHH.
std::string escape_string(std::string_view s);

// Throws ParseError at the first malformed token.
std::vector<Token> tokenize(std::string_view text);

}  // namespace outpost::vql
