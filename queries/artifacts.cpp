#include "queries/artifacts.hpp"

#include <re2/re2.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "queries/parser.hpp"

namespace outpost::vql {

// Generated from queries/artifacts/*.yaml (embed_artifacts.cmake).
extern const char* const kBuiltinArtifacts[][2];
extern const size_t kBuiltinArtifactCount;

namespace {

const char* const kIgnoredKeys[] = {"author", "reference", "references", "tools", "column_types",
                                    "required_permissions", "implied_permissions", "resources", "aliases",
                                    "level", "notebook", "reports", "friendly_name", "choices"};

// Velociraptor's parameter types, by the type Outpost gives the value:
// the text ones are strings to the query (a GUI shows them differently).
const std::pair<const char*, const char*> kTypes[] = {
    {"string", "string"}, {"str", "string"},  {"hidden", "string"},   {"choices", "string"},
    {"glob", "string"},   {"yara", "string"}, {"regex", "regex"},     {"int", "int"},
    {"int64", "int"},     {"integer", "int"}, {"bool", "bool"},       {"float", "float"},
    {"timestamp", "timestamp"}, {"csv", "csv"},      {"artifactset", "csv"}, {"json", "json"},
    {"json_array", "json_array"}, {"regex_array", "json_array"}, {"multichoice", "json_array"},
    {"upload", "upload"}, {"upload_file", "upload_file"}};
// Types Velociraptor has that take what only its server fills in.
const char* const kNotYet[] = {"server_metadata", "redacted"};

struct Reader {
  const std::string& origin;
  Declared declared = {};  // LETs of the artifact's export and sources, callable from each of them

