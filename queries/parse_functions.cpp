// Parsers of text the host gives: parse_json(), parse_json_array(),
// split_records(), and read_file() as a function.

#include <re2/re2.h>

#include <cstring>

#include "queries/engine.hpp"
#include "queries/linux_util.hpp"
#include "schemas/json_reader.hpp"

namespace outpost::vql {
namespace {

// JSON into VQL values: objects keep their key order, and a number (digits,
// '.', e, E, + and - after an optional '-') that is an integer fitting int64
// stays one; other numbers are doubles.
struct VqlJson : schemas::JsonValues<Value, List, Dict> {
  static std::optional<Value> number(std::string_view t, size_t& i) {
    size_t start = i;
    bool integral = true;
    if (i < t.size() && t[i] == '-') ++i;
    while (i < t.size() && (std::isdigit(static_cast<unsigned char>(t[i])) || std::strchr(".eE+-", t[i]))) {
      if (!std::isdigit(static_cast<unsigned char>(t[i]))) integral = false;
      ++i;
    }
    std::string text(t.substr(start, i - start));
    if (text.empty() || text == "-") return std::nullopt;
    char* end = nullptr;
    errno = 0;
    if (integral) {
      long long n = std::strtoll(text.c_str(), &end, 10);
      if (!*end && errno == 0) return Value(int64_t{n});
    }
    double d = std::strtod(text.c_str(), &end);
    if (*end) return std::nullopt;
    return Value(d);
  }
};

// The value, or nullopt when the text is not exactly one JSON value. Strings
// are read laxly, and nesting is bounded (the text may come from anywhere).
std::optional<Value> json_value(std::string_view text) {
  schemas::JsonOptions options;
  options.lax_strings = true;
  options.max_depth = 100;
  try {
    return schemas::JsonReader<VqlJson>(text, options).read();
  } catch (const schemas::JsonError&) {
    return std::nullopt;
  }
}

std::string trimmed(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

}  // namespace

Value parse_json_text(std::string_view text) {
  auto v = json_value(text);
  return v ? *v : Value();
}

namespace {

// parse_json_array's value: an empty text is [], what is not an array NULL.
Value json_array(const Args& args) {
  std::string text = trimmed(args.string("data").value_or(""));
  if (text.empty()) return List{};
  auto v = json_value(text);
  return v && v->as_list() ? *v : Value();
}

// split_records: headers made names (what is not a letter, digit or _
// becomes _; a repeated name gets a number).
std::vector<std::string> header_names(const std::vector<std::string>& fields) {
  std::vector<std::string> names;
  for (auto f : fields) {
    for (auto& c : f)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') c = '_';
    std::string name = f;
    for (int n = 1; std::find(names.begin(), names.end(), name) != names.end(); ++n) name = f + std::to_string(n);
    names.push_back(name);
  }
  return names;
}

// Go's regexp.Split(s, n): the pieces between matches; n > 0 caps them (the
// last keeps the rest).
std::vector<std::string> split_fields(std::string_view s, const RE2& re, int64_t n) {
  std::vector<std::string> out;
  size_t at = 0, search = 0;
  re2::StringPiece m;
  while ((n <= 0 || static_cast<int64_t>(out.size()) + 1 < n) && search <= s.size() &&
         re.Match(s, search, s.size(), RE2::UNANCHORED, &m, 1)) {
    size_t begin = static_cast<size_t>(m.data() - s.data()), end = begin + m.size();
    if (m.empty() && begin == 0) {  // an empty match at the start splits nothing
      search = 1;
      continue;
    }
    out.emplace_back(s.substr(at, begin - at));
    at = end;
    search = m.empty() ? end + 1 : end;
  }
  out.emplace_back(s.substr(std::min(at, s.size())));
  return out;
}

struct SplitOptions {
  std::shared_ptr<const RE2> fields;
  std::vector<std::string> columns;
  bool headers = false;
  int64_t count = 0;
};

// One record's row; the first record may name the columns instead.
class RecordSplitter {
 public:
  explicit RecordSplitter(SplitOptions o) : o_(std::move(o)) {}
  std::optional<Row> operator()(std::string_view record) {
    if (!record.empty() && record.back() == '\r') record.remove_suffix(1);
    auto fields = split_fields(record, *o_.fields, o_.count);
    if (o_.columns.empty() && o_.headers) {
      o_.columns = header_names(fields);
      return std::nullopt;
    }
    if (o_.columns.empty())
      for (size_t i = 0; i < fields.size(); ++i) o_.columns.push_back("Column" + std::to_string(i));
    Row row;
    for (size_t i = 0; i < o_.columns.size(); ++i)
      row.set(o_.columns[i], i < fields.size() ? Value(std::move(fields[i])) : Value());
    return row;
  }

