// VQL's built-in functions that need no system access.

#include <re2/re2.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstring>
#include <ctime>
#include <map>

#include "queries/engine.hpp"
#include "schemas/codec.hpp"
#include "queries/linux_util.hpp"

namespace outpost::vql {
namespace {

// What Velociraptor's str() gives (Go's %v): a list as [a b], its strings
// bare; anything else as to_string gives it.
std::string go_string(const Value& v) {
  auto l = v.as_list();
  if (!l) return to_string(v);
  std::string out = "[";
  for (size_t i = 0; i < l->size(); ++i) {
    if (i) out += ' ';
    out += go_string((*l)[i]);
  }
  return out + "]";
}


// Seconds, or milli/micro/nanoseconds told apart by size, as Velociraptor does.
// A time written as text, in UTC unless it says otherwise: RFC 3339
// (2023-11-14T22:13:20[.fraction][Z|±hh:mm|±hhmm], or a space for the T),
// a date, syslog's "Nov 14 22:13:20" (this year), ctime's "Tue Nov 14
// 22:13:20 2023", or epoch seconds.
std::optional<int64_t> parse_time(const std::string& text) {
  std::string s = text;
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  if (!s.empty() && s.find_first_not_of("0123456789") == std::string::npos && s.size() <= 12)
    return std::stoll(s) * 1'000'000'000;
  struct tm tm = {};
  const char* rest = nullptr;
  for (const char* f : {"%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%a %b %d %H:%M:%S %Y"})
    if (!rest) {
      tm = {};
      rest = strptime(s.c_str(), f, &tm);
    }
  if (!rest) {  // syslog's: no year, this one
    tm = {};
    rest = strptime(s.c_str(), "%b %d %H:%M:%S", &tm);
    time_t now = static_cast<time_t>(schemas::now_ns() / 1'000'000'000);
    struct tm today = {};
    gmtime_r(&now, &today);
    tm.tm_year = today.tm_year;
  }
  if (!rest) {
    tm = {};
    rest = strptime(s.c_str(), "%Y-%m-%d", &tm);
    if (rest && *rest) return std::nullopt;
  }
  if (!rest) return std::nullopt;
  int64_t ns = static_cast<int64_t>(timegm(&tm)) * 1'000'000'000;
  if (*rest == '.' || *rest == ',') {
    int64_t scale = 100'000'000;
    for (++rest; std::isdigit(static_cast<unsigned char>(*rest)); ++rest, scale /= 10) ns += (*rest - '0') * scale;
  }
  while (*rest == ' ') ++rest;
  if (*rest == 'Z' || std::strcmp(rest, "UTC") == 0) return ns;
  if (*rest == '+' || *rest == '-') {
    int hh = 0, mm = 0;
    if (std::sscanf(rest + 1, "%2d:%2d", &hh, &mm) != 2 && std::sscanf(rest + 1, "%2d%2d", &hh, &mm) != 2)
      return std::nullopt;
    ns -= (*rest == '+' ? 1 : -1) * (hh * 3600 + mm * 60) * 1'000'000'000LL;
    return ns;
  }
  return *rest ? std::nullopt : std::optional<int64_t>(ns);
}

Value timestamp_of(const Value& v, const Args& args) {
  if (auto t = v.as_timestamp()) return *t;
  if (auto i = v.as_int()) {  // exact: a double loses nanoseconds
    int64_t x = *i, a = x < 0 ? -x : x, scale = a > 100'000'000'000'000'000 ? 1
                                                : a > 100'000'000'000'000 ? 1000
                                                : a > 100'000'000'000     ? 1'000'000
                                                                          : 1'000'000'000;
    int64_t ns;
    if (__builtin_mul_overflow(x, scale, &ns)) args.fail("epoch", "out of range");
    return Timestamp{ns};
  }
  if (auto n = v.number()) {
    double x = *n, a = std::fabs(x);
    double ns = a > 1e17 ? x : a > 1e14 ? x * 1e3 : a > 1e11 ? x * 1e6 : x * 1e9;
    if (!std::isfinite(ns) || std::fabs(ns) > 9.2e18) args.fail("epoch", "out of range");
    return Timestamp{static_cast<int64_t>(ns)};
  }
  if (auto s = v.as_string()) {
    if (auto ns = parse_time(*s)) return Timestamp{*ns};
    args.fail("epoch", "'" + *s + "' is not a time (expected RFC 3339)");
  }
  return Value();
}

// Go-style verbs: %v %s %d %x %X %f %e %g %q %%, with flags - 0, width and precision.
std::string format(const std::string& fmt, const List& values, const Args& args) {
  std::string out;
  size_t next = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out += fmt[i];
      continue;
    }
    size_t start = i++;
    while (i < fmt.size() && (fmt[i] == '-' || fmt[i] == '0' || fmt[i] == '+' || fmt[i] == ' ')) ++i;
    while (i < fmt.size() && (std::isdigit(static_cast<unsigned char>(fmt[i])) || fmt[i] == '.')) ++i;
    if (i >= fmt.size()) args.fail("format", "ends inside a verb");
    char verb = fmt[i];
    if (verb == '%') {
      out += '%';
      continue;
    }
    std::string spec = fmt.substr(start, i - start);
    if (spec.size() > 12) args.fail("format", "verb " + fmt.substr(start, i - start + 1) + " is too long");
    if (next >= values.size()) {
      out += "%!" + std::string(1, verb) + "(MISSING)";
      continue;
    }
    const Value& v = values[next++];
    char buffer[512];
    switch (verb) {
      case 'd':
        if (auto n = v.number()) {
          std::snprintf(buffer, sizeof buffer, (spec + PRId64).c_str(), static_cast<int64_t>(*n));
          out += buffer;
        } else {
          out += to_string(v);
        }
        break;
      case 'x':
      case 'X':
        if (auto n = v.as_int()) {
          std::snprintf(buffer, sizeof buffer, (spec + (verb == 'x' ? PRIx64 : PRIX64)).c_str(), static_cast<uint64_t>(*n));
          out += buffer;
        } else {
          static const char* const kDigits[] = {"0123456789abcdef", "0123456789ABCDEF"};
          for (unsigned char c : to_string(v)) {
            out += kDigits[verb == 'X'][c >> 4];
            out += kDigits[verb == 'X'][c & 15];
          }
        }
        break;
      case 'f':
      case 'e':
      case 'g':
        if (auto n = v.number()) {
          std::snprintf(buffer, sizeof buffer, (spec + verb).c_str(), *n);
          out += buffer;
        } else {
          out += to_string(v);
        }
        break;
      case 'q': append_json(out, Value(to_string(v))); break;
      case 's':
      case 'v': {
        std::string text = to_string(v);
        std::snprintf(buffer, sizeof buffer, (spec + "s").c_str(), "");
        size_t width = std::strlen(buffer);  // the padding a width asks for
        if (text.size() >= width) {
          out += text;
        } else if (spec.find('-') != std::string::npos) {
          out += text + std::string(width - text.size(), ' ');
        } else {
          out += std::string(width - text.size(), ' ') + text;
        }
        break;
      }
      default: out += "%!" + std::string(1, verb) + "(" + to_string(v) + ")";
    }
  }
  return out;
}

const re2::RE2& separator(const std::string& pattern, const Args& args) {
  if (auto re = cached_regex(pattern, true)) return *re;
  args.fail("sep", "regex '" + pattern + "': " + re2::RE2(pattern, RE2::Quiet).error());
}

List split(const std::string& s, const re2::RE2& sep) {
  List out;
  re2::StringPiece input(s), match;
  size_t begin = 0;
  while (begin <= s.size()) {
    if (!sep.Match(input, begin, s.size(), RE2::UNANCHORED, &match, 1) || match.empty()) break;
    size_t at = static_cast<size_t>(match.data() - s.data());
    out.push_back(s.substr(begin, at - begin));
    begin = at + match.size();
  }
  out.push_back(s.substr(std::min(begin, s.size())));
  return out;
}

std::string basename(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  auto slash = p.rfind('/');
  return slash == std::string::npos || p.size() == 1 ? p : p.substr(slash + 1);
}

std::string dirname(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  auto slash = p.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : p.substr(0, slash);
}

std::optional<int64_t> parse_integer(std::string_view s) {
  bool negative = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  int base = 10;
  bool prefixed = false;
  if (s.size() > 1 && s[0] == '0') {
    char p = static_cast<char>(std::tolower(static_cast<unsigned char>(s[1])));
    base = p == 'x' ? 16 : p == 'b' ? 2 : 8;
    prefixed = true;
    s.remove_prefix(p == 'x' || p == 'b' || p == 'o' ? 2 : 1);
  }
  if (s.empty()) return std::nullopt;
  uint64_t n = 0;
  bool digit_before = prefixed;  // '_' only between digits, or after a base prefix
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '_') {
      if (!digit_before || i + 1 == s.size() || s[i + 1] == '_') return std::nullopt;
      continue;
    }
    int d = std::isdigit(static_cast<unsigned char>(c)) ? c - '0'
            : std::isxdigit(static_cast<unsigned char>(c)) ? std::tolower(static_cast<unsigned char>(c)) - 'a' + 10
                                                            : 99;
    if (d >= base || __builtin_mul_overflow(n, static_cast<uint64_t>(base), &n) ||
        __builtin_add_overflow(n, static_cast<uint64_t>(d), &n))
      return std::nullopt;
    digit_before = true;
  }
  if (n > (negative ? uint64_t{1} << 63 : uint64_t{INT64_MAX})) return std::nullopt;
  return negative ? static_cast<int64_t>(0 - n) : static_cast<int64_t>(n);
}

