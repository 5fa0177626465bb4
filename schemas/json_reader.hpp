#pragma once
// A small JSON reader: JsonReader, strict by default, with JsonOptions for
// the lenient text some callers read (comments, trailing commas, a first
// value with text after it), making the caller's values (the queries' VQL
// values); and Json, a tree of what it reads strictly, for what the agent's
// tools read back (an actor's status) and what tests check a tool printed.
// It recurses once per nesting level: bound it (max_depth) for untrusted text.

#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
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

// How JsonReader reads: strict JSON unless told otherwise.
struct JsonOptions {
  bool comments = false;          // '#' and "//" to the end of a line are white space
  bool trailing_commas = false;   // [1,] and {"a": 1,}
  bool first_value_only = false;  // the text after the first value is not read
  int max_depth = -1;             // how deep a value may be nested (the outermost is 0); -1: any depth
  // A control character in a string is taken as it is, and a backslash
  // before any character but JSON's escapes gives that character.
  bool lax_strings = false;
};

// What JsonReader throws: the problem, where (a byte offset into the text),
// and what() as "JSON at <offset>: <message()>".
class JsonError : public std::runtime_error {
 public:
  enum class Problem {
    end, value, key, colon, comma, word, number, control, escape, unicode, unterminated, depth, trailing
  };
  JsonError(Problem problem, size_t offset, std::string detail)
      : std::runtime_error("JSON at " + std::to_string(offset) + ": " + words(problem, detail)),
        problem(problem), offset(offset), detail(std::move(detail)) {}
  std::string message() const { return words(problem, detail); }

  Problem problem;
  size_t offset;
  std::string detail;  // comma: the closing bracket; word: the word; number: what was read

 private:
  static std::string words(Problem problem, const std::string& detail) {
    switch (problem) {
      case Problem::end: case Problem::value: return "expected a value";
      case Problem::key: return "expected a string";
      case Problem::colon: return "expected :";
      case Problem::comma: case Problem::word: return "expected " + detail;
      case Problem::number: return "bad number " + detail;
      case Problem::control: return "control character in a string";
      case Problem::escape: return "bad escape";
      case Problem::unicode: return "bad \\u escape";
      case Problem::unterminated: return "unterminated string";
      case Problem::depth: return "nested too deep";
      case Problem::trailing: return "trailing text";
    }
    return "?";
  }
};

// JSON text as the values of `Build`, which gives their types (Value,
// Array, Object), makes them (Build::make of nullptr, a bool, a
// std::string, an Array or an Object), adds an object's member
// (Build::set: a repeated key's last value wins) and reads numbers, as
// each caller types them: Build::number(text, i), the number at text[i],
// i moved past what it read; nullopt when what it read (perhaps nothing)
// is not one. Throws JsonError.
template <class Build>
class JsonReader {
 public:
  using Value = typename Build::Value;
  explicit JsonReader(std::string_view text, JsonOptions options = {}) : t_(text), o_(options) {}

  Value read() {
    Value v = value(0);
    if (o_.first_value_only) return v;
    skip();
    if (i_ != t_.size()) fail(Problem::trailing);
    return v;
  }

 private:
  using Problem = JsonError::Problem;
  static constexpr std::string_view kWords[] = {"true", "false", "null"};

