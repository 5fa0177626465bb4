#pragma once
// A small strict JSON reader, for what the agent's tools read back (an actor's
// status) and what tests check a tool printed: throws std::runtime_error (with
// the offset) on anything that is not JSON. Not for untrusted input of any
// size: it recurses once per nesting level.

#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace outpost::schemas {

// The UTF-8 of code point `cp`, appended to `out`.
inline void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// JSON's \u escape, `p` just after the "\u": its four hex digits' code
// point, joined with the "\uXXXX" low surrogate after them when it is a high
// one; `p` moves past what was read. nullopt when the digits are not four
// hex digits or a surrogate is unpaired. `end` bounds the text; null: it
// ends at a NUL.
inline std::optional<uint32_t> unicode_escape(const char*& p, const char* end) {
  auto at = [&](size_t k) { return end && p + k >= end ? '\0' : p[k]; };
  auto hex4 = [&]() -> std::optional<uint32_t> {
    uint32_t v = 0;
    for (size_t k = 0; k < 4; ++k) {  // stops at the first non-digit: never past a NUL
      char c = at(k);
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) return std::nullopt;
      v = v * 16 + static_cast<uint32_t>(d);
    }
    p += 4;
    return v;
  };
  auto cp = hex4();
  if (!cp || *cp < 0xD800 || *cp > 0xDFFF) return cp;
  if (*cp >= 0xDC00 || at(0) != '\\' || at(1) != 'u') return std::nullopt;
  p += 2;
  auto low = hex4();
  if (!low || *low < 0xDC00 || *low > 0xDFFF) return std::nullopt;
  return 0x10000 + ((*cp - 0xD800) << 10) + (*low - 0xDC00);
}

struct Json {
  enum class Type { null, boolean, number, string, array, object } type = Type::null;
  bool b = false;
  double n = 0;
  std::string s;
  std::vector<Json> a;
  std::map<std::string, Json> o;

  const Json& operator[](const std::string& key) const {
    auto it = o.find(key);
    if (type != Type::object || it == o.end()) throw std::runtime_error("no key " + key);
    return it->second;
  }
  const Json& operator[](size_t i) const {
    if (type != Type::array || i >= a.size()) throw std::runtime_error("no element " + std::to_string(i));
    return a[i];
  }
  bool has(const std::string& key) const { return type == Type::object && o.count(key); }
  uint64_t u() const { return static_cast<uint64_t>(n); }
  // A member's number, or `otherwise` when it is missing or not a number.
  double number_or(const std::string& key, double otherwise) const {
    auto it = o.find(key);
    return it != o.end() && it->second.type == Type::number ? it->second.n : otherwise;
  }
  std::string string_or(const std::string& key, const std::string& otherwise) const {
    auto it = o.find(key);
    return it != o.end() && it->second.type == Type::string ? it->second.s : otherwise;
  }

  static Json parse(const std::string& text) {
    size_t i = 0;
    Json j = value(text, i);
    skip(text, i);
    if (i != text.size()) fail(i, "trailing text");
    return j;
  }

 private:
  [[noreturn]] static void fail(size_t at, const std::string& what) {
    throw std::runtime_error("JSON at " + std::to_string(at) + ": " + what);
  }
  static void skip(const std::string& t, size_t& i) {
    while (i < t.size() && (t[i] == ' ' || t[i] == '\n' || t[i] == '\r' || t[i] == '\t')) ++i;
  }
  static void expect(const std::string& t, size_t& i, const char* word) {
    for (const char* c = word; *c; ++c, ++i)
      if (i >= t.size() || t[i] != *c) fail(i, std::string("expected ") + word);
  }
  static std::string string(const std::string& t, size_t& i) {
    if (t[i] != '"') fail(i, "expected a string");
    std::string out;
    for (++i; i < t.size() && t[i] != '"'; ++i) {
      if (static_cast<unsigned char>(t[i]) < 0x20) fail(i, "control character in a string");
      if (t[i] != '\\') {
        out += t[i];
        continue;
      }
      if (++i >= t.size()) break;
      switch (t[i]) {
        case '"': case '\\': case '/': out += t[i]; break;
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': {
          const char* p = t.data() + i + 1;
          auto cp = unicode_escape(p, t.data() + t.size());
          if (!cp) fail(i, "bad \\u escape");
          append_utf8(out, *cp);
          i = static_cast<size_t>(p - t.data()) - 1;
          break;
        }
        default: fail(i, "bad escape");
      }
    }
    if (i >= t.size()) fail(i, "unterminated string");
    ++i;
    return out;
  }
  static Json value(const std::string& t, size_t& i) {
    skip(t, i);
    if (i >= t.size()) fail(i, "expected a value");
    Json j;
    char c = t[i];
    if (c == '{') {
      j.type = Type::object;
      ++i;
      skip(t, i);
      if (t[i] == '}') return ++i, j;
      for (;;) {
        skip(t, i);
        std::string key = string(t, i);
        skip(t, i);
        expect(t, i, ":");
        j.o[key] = value(t, i);
        skip(t, i);
        if (t[i] == ',') { ++i; continue; }
        expect(t, i, "}");
        return j;
      }
    }
    if (c == '[') {
      j.type = Type::array;
      ++i;
      skip(t, i);
      if (t[i] == ']') return ++i, j;
      for (;;) {
        j.a.push_back(value(t, i));
        skip(t, i);
        if (t[i] == ',') { ++i; continue; }
        expect(t, i, "]");
        return j;
      }
    }
    if (c == '"') {
      j.type = Type::string;
      j.s = string(t, i);
      return j;
    }
    if (c == 't') return expect(t, i, "true"), j.type = Type::boolean, j.b = true, j;
    if (c == 'f') return expect(t, i, "false"), j.type = Type::boolean, j;
    if (c == 'n') return expect(t, i, "null"), j;
    char* end = nullptr;
    j.n = std::strtod(t.c_str() + i, &end);
    if (end == t.c_str() + i) fail(i, "expected a value");
    j.type = Type::number;
    i = static_cast<size_t>(end - t.c_str());
    return j;
  }
};

}  // namespace outpost::schemas
