// Parsers of records in files or text: parse_records_with_regex() and
// parse_csv().

#include <re2/re2.h>

#include "queries/engine.hpp"
#include "queries/linux_util.hpp"

namespace outpost::vql {

namespace {

// What these parsers read of one file at most.
constexpr size_t kMaxFileBytes = size_t{64} << 20;

// The text of each of `names` (files, or with accessor='data' the text
// itself) and the path it came from. A file that cannot be read is logged
// and skipped.
std::vector<std::pair<std::string, std::string>> inputs(const Args& args, const std::string& arg, Env& env) {
  bool data = accessor_of(args, {Accessor::data}) == Accessor::data;
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& name : args.strings(arg)) {
    if (data) {
      out.emplace_back("", name);
      continue;
    }
    auto text = read_whole_file(name, kMaxFileBytes);
    if (!text) {
      log_row_error(env, args.callee() + "(): " + arg + ": " + name + ": " + errno_message(errno));
      continue;
    }
    out.emplace_back(name, std::move(*text));
  }
  return out;
}

std::unique_ptr<RowStream> records_with_regex(const Args& args, Env& env) {
  std::vector<std::unique_ptr<RE2>> regexes;
  std::vector<std::string> all_names;
  for (auto& pattern : args.strings("regex")) {
    RE2::Options options;
    options.set_case_sensitive(false);
    options.set_log_errors(false);
    regexes.push_back(std::make_unique<RE2>(pattern, options));
    if (!regexes.back()->ok()) args.fail("regex", regexes.back()->error());
    for (auto& [name, index] : regexes.back()->NamedCapturingGroups())
      if (std::find(all_names.begin(), all_names.end(), name) == all_names.end()) all_names.push_back(name);
  }
  std::vector<Row> rows;
  for (auto& [path, text] : inputs(args, "file", env)) {
    for (auto& re : regexes) {
      std::vector<re2::StringPiece> groups(static_cast<size_t>(re->NumberOfCapturingGroups()) + 1);
      std::map<int, std::string> names;
      for (auto& [name, index] : re->NamedCapturingGroups()) names[index] = name;
      for (size_t at = 0; at <= text.size();) {
        if (!re->Match(text, at, text.size(), RE2::UNANCHORED, groups.data(), static_cast<int>(groups.size()))) break;
        Row row;
        row.set("FullPath", path);
        for (auto& name : all_names) row.set(name, "");
        for (size_t g = 1; g < groups.size(); ++g) {
          auto it = names.find(static_cast<int>(g));
          row.set(it != names.end() ? it->second : "g" + std::to_string(g), std::string(groups[g].data() ? groups[g] : ""));
        }
        rows.push_back(std::move(row));
        if (rows.size() > kMaxMaterializedRows)
          throw QueryError("parse_records_with_regex(): more than " + std::to_string(kMaxMaterializedRows) + " records");
        size_t end = static_cast<size_t>(groups[0].data() - text.data()) + groups[0].size();
        at = end > at ? end : at + 1;
      }
    }
  }
  return rows_stream(std::move(rows));
}

// ---- CSV (RFC 4180, leniently: a quote inside an unquoted field is a character)

std::vector<std::vector<std::string>> csv_records(const std::string& text, char sep, const std::string& comment) {
  std::vector<std::vector<std::string>> records;
  std::vector<std::string> fields;
  std::string field;
  bool quoted = false, started = false;
  size_t line_start = 0;
  for (size_t i = 0; i <= text.size(); ++i) {
    char c = i < text.size() ? text[i] : '\n';
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else if (i < text.size()) {
        field += c;
      } else {
        quoted = false;  // an unterminated quote ends with the text
      }
      continue;
    }
    if (c == '"' && field.find_first_not_of(' ') == std::string::npos) {
      quoted = started = true;
      field.clear();
    } else if (c == sep) {
      fields.push_back(std::move(field));
      field.clear();
      started = true;
    } else if (c == '\n') {
      if (!field.empty() && field.back() == '\r') field.pop_back();
      bool blank = !started && field.empty() && fields.empty();
      bool commented = !comment.empty() && text.compare(line_start, comment.size(), comment) == 0;
      if (!blank && !commented) {
        fields.push_back(std::move(field));
        records.push_back(std::move(fields));
      }
      fields.clear();
      field.clear();
      started = false;
      line_start = i + 1;
    } else {
      field += c;
      started = true;
    }
  }
  return records;
}

