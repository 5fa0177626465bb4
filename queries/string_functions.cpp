// VQL's string functions beyond the basics: substr(), regex_transform(),
// humanize(), commandline_split(), base64encode(), base64decode().

#include <re2/re2.h>

#include <cmath>
#include <cstring>
#include <ctime>

#include "queries/engine.hpp"
#include "schemas/codec.hpp"

namespace outpost::vql {

namespace {

// Byte offsets of each UTF-8 character of `s` (a stray byte is one), and the end.
std::vector<size_t> rune_starts(const std::string& s) {
  std::vector<size_t> out;
  for (size_t i = 0; i < s.size();) {
    out.push_back(i);
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    size_t k = 1;
    while (k < n && i + k < s.size() && (static_cast<unsigned char>(s[i + k]) & 0xc0) == 0x80) ++k;
    i += k;
  }
  out.push_back(s.size());
  return out;
}

Value substr(const Args& a, Env&) {
  std::string s = a.string("str").value_or("");
  int64_t start = a.integer("start").value_or(0), end = a.integer("end").value_or(0);
  auto runes = rune_starts(s);
  auto count = static_cast<int64_t>(runes.size() - 1);
  if (end == 0) end = count;  // absent (or 0): to the end
  if (start < 0 || end < start) return Value();
  start = std::min(start, count);
  end = std::min(end, count);
  return s.substr(runes[static_cast<size_t>(start)], runes[static_cast<size_t>(end)] - runes[static_cast<size_t>(start)]);
}

// Go's go-humanize: Bytes ("83 MB"), IBytes ("79 MiB"), Comma ("1,234"), Time ("3 hours ago").
std::string human_bytes(uint64_t n, double base, const char* const* units) {
  if (n < 10) return std::to_string(n) + " B";
  int e = static_cast<int>(std::floor(std::log(static_cast<double>(n)) / std::log(base)));
  e = std::min(e, 6);
  double value = std::floor(static_cast<double>(n) / std::pow(base, e) * 10 + 0.5) / 10;
  char buf[64];
  std::snprintf(buf, sizeof buf, value < 10 ? "%.1f %s" : "%.0f %s", value, units[e]);
  return buf;
}

std::string comma(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -static_cast<uint64_t>(n) : static_cast<uint64_t>(n)), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

std::string relative_time(int64_t then_ns) {
  int64_t now = schemas::now_ns() / 1'000'000'000;
  int64_t diff = now - then_ns / 1'000'000'000;
  const char* when = diff >= 0 ? "ago" : "from now";
  int64_t d = diff < 0 ? -diff : diff;
  constexpr int64_t kMinute = 60, kHour = 3600, kDay = 86400, kWeek = 7 * kDay, kMonth = 30 * kDay, kYear = 12 * kMonth;
  auto say = [&](int64_t n, const char* unit) {
    return std::to_string(n) + " " + unit + (n == 1 ? "" : "s") + " " + when;
  };
  if (d < 1) return "now";
  if (d < kMinute) return say(d, "second");
  if (d < kHour) return say(d / kMinute, "minute");
  if (d < kDay) return say(d / kHour, "hour");
  if (d < kWeek) return say(d / kDay, "day");
  if (d < kMonth) return say(d / kWeek, "week");
  if (d < kYear) return say(d / kMonth, "month");
  if (d < 18 * kMonth) return say(1, "year");
  return say(std::max<int64_t>(2, d / kYear), "year");
}

Value humanize(const Args& a, Env&) {
  static const char* const kSi[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
  static const char* const kIec[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (auto t = a.find("time"); t && t->as_timestamp() && t->as_timestamp()->ns) return relative_time(t->as_timestamp()->ns);
  if (auto t = a.find("time"); t && t->is_number() && *t->number() != 0)
    return relative_time(static_cast<int64_t>(*t->number() * 1e9));
  if (auto n = a.integer("comma"); n && *n) return comma(*n);
  if (auto n = a.integer("bytes"); n && *n) return human_bytes(static_cast<uint64_t>(std::max<int64_t>(*n, 0)), 1000, kSi);
  if (auto n = a.integer("ibytes"); n && *n) return human_bytes(static_cast<uint64_t>(std::max<int64_t>(*n, 0)), 1024, kIec);
  return "0 B";
}

// As a POSIX shell splits words: quotes, backslashes; no expansions.
List bash_split(const std::string& s) {
  List out;
  std::string word;
  bool in_word = false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == ' ' || c == '\t' || c == '\n') {
      if (in_word) out.push_back(std::exchange(word, std::string()));
      in_word = false;
      continue;
    }
    in_word = true;
    if (c == '\\' && i + 1 < s.size()) {
      word += s[++i];
    } else if (c == '\'') {
      size_t end = s.find('\'', i + 1);
      word += s.substr(i + 1, (end == std::string::npos ? s.size() : end) - i - 1);
      i = end == std::string::npos ? s.size() : end;
    } else if (c == '"') {
      for (++i; i < s.size() && s[i] != '"'; ++i) {
        if (s[i] == '\\' && i + 1 < s.size() && std::strchr("\"\\$`\n", s[i + 1])) ++i;
        word += s[i];
      }
    } else {
      word += c;
    }
  }
  if (in_word) out.push_back(word);
  return out;
}

// As Windows' CommandLineToArgvW: 2n backslashes before a quote are n and
// the quote toggles quoting; 2n+1 are n and a literal quote.
List windows_split(const std::string& s) {
  List out;
  std::string word;
  bool in_word = false, quoted = false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if ((c == ' ' || c == '\t') && !quoted) {
      if (in_word) out.push_back(std::exchange(word, std::string()));
      in_word = false;
      continue;
    }
    in_word = true;
    if (c == '\\') {
      size_t n = 0;
      while (i < s.size() && s[i] == '\\') ++n, ++i;
      if (i < s.size() && s[i] == '"') {
        word.append(n / 2, '\\');
        if (n % 2) word += '"';
        else quoted = !quoted;
      } else {
        word.append(n, '\\');
        --i;
      }
    } else if (c == '"') {
      quoted = !quoted;
    } else {
      word += c;
    }
  }
  if (in_word) out.push_back(word);
  return out;
}

constexpr char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(const std::string& in) {
  std::string out;
  for (size_t i = 0; i < in.size(); i += 3) {
    uint32_t n = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) n |= static_cast<unsigned char>(in[i + 1]) << 8;
    if (i + 2 < in.size()) n |= static_cast<unsigned char>(in[i + 2]);
    out += kBase64[(n >> 18) & 63];
    out += kBase64[(n >> 12) & 63];
    out += i + 1 < in.size() ? kBase64[(n >> 6) & 63] : '=';
    out += i + 2 < in.size() ? kBase64[n & 63] : '=';
  }
  return out;
}