Value integer(const Value& v) {
  if (auto i = v.as_int()) return *i;
  if (auto d = v.as_double()) return std::isfinite(*d) && std::fabs(*d) < 9.2e18 ? Value(static_cast<int64_t>(*d)) : Value();
  if (auto b = v.as_bool()) return int64_t{*b};
  if (auto t = v.as_timestamp()) return t->ns / 1'000'000'000;
  if (auto s = v.as_string()) return parse_integer(*s).value_or(0);
  return int64_t{0};
}

// One step into a dict, an object or a list (by index, or a numeric string).
Value step(const Value& v, const Value& key) {
  auto data = materialize(v);
  if (auto name = key.as_string()) {
    if (auto d = data.as_dict()) {
      auto found = d->find(*name);
      return found ? *found : Value();
    }
    if (auto o = data.as_object()) return o->member(*name).value_or(Value());
    if (!data.as_list() || name->empty() || !std::all_of(name->begin(), name->end(), ::isdigit)) return Value();
    return step(data, Value(int64_t{std::stoll(name->substr(0, 18))}));
  }
  if (auto i = key.as_int()) {
    auto l = data.as_list();
    if (!l || *i < 0 || *i >= static_cast<int64_t>(l->size())) return Value();
    return (*l)[static_cast<size_t>(*i)];
  }
  return Value();
}