// As Velociraptor types a cell: bools, numbers, JSON objects and lists;
// else the string (a leading space removed).
Value csv_value(std::string cell) {
  if (!cell.empty() && cell[0] == ' ') return cell.substr(1);
  if (cell == "true") return true;
  if (cell == "false") return false;
  if (!cell.empty() && (std::isdigit(static_cast<unsigned char>(cell[0])) || cell[0] == '-' || cell[0] == '+')) {
    errno = 0;
    char* end = nullptr;
    long long n = std::strtoll(cell.c_str(), &end, 10);
    if (*end == 0 && errno == 0) return int64_t{n};
    double d = std::strtod(cell.c_str(), &end);
    if (*end == 0) return d;
  }
  if (!cell.empty() && (cell[0] == '{' || cell[0] == '[')) {
    Value v = parse_json_text(cell);
    if (!v.is_null()) return v;
  }
  return cell;
}

// The records of `text` as rows: named by `given`, else (unless
// `auto_headers`: Col0, Col1, ...) by the first record.
void append_csv_rows(const std::string& text, char sep, const std::string& comment,
                     const std::vector<std::string>& given, bool auto_headers, std::vector<Row>& rows) {
  auto records = csv_records(text, sep, comment);
  std::vector<std::string> columns = given;
  size_t first = 0;
  if (columns.empty() && !auto_headers && !records.empty()) columns = records[first++];
  for (size_t r = first; r < records.size(); ++r) {
    auto& fields = records[r];
    Row row;
    for (size_t i = 0; i < std::max(columns.size(), fields.size()); ++i) {
      std::string name = i < columns.size() ? columns[i] : "Col" + std::to_string(i);
      row.set(name, i < fields.size() ? csv_value(fields[i]) : Value());
    }
    rows.push_back(std::move(row));
    if (rows.size() > kMaxMaterializedRows)
      throw QueryError("parse_csv(): more than " + std::to_string(kMaxMaterializedRows) + " records");
  }
}

std::unique_ptr<RowStream> parse_csv(const Args& args, Env& env) {
  std::string sep = args.string("separator").value_or(",");
  if (sep.size() != 1) args.fail("separator", "expected one character");
  std::string comment = args.string("comment").value_or("");
  auto given = args.strings("columns");
  bool auto_headers = args.boolean("auto_headers").value_or(false);
  std::vector<Row> rows;
  for (auto& [path, text] : inputs(args, "filename", env)) append_csv_rows(text, sep[0], comment, given, auto_headers, rows);
  return rows_stream(std::move(rows));
}

}  // namespace

std::vector<Row> csv_rows(const std::string& text) {
  std::vector<Row> rows;
  append_csv_rows(text, ',', "", {}, false, rows);
  return rows;
}

void add_record_parsers(Registry& r) {
  r.add(PluginSpec{"parse_records_with_regex",
                   "A row per match of each regex (case ignored) over a whole file (up to 64 MiB): FullPath, then "
                   "every regex's named groups (\"\" where this one has none); unnamed groups as g1, g2, ...",
                   {{"file", "string or list of strings", true, "the files (with accessor='data': the text)"},
                    {"regex", "string or list of strings", true, ""},
                    {"accessor", "string", false, "file (default) or data"},
                    {"buffer_size", "int", false, "accepted; the whole file is read"}},
                   false, records_with_regex});
  r.add(PluginSpec{"parse_csv",
                   "A row per CSV record, the first naming the columns (unless `columns` or `auto_headers`: Col0, "
                   "Col1, ...); cells typed as Velociraptor types them (true/false, numbers, JSON {..} and [..]).",
                   {{"filename", "string or list of strings", true, "the files (with accessor='data': the text)"},
                    {"accessor", "string", false, "file (default) or data"},
                    {"auto_headers", "bool", false, ""},
                    {"separator", "string", false, "default ,"},
                    {"comment", "string", false, "lines starting with it are skipped"},
                    {"columns", "list of strings", false, ""}},
                   false, parse_csv});
  add_grok(r);
}

}  // namespace outpost::vql