// Standard or URL alphabet, padding optional, line breaks ignored (as Go's
// decoder ignores them: PEM bodies); nullopt for anything else.
std::optional<std::string> base64_decode(const std::string& text) {
  std::string in;
  in.reserve(text.size());
  for (char c : text)
    if (c != '\r' && c != '\n') in += c;
  std::string out;
  uint32_t bits = 0;
  int count = 0;
  size_t end = in.size();
  while (end > 0 && in[end - 1] == '=') --end;
  if (in.size() - end > 2) return std::nullopt;
  for (size_t i = 0; i < end; ++i) {
    char c = in[i];
    int v = c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26 : c >= '0' && c <= '9' ? c - '0' + 52
          : (c == '+' || c == '-') ? 62 : (c == '/' || c == '_') ? 63 : -1;
    if (v < 0) return std::nullopt;
    bits = (bits << 6) | static_cast<uint32_t>(v);
    if ((count += 6) >= 8) {
      count -= 8;
      out += static_cast<char>((bits >> count) & 0xff);
    }
  }
  if (count >= 6) return std::nullopt;  // one character left over
  return out;
}

}  // namespace

void add_string_functions(Registry& r) {
  r.add(FunctionSpec{"substr",
                     "The characters of `str` from `start` up to `end` (not included; 0 or absent: the end); NULL "
                     "when start is negative or end before it.",
                     {{"str", "string", true, ""}, {"start", "int", false, ""}, {"end", "int", false, ""}}, substr});
  r.add(FunctionSpec{"regex_transform",
                     "`source` with each regex of the dict `map` (in order, case ignored) replaced by its value "
                     "($1 or ${name} for a group).",
                     {{"source", "string", true, ""}, {"map", "dict", true, ""}, {"key", "string", false, "ignored"}},
                     [](const Args& a, Env&) -> Value {
                       std::string s = a.string("source").value_or("");
                       auto map = a.require("map").as_dict();
                       if (!map) a.fail("map", "expected a dict");
                       for (auto& [pattern, replacement] : map->items()) {
                         const re2::RE2* re = cached_regex(pattern, false);
                         if (!re) a.fail("map", "not a valid regex: " + pattern);
                         s = replace_all(s, *re, to_string(replacement));
                       }
                       return s;
                     }});
  r.add(FunctionSpec{"humanize",
                     "A number or time for people: the first given of `time` (\"3 hours ago\"), `comma` "
                     "(\"1,234\"), `bytes` (\"83 MB\"), `ibytes` (\"79 MiB\"); \"0 B\" with none.",
                     {{"bytes", "int", false, ""}, {"ibytes", "int", false, ""}, {"time", "timestamp", false, ""},
                      {"comma", "int", false, ""}},
                     humanize});
  r.add(FunctionSpec{"commandline_split",
                     "A command line's arguments: as a shell splits them with `bash_style`, else as Windows does.",
                     {{"command", "string", true, ""}, {"bash_style", "bool", false, ""}},
                     [](const Args& a, Env&) -> Value {
                       std::string s = a.string("command").value_or("");
                       return a.boolean("bash_style").value_or(false) ? bash_split(s) : windows_split(s);
                     }});
  r.add(FunctionSpec{"base64encode", "`string` in standard base64, padded.", {{"string", "string", true, ""}},
                     [](const Args& a, Env&) -> Value { return base64_encode(a.string("string").value_or("")); }});
  r.add(FunctionSpec{"base64decode", "The bytes `string` encodes in base64 (standard or URL alphabet); NULL when not base64.",
                     {{"string", "string", true, ""}}, [](const Args& a, Env&) -> Value {
                       auto out = base64_decode(a.string("string").value_or(""));
                       return out ? Value(std::move(*out)) : Value();
                     }});
}

}  // namespace outpost::vql