// `field` one key (dotted names walk nested dicts, as before members came);
// `member` a dotted path of keys and indexes.
Value get(const Value& item, const Value& key, bool member) {
  auto path = key.as_string();
  if (!path || (!member && path->find('.') == std::string::npos)) return step(item, key);
  Value v = item;
  for (size_t begin = 0;;) {
    size_t dot = path->find('.', begin);
    v = step(v, Value(path->substr(begin, dot == std::string::npos ? std::string::npos : dot - begin)));
    if (v.is_null() || dot == std::string::npos) return v;
    begin = dot + 1;
  }
}

}  // namespace

void add_builtin_functions(Registry& r) {
  auto fn = [&r](std::string name, std::string description, std::vector<ArgSpec> args,
                 std::function<Value(const Args&, Env&)> call) {
    r.add(FunctionSpec{std::move(name), std::move(description), std::move(args), std::move(call)});
  };
  fn("now", "Seconds since the epoch (nanoseconds with ns=TRUE).", {{"ns", "bool", false, ""}},
     [](const Args& a, Env&) {
       int64_t ns = schemas::now_ns();
       return Value(a.boolean("ns").value_or(false) ? ns : ns / 1'000'000'000);
     });
  // Aggregates: the engine keeps their state per SELECT or GROUP BY group
  // and evaluates them itself; these specs name their arguments.
  fn("count", "The rows so far (of the group, with GROUP BY).", {{"items", "any", false, ""}},
     [](const Args&, Env&) { return Value(int64_t{1}); });
  fn("sum", "The sum of `item` over the rows so far (of the group).", {{"item", "number", true, ""}},
     [](const Args& a, Env&) { return a.require("item"); });
  fn("min", "The least `item` of the rows so far (of the group).", {{"item", "any", true, ""}},
     [](const Args& a, Env&) { return a.require("item"); });
  fn("max", "The greatest `item` of the rows so far (of the group).", {{"item", "any", true, ""}},
     [](const Args& a, Env&) { return a.require("item"); });
  fn("enumerate", "Every `items` of the rows so far (of the group), as a list (at most 10,000).",
     {{"items", "any", true, ""}}, [](const Args& a, Env&) { return Value(List{a.require("items")}); });
  fn("timestamp",
     "A timestamp from epoch seconds (or ms, us, ns by size) or an RFC 3339 string; or from `string`, "
     "a time as text (RFC 3339, a date, syslog's or ctime's form, epoch seconds), NULL when it is none.",
     {{"epoch", "int, float, string or timestamp", false, ""}, {"string", "string", false, ""}},
     [](const Args& a, Env&) {
       if (auto text = a.string("string")) {
         auto ns = parse_time(*text);
         return ns ? Value(Timestamp{*ns}) : Value();
       }
       auto epoch = a.find("epoch");
       return epoch ? timestamp_of(*epoch, a) : Value();
     });
  fn("format", "Formats `args` with Go-style verbs (%v %s %d %x %f %q).",
     {{"format", "string", true, ""}, {"args", "list or value", false, ""}}, [](const Args& a, Env&) {
       auto v = a.find("args");
       List values;
       if (v) {
         Value data = materialize(*v);
         values = data.as_list() ? *data.as_list() : List{data};
       }
       return Value(format(required_string(a, "format"), values, a));
     });
  fn("lowcase", "Lower case (ASCII).", {{"string", "string", true, ""}}, [](const Args& a, Env&) {
    std::string s = required_string(a, "string");
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return Value(std::move(s));
  });
  fn("upcase", "Upper case (ASCII).", {{"string", "string", true, ""}}, [](const Args& a, Env&) {
    std::string s = required_string(a, "string");
    for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return Value(std::move(s));
  });
  fn("split", "Splits `string` at each match of the regex `sep`, or at each `sep_string`; NULL with neither.",
     {{"string", "string", true, ""}, {"sep", "regex", false, ""}, {"sep_string", "string", false, ""}},
     [](const Args& a, Env&) {
       if (auto literal = a.string("sep_string"))
         return Value(split(required_string(a, "string"), separator(RE2::QuoteMeta(*literal), a)));
       if (!a.find("sep")) return Value();
       return Value(split(required_string(a, "string"), separator(required_string(a, "sep"), a)));
     });
  fn("join", "Joins the items of `array` with `sep`.", {{"array", "list", true, ""}, {"sep", "string", false, ""}},
     [](const Args& a, Env&) {
       Value data = materialize(a.require("array"));
       auto l = data.as_list();
       if (!l) a.fail("array", std::string("expected list, got ") + type_name(data));
       std::string sep = a.string("sep").value_or(""), out;
       for (size_t i = 0; i < l->size(); ++i) out += (i ? sep : "") + to_string((*l)[i]);
       return Value(std::move(out));
     });
  fn("len", "Items in a list or dict, bytes in a string, rows of a query.", {{"list", "any", true, ""}},
     [](const Args& a, Env&) {
       Value data = materialize(a.require("list"));
       if (auto l = data.as_list()) return Value(static_cast<int64_t>(l->size()));
       if (auto d = data.as_dict()) return Value(static_cast<int64_t>(d->size()));
       if (auto s = data.as_string()) return Value(static_cast<int64_t>(s->size()));
       return Value(int64_t{0});
     });
  fn("int", "An integer: strings parsed (base prefixes as atoi()), floats truncated, timestamps as epoch seconds.",
     {{"int", "any", false, ""}}, [](const Args& a, Env&) {
       auto v = a.find("int");
       return v ? integer(*v) : Value(int64_t{0});
     });
  fn("atoi", "An integer from `string` as int() reads it (Go's base prefixes 0x, 0o, 0b, 0; '_' between digits); 0 when it is none.",
     {{"string", "any", false, ""}}, [](const Args& a, Env&) {
       auto v = a.find("string");
       return v ? integer(*v) : Value(int64_t{0});
     });
  fn("str", "A string: a list as Go prints it ([a b]), a dict as JSON, a time in RFC 3339.",
     {{"str", "any", false, ""}}, [](const Args& a, Env&) {
       auto v = a.find("str");
       return Value(v ? go_string(materialize(*v)) : std::string());
     });
  fn("basename", "The last element of a path.", {{"path", "string", true, ""}},
     [](const Args& a, Env&) { return Value(basename(required_string(a, "path"))); });
  fn("dirname", "A path without its last element.", {{"path", "string", true, ""}},
     [](const Args& a, Env&) { return Value(dirname(required_string(a, "path"))); });
  fn("parse_string_with_regex",
     "The groups of every match of every regex (case ignored) in `string`, as one dict: named groups by name "
     "(\"\" when they never match), others as g1, g2, ...; a later match overwrites an earlier one.",
     {{"string", "string", true, ""}, {"regex", "regex or list of regexes", true, ""}}, [](const Args& a, Env&) {
       std::string text = required_string(a, "string");
       Dict out;
       for (auto& pattern : a.strings("regex")) {
         const RE2* re = cached_regex(pattern, false);
         if (!re) a.fail("regex", "'" + pattern + "': not a valid regex");
         std::map<int, std::string> names;
         for (auto& [name, index] : re->NamedCapturingGroups()) {
           names[index] = name;
           if (!out.find(name)) out.set(name, "");
         }
         std::vector<re2::StringPiece> groups(static_cast<size_t>(re->NumberOfCapturingGroups()) + 1);
         for (size_t at = 0; at <= text.size();) {
           if (!re->Match(text, at, text.size(), RE2::UNANCHORED, groups.data(), static_cast<int>(groups.size())))
             break;
           for (size_t g = 1; g < groups.size(); ++g) {
             if (!groups[g].data()) continue;  // did not take part
             auto it = names.find(static_cast<int>(g));
             out.set(it != names.end() ? it->second : "g" + std::to_string(g), std::string(groups[g]));
           }
           size_t end = static_cast<size_t>(groups[0].data() - text.data()) + groups[0].size();
           at = end > at ? end : at + 1;
         }
       }
       return Value(std::move(out));
     });
  fn("upload", "Sends a file to the collector: in 1 MiB chunks on the uploads lane, after this row, with "
               "its SHA-256 at the end. Returns {Path, Size} (or {Path, Error}) at once. accessor='process': "
               "file='/PID' sends the process's readable memory, its ranges one after another, and returns "
               "where each is: Ranges [{Address, Size, Offset}]. accessor='data' (or 'scope': `file` names a "
               "variable): `file` is the content itself.",
     {{"file", "string", true, ""}, {"accessor", "string", false, "file (default), auto, process, data or scope"},
      {"name", "string", false, "the name to store it under (default: file)"}},
     [](const Args& a, Env& env) {
       const std::string& path = required_string(a, "file");
       auto accessor = accessor_of(a, {Accessor::process, Accessor::data});
       std::string name = a.string("name").value_or(accessor == Accessor::data ? "data" : path);
       Dict out;
       out.set("Path", name);
       if (env.upload_requests.size() >= 1000) a.fail("file", "more than 1000 uploads waiting in this query");
       if (accessor == Accessor::data) {  // the content: sent from a file of the query's own
         env.upload_requests.push_back({name, temp_file_with(env, {path}, "", "upload()"), {}});
         out.set("Size", static_cast<int64_t>(path.size()));
         return Value(std::move(out));
       }
       if (accessor == Accessor::process) {
         auto pid = process_of(path);
         if (!pid) a.fail("file", "\"" + path + "\" is not a process: \"/PID\"");
         auto ranges = readable_ranges(*env.paths, *pid);
         if (!ranges) {
           out.set("Error", "cannot read the memory map of process " + std::to_string(*pid));
           return Value(std::move(out));
         }
         List index;
         uint64_t size = 0;
         for (auto& r : *ranges) {
           Dict d;
           d.set("Address", Value(r.start));
           d.set("Size", Value(r.length));
           d.set("Offset", Value(size));
           index.push_back(Value(std::move(d)));
           size += r.length;
         }
         env.upload_requests.push_back({name, (env.paths->proc / std::to_string(*pid) / "mem").string(), *ranges});
         out.set("Size", Value(size));
         out.set("Ranges", Value(std::move(index)));
         return Value(std::move(out));
       }
       struct stat st;
       if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || ::access(path.c_str(), R_OK) != 0) {
         out.set("Error", ::access(path.c_str(), F_OK) != 0 ? "no such file" : "not a readable regular file");
         return Value(std::move(out));
       }
       env.upload_requests.push_back({name, path, {}});
       out.set("Size", static_cast<int64_t>(st.st_size));
       return Value(std::move(out));
     });
  fn("get",
     "A field of `item` (a dict's key, a list's index; without item, a variable of the query) or a dotted "
     "`member` path in it (\"a.b.0\"), else `default`.",
     {{"item", "any", false, "default: the query's variables"},
      {"field", "string or int", false, ""},
      {"member", "string", false, ""},
      {"default", "any", false, ""}},
     [](const Args& a, Env&) {
       if (!a.find("field") && !a.find("member")) a.fail("field", "a field or a member is needed");
       const Value* item = a.find("item");
       Value v = item ? *item : Value();
       if (auto field = a.find("field")) v = get(v, *field, false);
       if (auto member = a.string("member")) v = get(v, *member, true);
       auto fallback = a.find("default");
       return v.is_null() && fallback ? *fallback : v;
     });
}

}  // namespace outpost::vql
