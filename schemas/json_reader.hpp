#pragma once
// A small strict JSON reader, for what the agent's tools read back (an actor's
// status) and what tests check a tool printed: throws std::runtime_error (with
// the offset) on anything that is not JSON. Not for untrusted input of any
// size: it recurses once per nesting level.

#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace outpost::schemas {

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
          if (i + 4 >= t.size()) fail(i, "short \\u escape");
          unsigned code = std::stoul(t.substr(i + 1, 4), nullptr, 16);
          i += 4;
          if (code < 0x80) out += static_cast<char>(code);
          else out += "?";  // readers here compare ASCII
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