  [[noreturn]] void fail(Problem problem, std::string detail = "") const {
    throw JsonError(problem, i_, std::move(detail));
  }
  bool at(char c) const { return i_ < t_.size() && t_[i_] == c; }
  void skip() {
    while (i_ < t_.size()) {
      char c = t_[i_];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        ++i_;
      } else if (o_.comments && (c == '#' || t_.substr(i_, 2) == "//")) {
        while (i_ < t_.size() && t_[i_] != '\n') ++i_;
      } else {
        break;
      }
    }
  }

  // An array's or object's items up to `close`, from just after its opening
  // bracket; `item` reads one.
  template <class Item>
  void items(char close, Item item) {
    for (bool first = true;; first = false) {
      skip();
      if (at(close) && (first || o_.trailing_commas)) return void(++i_);
      item();
      skip();
      if (at(',')) {
        ++i_;
        continue;
      }
      if (!at(close)) fail(Problem::comma, std::string(1, close));
      return void(++i_);
    }
  }

  Value value(int depth) {
    if (o_.max_depth >= 0 && depth > o_.max_depth) fail(Problem::depth);
    skip();
    if (i_ >= t_.size()) fail(Problem::end);
    char c = t_[i_];
    if (c == '[') {
      ++i_;
      typename Build::Array a;
      items(']', [&] { a.push_back(value(depth + 1)); });
      return Build::make(std::move(a));
    }
    if (c == '{') {
      ++i_;
      typename Build::Object o;
      items('}', [&] {
        if (!at('"')) fail(Problem::key);
        std::string key = string();
        skip();
        if (!at(':')) fail(Problem::colon);
        ++i_;
        Build::set(o, std::move(key), value(depth + 1));
      });
      return Build::make(std::move(o));
    }
    if (c == '"') return Build::make(string());
    for (std::string_view word : kWords) {
      if (t_.substr(i_, word.size()) == word) {
        i_ += word.size();
        return word == "null" ? Build::make(nullptr) : Build::make(word == "true");
      }
      if (c == word[0]) {  // where it stops being the word
        for (size_t k = 0; k < word.size() && at(word[k]); ++k) ++i_;
        fail(Problem::word, std::string(word));
      }
    }
    size_t start = i_;
    if (auto n = Build::number(t_, i_)) return std::move(*n);
    if (i_ == start) fail(Problem::value);
    fail(Problem::number, std::string(t_.substr(start, i_ - start)));
  }

  // The string at the opening quote.
  std::string string() {
    std::string out;
    for (++i_; i_ < t_.size() && t_[i_] != '"'; ++i_) {
      char c = t_[i_];
      if (c != '\\') {
        if (static_cast<unsigned char>(c) < 0x20 && !o_.lax_strings) fail(Problem::control);
        out += c;
        continue;
      }
      if (++i_ >= t_.size()) break;
      switch (char e = t_[i_]) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': {
          const char* p = t_.data() + i_ + 1;
          auto cp = unicode_escape(p, t_.data() + t_.size());
          if (!cp) fail(Problem::unicode);
          append_utf8(out, *cp);
          i_ = static_cast<size_t>(p - t_.data()) - 1;
          break;
        }
        case '"': case '\\': case '/': out += e; break;
        default:
          if (!o_.lax_strings) fail(Problem::escape);
          out += e;
      }
    }
    if (i_ >= t_.size()) fail(Problem::unterminated);
    ++i_;
    return out;
  }

  std::string_view t_;
  JsonOptions o_;
  size_t i_ = 0;
};

// What a JsonReader's Build takes from a value type V made from what it
// holds (V(nullptr), V(bool), V(std::string), V(A), V(O)), with Array A a
// vector and Object O's set(key, value): the Build adds number().
template <class V, class A, class O>
struct JsonValues {
  using Value = V;
  using Array = A;
  using Object = O;
  template <class T>
  static V make(T&& x) { return V(std::forward<T>(x)); }
  static void set(O& o, std::string key, V v) { o.set(std::move(key), std::move(v)); }
};

// A JSON value read strictly (a number always a double, an object's keys
// sorted), by Json::parse: throws a JsonError, a std::runtime_error naming
// the offset, on anything that is not JSON. Nesting is not bounded.
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

  static Json parse(const std::string& text) { return JsonReader<Build>(text).read(); }

 private:
  struct Build {
    using Value = Json;
    using Array = std::vector<Json>;
    using Object = std::map<std::string, Json>;
    static Json make(std::nullptr_t) { return Json(); }
    static Json make(bool b) { return of(Type::boolean, &Json::b, b); }
    static Json make(std::string s) { return of(Type::string, &Json::s, std::move(s)); }
    static Json make(Array a) { return of(Type::array, &Json::a, std::move(a)); }
    static Json make(Object o) { return of(Type::object, &Json::o, std::move(o)); }
    static void set(Object& o, std::string key, Json v) { o.insert_or_assign(std::move(key), std::move(v)); }
    // What strtod reads: `t` is parse()'s std::string, so ends at a NUL.
    static std::optional<Json> number(std::string_view t, size_t& i) {
      char* end = nullptr;
      double n = std::strtod(t.data() + i, &end);
      if (end == t.data() + i) return std::nullopt;
      i = static_cast<size_t>(end - t.data());
      return of(Type::number, &Json::n, n);
    }
    template <class T>
    static Json of(Type type, T Json::*member, T v) {
      Json j;
      j.type = type;
      j.*member = std::move(v);
      return j;
    }
  };
};

}  // namespace outpost::schemas