 private:
  SplitOptions o_;
};

std::unique_ptr<RowStream> make_split_records(const Args& args, Env& env) {
  SplitOptions o;
  auto regex = args.string("regex").value_or("\\s+");
  o.fields = std::make_shared<const RE2>(regex, RE2::Quiet);
  if (!o.fields->ok()) args.fail("regex", o.fields->error());
  o.columns = args.strings("columns");
  o.headers = args.boolean("first_row_is_headers").value_or(false);
  o.count = args.integer("count").value_or(0);
  auto records = args.string("record_regex").value_or("\n");
  bool data = accessor_of(args, {Accessor::data}) == Accessor::data;
  bool lines = records == "\n" || records == "\r?\n";
  std::vector<std::unique_ptr<RowStream>> streams;
  for (auto& name : args.strings("filenames")) {
    std::optional<std::string> text;
    if (data) {
      text = name;  // the argument is the text
    } else if (!lines) {  // other records than lines: the whole file (up to 64 MiB) at once
      text = read_whole_file(name, size_t{64} << 20);
      if (!text) {
        log_row_error(env, "split_records(): filenames: cannot open " + name + ": " + errno_message(errno));
        continue;
      }
    }
    if (text) {
      RE2 split(records, RE2::Quiet);
      if (!split.ok()) args.fail("record_regex", split.error());
      auto pieces = split_fields(*text, split, 0);
      if (!pieces.empty() && pieces.back().empty()) pieces.pop_back();  // after the last separator: no record
      RecordSplitter splitter(o);
      std::vector<Row> rows;
      for (auto& record : pieces)
        if (auto row = splitter(record)) rows.push_back(std::move(*row));
      streams.push_back(rows_stream(std::move(rows)));
    } else {
      streams.push_back(logged_line_rows("split_records(): filenames", name, RecordSplitter(o)));
    }
  }
  return chain_streams(std::move(streams));
}

}  // namespace

void add_parse_functions(Registry& r) {
  r.add(FunctionSpec{"parse_json",
                     "A JSON object as a dict (keys in order, whole numbers as ints); NULL when `data` is not one.",
                     {{"data", "string", true, ""}}, [](const Args& args, Env&) {
                       std::string text = trimmed(args.string("data").value_or(""));
                       if (text.empty() || text[0] != '{') return Value();
                       auto v = json_value(text);
                       return v ? *v : Value();
                     }});
  r.add(FunctionSpec{"parse_json_array", "A JSON array as a list ([] for empty text); NULL when `data` is not one.",
                     {{"data", "string", true, ""}}, [](const Args& args, Env&) { return json_array(args); }});
  r.add(PluginSpec{"parse_json_array", "A row per element of a JSON array (a value that is not an object as _value).",
                   {{"data", "string", true, ""}}, false, [](const Args& args, Env&) -> std::unique_ptr<RowStream> {
                     Value v = json_array(args);
                     std::vector<Row> rows;
                     for (auto& item : v.as_list() ? *v.as_list() : List{}) {
                       if (auto d = item.as_dict()) {
                         rows.push_back(*d);
                       } else {
                         Row row;
                         row.set("_value", item);
                         rows.push_back(std::move(row));
                       }
                     }
                     return rows_stream(std::move(rows));
                   }});
  r.add(PluginSpec{"split_records",
                   "Records (lines) split into fields by a regex: Column0, Column1, ... (the first record's "
                   "count), or `columns`, or the first record's fields as names; values are strings.",
                   {{"filenames", "string or list of strings", true, "the files (with accessor='data': the text)"},
                    {"accessor", "string", false, "file (default) or data"},
                    {"regex", "string", false, "between fields (default \\s+)"},
                    {"columns", "list of strings", false, "the names of the fields"},
                    {"first_row_is_headers", "bool", false, ""},
                    {"count", "int", false, "fields at most, the last keeping the rest"},
                    {"record_regex", "string", false, "between records (default \\n)"}},
                   false, make_split_records});
  r.add(FunctionSpec{"read_file",
                     "Up to `length` bytes (default 4 MiB, at most 64 MiB) of a file from `offset`, as a string; "
                     "\"\" when it cannot be read. accessor='data': the filename is the data; accessor='process': "
                     "filename '/PID' is that process's memory, offset an address in it.",
                     {{"filename", "string", true, ""},
                      {"accessor", "string", false, "file (default), auto, data or process"},
                      {"length", "int", false, ""},
                      {"offset", "int", false, ""}},
                     [](const Args& args, Env& env) {
                       std::string name = args.string("filename").value_or("");
                       int64_t length = args.integer("length").value_or(4 << 20);
                       int64_t offset = args.integer("offset").value_or(0);
                       if (length < 0 || length > (int64_t{64} << 20)) args.fail("length", "expected 0 to 64 MiB");
                       if (offset < 0) args.fail("offset", "expected >= 0");
                       auto accessor = accessor_of(args, {Accessor::data, Accessor::process});
                       if (accessor == Accessor::data)
                         return Value(name.substr(std::min(name.size(), static_cast<size_t>(offset)),
                                                  static_cast<size_t>(length)));
                       if (accessor == Accessor::process) {  // "/PID": offset is an address in it
                         auto pid = process_of(name);
                         if (!pid) args.fail("filename", "\"" + name + "\" is not a process: \"/PID\"");
                         name = (env.paths->proc / std::to_string(*pid) / "mem").string();
                       }
                       kj::AutoCloseFd fd = open_read(name);
                       if (fd == nullptr) return Value("");
                       std::string out(static_cast<size_t>(length), '\0');
                       size_t got = 0;
                       for (ssize_t n; got < out.size(); got += static_cast<size_t>(n)) {
                         n = ::pread(fd.get(), out.data() + got, out.size() - got, offset + static_cast<int64_t>(got));
                         if (n <= 0) break;
                       }
                       out.resize(got);
                       close_file(fd);  // read: a close error adds nothing
                       return Value(std::move(out));
                     }});
}

}  // namespace outpost::vql