  [[noreturn]] void fail(const std::string& path, const std::string& problem) const {
    throw ArtifactError(origin + ": " + path + ": " + problem);
  }
  std::string text(const YAML::Node& n, const std::string& path) const {
    if (!n.IsScalar()) fail(path, "expected a string");
    return n.Scalar();
  }
  // VQL statements; `select`: they must end with a SELECT (a precondition).
  std::shared_ptr<const ast::Query> compile(const std::string& vql, const std::string& path, const Engine& engine,
                                            bool select) const {
    std::shared_ptr<const ast::Query> q;
    try {
      q = std::make_shared<const ast::Query>(engine.compile(vql, declared));
    } catch (const std::exception& e) {
      fail(path, e.what());
    }
    if (select && (q->statements.empty() || !q->statements.back().select)) fail(path, "expected a query ending in SELECT");
    return q;
  }
  // An optional key's statements; null when absent or empty.
  std::shared_ptr<const ast::Query> query(const YAML::Node& n, const std::string& path, const Engine& engine,
                                          bool select) const {
    if (!n || n.IsNull()) return nullptr;
    std::string vql = text(n, path);
    if (vql.find_first_not_of(" \t\r\n") == std::string::npos) return nullptr;
    return compile(vql, path, engine, select);
  }
  // Keys of `n` must be in `known` (or ignored ones, when `ignore` is set).
  void check_keys(const YAML::Node& n, const std::string& path, std::vector<const char*> known,
                  bool ignore = false) const {
    if (!n.IsMap()) fail(path.empty() ? "the file" : path, "expected a map");
    std::set<std::string> seen;
    for (const auto& entry : n) {
      std::string key = text(entry.first, path);
      std::string at = path.empty() ? key : path + "." + key;
      if (!seen.insert(key).second) fail(at, "duplicate key");
      bool ok = std::any_of(known.begin(), known.end(), [&](const char* k) { return key == k; }) ||
                (ignore && std::find(std::begin(kIgnoredKeys), std::end(kIgnoredKeys), key) != std::end(kIgnoredKeys));
      if (!ok) {
        std::string allowed;
        for (auto k : known) allowed += (allowed.empty() ? "" : ", ") + std::string(k);
        fail(at, "unknown key; allowed: " + allowed);
      }
    }
  }
};

// "Y", "true", "1" ... as Velociraptor's boolean parameters take them.
std::optional<bool> parse_bool(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  if (s == "y" || s == "yes" || s == "true" || s == "1") return true;
  if (s == "n" || s == "no" || s == "false" || s == "0" || s.empty()) return false;
  return std::nullopt;
}

// timestamp(epoch=`epoch`); throws QueryError when it is no time.
Value time_of(const Value& epoch) {
  Env env;
  return default_registry().function("timestamp")->call(Args("timestamp", {{"epoch", epoch}}), env);
}

// The text of a parameter as its type's value, or an error message.
Value convert(const Artifact::Parameter& p, const std::string& text, std::string& error) {
  if (p.type == "int") {
    if (text.empty()) return int64_t{0};  // Velociraptor's int(int=""): no default, no value
    errno = 0;
    char* end = nullptr;
    long long n = std::strtoll(text.c_str(), &end, 0);
    if (text.empty() || *end || errno) {
      error = "expected an integer, got \"" + text + "\"";
      return Value();
    }
    return int64_t{n};
  }
  if (p.type == "bool") {
    auto b = parse_bool(text);
    if (!b) error = "expected a boolean (Y/N, true/false, 1/0), got \"" + text + "\"";
    return b ? Value(*b) : Value();
  }
  if (p.type == "regex") {
    RE2 re(text, RE2::Quiet);
    if (!re.ok()) error = "not a valid regex: " + re.error();
  }
  if (p.type == "float") {
    char* end = nullptr;
    double d = std::strtod(text.c_str(), &end);
    if (text.empty() || *end) error = "expected a number, got \"" + text + "\"";
    return d;
  }
  if (p.type == "timestamp") {  // epoch seconds or RFC 3339; empty: no time
    if (text.empty()) return Value();
    char* end = nullptr;
    long long n = std::strtoll(text.c_str(), &end, 10);
    try {
      return time_of(*end ? Value(text) : Value(int64_t{n}));
    } catch (const std::exception&) {
      error = "expected a time (epoch seconds or RFC 3339), got \"" + text + "\"";
      return Value();
    }
  }
  if (p.type == "csv") {  // rows, the first line naming the columns
    auto rows = csv_rows(text);
    return List(rows.begin(), rows.end());
  }
  if (p.type == "upload" || p.type == "upload_file") {  // a file's content, as the collector sends it
    bool url = (text.rfind("http://", 0) == 0 || text.rfind("https://", 0) == 0) &&
               text.find_first_of("\r\n") == std::string::npos;
    if (url)
      error = "\"" + text + "\" is a URL: an agent does not fetch parameters (Velociraptor's server-side file); "
              "send the file itself (outpost-collector collect --param-file " + p.name + "=FILE)";
    return text;
  }
  if (p.type == "json" || p.type == "json_array") {
    bool array = p.type == "json_array";
    if (text.find_first_not_of(" \t\r\n") == std::string::npos) return array ? Value(List{}) : Value(Dict{});
    Value v = parse_json_text(text);
    if (array ? !v.as_list() : !v.as_dict())
      error = std::string("expected a JSON ") + (array ? "array" : "object") + ", got \"" + text + "\"";
    return v;
  }
  return text;
}

// The type Outpost gives a parameter of Velociraptor's type `type`; fails
// naming it when there is none (yet).
std::string value_type(const Reader& r, const std::string& at, const std::string& type) {
  for (auto& [name, kind] : kTypes)
    if (type == name) return kind;
  if (std::find(std::begin(kNotYet), std::end(kNotYet), type) != std::end(kNotYet))
    r.fail(at, "type \"" + type + "\" is filled in by Velociraptor's server; Outpost's has no such values");
  std::string known;
  for (auto& [name, kind] : kTypes) known += (known.empty() ? "" : ", ") + std::string(name);
  r.fail(at, "expected one of " + known + ", got \"" + type + "\"");
}

}  // namespace

// Every LET name in the artifact's export and sources (as far as they parse:
// what does not is refused later, where it is), and any name at all when it
// imports others.
void for_each_vql(const YAML::Node& root, const std::function<void(const std::string&, const std::string&)>& fn) {
  if (!root.IsMap()) return;
  auto text = [&](const YAML::Node& n, const std::string& where) {
    if (n && n.IsScalar()) fn(where, n.Scalar());
  };
  text(root["precondition"], "precondition");
  text(root["export"], "export");
  auto sources = root["sources"];
  for (size_t i = 0; sources && sources.IsSequence() && i < sources.size(); ++i) {
    std::string at = "sources[" + std::to_string(i) + "]";
    if (!sources[i].IsMap()) continue;
    text(sources[i]["precondition"], at + ".precondition");
    text(sources[i]["query"], at + ".query");
    if (auto queries = sources[i]["queries"]; queries && queries.IsSequence()) {
      std::string all;
      for (auto q : queries)
        if (q.IsScalar()) all += q.Scalar() + "\n";
      fn(at + ".queries", all);
    }
  }
}

Declared declared_lets(const YAML::Node& root) {
  Declared out;
  out.any = root.IsMap() && root["imports"];
  for_each_vql(root, [&](const std::string&, const std::string& vql) {
    try {
      for (auto& st : parse(vql).statements)
        if (st.let) out.names.insert(st.let->name);
    } catch (const std::exception&) {
    }
  });
  return out;
}

Artifact parse_artifact(const std::string& yaml, const std::string& origin, const Engine& engine) {
  Reader r{origin};
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    throw ArtifactError(origin + ": line " + std::to_string(e.mark.line + 1) + ", column " +
                        std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
  r.check_keys(root, "", {"name", "description", "type", "parameters", "precondition", "export", "imports", "sources"},
               true);
  Artifact a;
  a.yaml = yaml;
  a.origin = origin;
  if (!root["name"]) r.fail("name", "missing");
  a.name = r.text(root["name"], "name");
  static const RE2 kName("[A-Za-z0-9_]+(\\.[A-Za-z0-9_]+)*");
  if (!RE2::FullMatch(a.name, kName)) r.fail("name", "\"" + a.name + "\" is not a name like Linux.Sys.Pslist");
  r.declared = declared_lets(root);
  if (root["description"]) a.description = r.text(root["description"], "description");
  std::string type = root["type"] ? r.text(root["type"], "type") : "CLIENT";
  if (type != "CLIENT" && type != "CLIENT_EVENT") r.fail("type", "expected CLIENT or CLIENT_EVENT, got \"" + type + "\"");
  a.event = type == "CLIENT_EVENT";
  if (auto params = root["parameters"]) {
    if (!params.IsSequence() && !params.IsNull()) r.fail("parameters", "expected a list");
    for (size_t i = 0; i < params.size(); ++i) {
      std::string at = "parameters[" + std::to_string(i) + "]";
      r.check_keys(params[i], at, {"name", "default", "type", "description"}, true);
      Artifact::Parameter p;
      if (!params[i]["name"]) r.fail(at + ".name", "missing");
      p.name = r.text(params[i]["name"], at + ".name");
      if (p.name.empty() || p.name.find('`') != std::string::npos)  // VQL could not name it
        r.fail(at + ".name", p.name.empty() ? "empty" : "\"" + p.name + "\": a name VQL cannot write (it holds `)");
      auto given = params[i]["default"];
      if (given && !given.IsNull()) p.default_value = r.text(given, at + ".default");  // `default:` alone is ""
      if (params[i]["type"] && !params[i]["type"].IsNull())
        p.type = value_type(r, at + ".type", r.text(params[i]["type"], at + ".type"));
      if (params[i]["description"]) p.description = r.text(params[i]["description"], at + ".description");
      for (auto& other : a.parameters)
        if (other.name == p.name) r.fail(at + ".name", "\"" + p.name + "\" is declared twice");
      std::string error;
      convert(p, p.default_value, error);
      if (!error.empty() && !(p.type == "int" && p.default_value.empty())) r.fail(at + ".default", error);
      a.parameters.push_back(std::move(p));
    }
  }
  // An upload_file parameter is a path: its content in a file of the query's own.
  std::string conversions;
  for (auto& p : a.parameters)
    if (p.type == "upload_file")
      conversions += "LET `" + p.name + "` <= if(condition=`" + p.name + "`, then=tempfile(data=`" + p.name + "`), else=`" + p.name + "`) ";
  if (!conversions.empty()) a.conversions = r.compile(conversions, "parameters", engine, false);
  a.precondition = r.query(root["precondition"], "precondition", engine, true);
  a.exports = r.query(root["export"], "export", engine, false);
  if (auto imports = root["imports"]) {
    if (!imports.IsSequence()) r.fail("imports", "expected a list of artifact names");
    for (size_t i = 0; i < imports.size(); ++i) a.imports.push_back(r.text(imports[i], "imports[" + std::to_string(i) + "]"));
  }
  auto sources = root["sources"];
  if (!sources || !sources.IsSequence() || sources.size() == 0) r.fail("sources", "expected a list of at least one source");
  for (size_t i = 0; i < sources.size(); ++i) {
    std::string at = "sources[" + std::to_string(i) + "]";
    r.check_keys(sources[i], at, {"name", "query", "queries", "precondition", "description"}, true);
    Artifact::Source s;
    if (sources[i]["name"]) s.name = r.text(sources[i]["name"], at + ".name");
    for (auto& other : a.sources)  // unnamed ones may be several (alternatives, by their preconditions)
      if (!s.name.empty() && other.name == s.name) r.fail(at + ".name", "\"" + s.name + "\" is taken twice");
    auto query = sources[i]["query"];
    auto queries = sources[i]["queries"];  // Velociraptor's older form: a list of statements
    if (query && queries) r.fail(at, "both query and queries: give one");
    if (queries) {
      if (!queries.IsSequence()) r.fail(at + ".queries", "expected a list of VQL statements");
      for (size_t k = 0; k < queries.size(); ++k) {
        s.query += r.text(queries[k], at + ".queries[" + std::to_string(k) + "]") + "\n";
        if (s.query.size() > kMaxQueryBytes)  // YAML aliases repeat one text without taking room in the file
          r.fail(at + ".queries", "more than " + std::to_string(kMaxQueryBytes) + " bytes of VQL");
      }
    } else if (query) {
      s.query = r.text(query, at + ".query");
    } else {
      r.fail(at + ".query", "missing");
    }
    s.compiled = r.compile(s.query, at + (queries ? ".queries" : ".query"), engine, false);
    s.precondition = r.query(sources[i]["precondition"], at + ".precondition", engine, true);
    a.sources.push_back(std::move(s));
  }
  return a;
}

namespace {

void check_names(const Artifact& a, const std::vector<std::string>& given) {
  for (auto& name : given) {
    bool known = std::any_of(a.parameters.begin(), a.parameters.end(),
                             [&](const Artifact::Parameter& p) { return p.name == name; });
    if (known) continue;
    std::string names;
    for (auto& p : a.parameters) names += (names.empty() ? "" : ", ") + p.name;
    throw ArtifactError(a.name + ": parameter " + name + ": unknown; " +
                        (names.empty() ? "it takes none" : "it takes " + names));
  }
}

// A parameter's value given as text: converted to its type.
Value from_text(const Artifact& a, const Artifact::Parameter& p, const std::string& text) {
  std::string error;
  Value v = convert(p, text, error);
  if (!error.empty()) throw ArtifactError(a.name + ": parameter " + p.name + ": " + error);
  return v;
}

// A value from VQL: text is converted; a number or boolean where one is
// expected is taken as such; anything else (a list, a dict) as it is.
Value from_value(const Artifact& a, const Artifact::Parameter& p, const Value& v) {
  if (auto text = v.as_string()) return from_text(a, p, *text);
  if (p.type == "int" && v.as_double()) return static_cast<int64_t>(*v.as_double());
  if (p.type == "int" && v.as_bool()) return int64_t{*v.as_bool()};
  if (p.type == "float" && v.as_int()) return static_cast<double>(*v.as_int());
  if (p.type == "bool" && !v.as_bool()) return truthy(v);
  if (p.type == "timestamp" && (v.as_int() || v.as_double())) return time_of(v);
  return v;
}

}  // namespace

std::vector<Binding> bind_parameters(const Artifact& a,
                                     const std::vector<std::pair<std::string, std::string>>& given) {
  std::vector<std::string> names;
  for (auto& [name, text] : given) names.push_back(name);
  check_names(a, names);
  std::vector<Binding> out;
  for (auto& p : a.parameters) {
    std::string text = p.default_value;
    for (auto& [name, value] : given)
      if (name == p.name) text = value;  // the last one given wins
    out.push_back({p.name, from_text(a, p, text), nullptr});
  }
  return out;
}

std::vector<Binding> bind_values(const Artifact& a, const std::vector<std::pair<std::string, Value>>& given) {
  std::vector<std::string> names;
  for (auto& [name, value] : given) names.push_back(name);
  check_names(a, names);
  std::vector<Binding> out;
  for (auto& p : a.parameters) {
    const Value* value = nullptr;
    for (auto& [name, v] : given)
      if (name == p.name) value = &v;
    out.push_back({p.name, value ? from_value(a, p, *value) : from_text(a, p, p.default_value), nullptr});
  }
  return out;
}

}  // namespace outpost::vql
