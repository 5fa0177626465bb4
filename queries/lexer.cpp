#include "queries/lexer.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace outpost::vql {

ParseError::ParseError(Position p, const std::string& problem)
    : std::runtime_error("line " + std::to_string(p.line) + ", column " + std::to_string(p.column) +
                         ": " + problem),
      pos(p) {}

namespace {

const char* const kKeywords[] = {"SELECT", "FROM", "WHERE", "LET",  "AS",   "AND",   "OR",
                                 "NOT",    "IN",   "ORDER", "BY",   "DESC", "ASC",   "LIMIT",
                                 "NULL",   "TRUE", "FALSE", "GROUP"};

// Longest first, so that "<=" is not read as "<" then "=".
const char* const kOperators[] = {"!=", "<>", "<=", ">=", "=~", "||", "&&", "=", "<", ">", "+", "-", "*",
                                  "/",  "%",  "(",  ")",  "[",  "]",  "{",  "}", ",", ".", ";", "|", ":"};

}  // namespace

std::string escape_string(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\'' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

namespace {

class Lexer {
 public:
  explicit Lexer(std::string_view text) : text_(text) {}

  std::vector<Token> run() {
    std::vector<Token> tokens;
    for (;;) {
      skip_space_and_comments();
      Token t;
      t.pos = pos_;
      if (at_end()) {
        tokens.push_back(t);
        return tokens;
      }
      char c = peek();
      if (is_ident_start(c))
        word(t);
      else if (c == '`')
        quoted_identifier(t);
      else if (is_digit(c) || (c == '.' && is_digit(peek(1))))
        number(t);
      else if (c == '\'' || c == '"')
        string(t);
      else
        op(t);
      tokens.push_back(std::move(t));
    }
  }

 private:
  static bool is_digit(char c) { return c >= '0' && c <= '9'; }
  static bool is_ident_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '$';
  }
  static bool is_ident(char c) { return is_ident_start(c) || is_digit(c); }

  bool at_end() const { return i_ >= text_.size(); }
  char peek(size_t ahead = 0) const { return i_ + ahead < text_.size() ? text_[i_ + ahead] : '\0'; }
  bool starts(std::string_view s) const { return text_.substr(i_, s.size()) == s; }
  char advance() {
    char c = text_[i_++];
    if (c == '\n') {
      ++pos_.line;
      pos_.column = 1;
    } else if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) {
      ++pos_.column;  // columns count characters, not UTF-8 continuation bytes
    }
    return c;
  }

  void skip_space_and_comments() {
    while (!at_end()) {
      char c = peek();
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        advance();
      } else if (starts("--") || starts("//")) {
        while (!at_end() && peek() != '\n') advance();
      } else if (starts("/*")) {
        Position start = pos_;
        advance();
        advance();
        while (!at_end() && !starts("*/")) advance();
        if (at_end()) throw ParseError(start, "comment not closed: expected */, found end of query");
        advance();
        advance();
      } else {
        return;
      }
    }
  }

  void word(Token& t) {
    size_t start = i_;
    while (!at_end() && is_ident(peek())) advance();
    std::string w(text_.substr(start, i_ - start));
    std::string upper = w;
    std::transform(upper.begin(), upper.end(), upper.begin(), [](unsigned char c) { return std::toupper(c); });
    if (std::find(std::begin(kKeywords), std::end(kKeywords), upper) != std::end(kKeywords)) {
      t.kind = Token::Kind::keyword;
      t.text = upper;
      t.raw = w;
    } else {
      t.kind = Token::Kind::identifier;
      t.text = std::move(w);
    }
  }

  void quoted_identifier(Token& t) {
    advance();
    t.kind = Token::Kind::identifier;
    while (!at_end() && peek() != '`') t.text += advance();
    if (at_end()) throw ParseError(t.pos, "identifier not closed: expected `, found end of query");
    advance();
    if (t.text.empty()) throw ParseError(t.pos, "empty identifier ``");
  }

  void number(Token& t) {
    size_t start = i_;
    bool hex = starts("0x") || starts("0X");
    bool fraction = false;
    if (hex) {
      advance();
      advance();
      while (std::isxdigit(static_cast<unsigned char>(peek()))) advance();
    } else {
      while (is_digit(peek())) advance();
      if (peek() == '.' && is_digit(peek(1))) {
        fraction = true;
        advance();
        while (is_digit(peek())) advance();
      }
      if ((peek() == 'e' || peek() == 'E') &&
          (is_digit(peek(1)) || ((peek(1) == '-' || peek(1) == '+') && is_digit(peek(2))))) {
        fraction = true;
        advance();
        advance();
        while (is_digit(peek())) advance();
      }
    }
    if (is_ident(peek())) throw ParseError(pos_, "expected a digit, found '" + std::string(1, peek()) + "'");
    std::string digits(text_.substr(start, i_ - start));
    errno = 0;
    if (fraction) {
      t.kind = Token::Kind::floating;
      t.floating = std::strtod(digits.c_str(), nullptr);
      if (!std::isfinite(t.floating)) throw ParseError(t.pos, "number " + digits + " is too large");
    } else {
      t.kind = Token::Kind::integer;
      unsigned long long u = std::strtoull(digits.c_str() + (hex ? 2 : 0), nullptr, hex ? 16 : 10);
      if (errno == ERANGE || u > static_cast<unsigned long long>(INT64_MAX) || (hex && digits.size() == 2))
        throw ParseError(t.pos, "number " + digits + (hex && digits.size() == 2 ? " has no digits" : " is too large"));
      t.integer = static_cast<int64_t>(u);
    }
    t.text = digits;
  }

  int hex_digit(char c) const {
    if (is_digit(c)) return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // 'a', "a", and raw '''a''' (no escapes, may span lines). Escapes: \n \t
  // \r \0 \\ \' \" \xHH.
  void string(Token& t) {
    t.kind = Token::Kind::string;
    char quote = peek();
    if (starts("'''")) {
      for (int k = 0; k < 3; ++k) advance();
      while (!at_end() && !starts("'''")) t.text += advance();
      if (at_end()) throw ParseError(t.pos, "string not closed: expected ''', found end of query");
      for (int k = 0; k < 3; ++k) advance();
      return;
    }
    advance();
    for (;;) {
      if (at_end()) throw ParseError(t.pos, std::string("string not closed: expected ") + quote + ", found end of query");
      char c = advance();
      if (c == quote) return;
      if (c != '\\') {
        t.text += c;
        continue;
      }
      Position at = pos_;
      if (at_end()) continue;  // reported as not closed above
      char e = advance();
      switch (e) {
        case 'n': t.text += '\n'; break;
        case 't': t.text += '\t'; break;
        case 'r': t.text += '\r'; break;
        case '0': t.text += '\0'; break;
        case '\\': case '\'': case '"': t.text += e; break;
        case 'x': {
          int hi = hex_digit(peek()), lo = hex_digit(peek(1));
          if (hi < 0 || lo < 0) throw ParseError(at, "expected two hex digits after \\x");
          advance();
          advance();
          t.text += static_cast<char>(hi * 16 + lo);
          break;
        }
        default:
          // Regexes are written in strings: keep unknown escapes (\d, \.) as they are.
          t.text += '\\';
          t.text += e;
      }
    }
  }

  void op(Token& t) {
    for (const char* o : kOperators) {
      if (starts(o)) {
        t.kind = Token::Kind::op;
        t.text = o;
        for (size_t k = 0; o[k]; ++k) advance();
        return;
      }
    }
    char c = peek();
    throw ParseError(pos_, "unexpected character '" + escape_string(std::string_view(&c, 1)) + "'");
  }

  std::string_view text_;
  size_t i_ = 0;
  Position pos_;
};

}  // namespace

std::string Token::describe() const {
  switch (kind) {
    case Kind::end: return "end of query";
    case Kind::identifier: return "identifier '" + escape_string(text) + "'";
    case Kind::keyword:
    case Kind::op: return "'" + text + "'";
    case Kind::integer:
    case Kind::floating: return "number " + text;
    case Kind::string: return "string '" + escape_string(text.substr(0, 40)) + (text.size() > 40 ? "...'" : "'");
  }
  return "?";
}

std::vector<Token> tokenize(std::string_view text) { return Lexer(text).run(); }

}  // namespace outpost::vql
