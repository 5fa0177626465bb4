#pragma once
// JSON from a C host (outpost/outpost.h): a row it pushes or its plugin
// makes, a value its function returns. What a row may hold is what
// outpost::Value holds: no nested object or array.

#include <charconv>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "outpost/values.hpp"
#include "schemas/json_reader.hpp"

namespace outpost {

// A flat JSON object as a Row: members in order; null, true, false, numbers
// (integers exact, as int64 or beyond it uint64), strings (with escapes).
// Each reader reads one text once; any thread.
class RowReader {
 public:
  explicit RowReader(const char* text, const char* what = "row") : p_(text), what_(what) {}

  // Throw std::invalid_argument naming what, the offset and what was expected.
  outpost::Value value() {
    outpost::Value v = any();
    if (peek() != '\0') bad("text after the value");
    return v;
  }
  outpost::Row row() {
    outpost::Row row;
    expect('{');
    if (peek() == '}') return ++p_, end(row);
    for (;;) {
      std::string name = string();
      expect(':');
      row.emplace_back(std::move(name), any());
      if (peek() == ',') {
        ++p_;
        continue;
      }
      expect('}');
      return end(row);
    }
  }

 private:
  [[noreturn]] void bad(const std::string& what) {
    throw std::invalid_argument(std::string(what_) + ": at offset " + std::to_string(p_ - start_) + ": " + what);
  }
  char peek() {
    while (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r') ++p_;
    return *p_;
  }
  void expect(char c) {
    if (peek() != c) bad(std::string("expected '") + c + "'");
    ++p_;
  }
  outpost::Row& end(outpost::Row& row) {
    if (peek() != '\0') bad("text after the object");
    return row;
  }
  void word(const char* w) {
    for (; *w; ++w, ++p_)
      if (*p_ != *w) bad("expected a value");
  }
  std::string string() {
    if (peek() != '"') bad("expected a string");
    std::string out;
    for (++p_; *p_ != '"'; ++p_) {
      if (*p_ == '\0') bad("the string does not end");
      if (static_cast<unsigned char>(*p_) < 0x20) bad("a control character in a string");
      if (*p_ != '\\') {
        out += *p_;
        continue;
      }
      switch (*++p_) {
        case '"': case '\\': case '/': out += *p_; break;
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': {
          ++p_;
          auto cp = schemas::unicode_escape(p_, nullptr);
          if (!cp) bad("expected four hex digits after \\u, and a low surrogate after a high one");
          schemas::append_utf8(out, *cp);
          --p_;
          break;
        }
        default: bad("an unknown escape");
      }
    }
    ++p_;
    return out;
  }
  outpost::Value number() {
    const char* begin = p_;
    while (*p_ == '-' || *p_ == '+' || *p_ == '.' || *p_ == 'e' || *p_ == 'E' || (*p_ >= '0' && *p_ <= '9')) ++p_;
    if (begin == p_) bad("expected a value");
    int64_t i = 0;
    if (auto [end, ec] = std::from_chars(begin, p_, i); ec == std::errc() && end == p_) return i;
    uint64_t u = 0;
    if (auto [end, ec] = std::from_chars(begin, p_, u); ec == std::errc() && end == p_) return u;
    std::string text(begin, p_);
    char* end = nullptr;
    double d = std::strtod(text.c_str(), &end);
    if (end != text.c_str() + text.size()) bad("not a number: " + text);
    return d;
  }
  outpost::Value any() {
    switch (peek()) {
      case '"': return string();
      case 't': return word("true"), outpost::Value(true);
      case 'f': return word("false"), outpost::Value(false);
      case 'n': return word("null"), outpost::Value(nullptr);
      case '{': case '[': bad("a nested object or array (a row's values are null, booleans, numbers or strings)");
      default: return number();
    }
  }

  const char* p_;
  const char* const start_ = p_;
  const char* what_;
};

}  // namespace outpost
