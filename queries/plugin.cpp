#include "queries/plugin.hpp"

#include <algorithm>

namespace outpost::vql {

const std::shared_ptr<const Paths>& default_paths() {
  static const auto paths = std::make_shared<const Paths>();
  return paths;
}

const Value* Args::find(const std::string& name) const {
  for (auto& [k, v] : values_)
    if (k == name) return v.is_null() ? nullptr : &v;
  return nullptr;
}

bool Args::given(const std::string& name) const {
  return std::any_of(values_.begin(), values_.end(), [&](auto& v) { return v.first == name; });
}

void Args::fail(const std::string& name, const std::string& problem) const {
  throw QueryError(callee_ + "(): " + name + ": " + problem);
}

const Value& Args::require(const std::string& name) const {
  auto v = find(name);
  if (!v) fail(name, "required");
  return *v;
}

namespace {
template <typename T>
std::optional<T> typed(const Args& args, const std::string& name, const char* type) {
  auto v = args.find(name);
  if (!v) return std::nullopt;
  if (auto x = std::get_if<T>(&v->data)) return *x;
  args.fail(name, std::string("expected ") + type + ", got " + type_name(*v));
}
}  // namespace

std::optional<std::string> Args::string(const std::string& name) const {
  // As Velociraptor coerces a string argument: a path or a number as its
  // text, a list of one string as that string.
  auto v = find(name);
  if (v && (v->as_object() || v->is_number() || v->as_bool() || v->as_timestamp())) return to_string(*v);
  if (auto l = v ? v->as_list() : nullptr; l && l->size() == 1 && ((*l)[0].as_string() || (*l)[0].as_object()))
    return to_string((*l)[0]);
  return typed<std::string>(*this, name, "string");
}
std::optional<int64_t> Args::integer(const std::string& name) const {
  return typed<int64_t>(*this, name, "int");
}
std::optional<bool> Args::boolean(const std::string& name) const {
  return typed<bool>(*this, name, "bool");
}

std::vector<std::string> Args::strings(const std::string& name) const {
  auto v = find(name);
  if (!v) return {};
  if (auto s = v->as_string()) return {*s};
  if (auto o = v->as_object()) return {o->str()};
  if (auto l = v->as_list()) {
    std::vector<std::string> out;
    for (auto& item : *l) {
      if (auto o = item.as_object()) {
        out.push_back(o->str());
        continue;
      }
      auto s = item.as_string();
      if (!s) fail(name, std::string("expected a list of strings, found a ") + type_name(item));
      out.push_back(*s);
    }
    return out;
  }
  fail(name, std::string("expected a string or a list of strings, got ") + type_name(*v));
}

void Registry::add(PluginSpec spec) {
  auto name = spec.name;
  plugins_.insert_or_assign(name, std::move(spec));
}
void Registry::add(PluginSpec spec, ArgCheck check) {
  checks_.insert_or_assign(spec.name, std::move(check));
  add(std::move(spec));
}
void Registry::add(FunctionSpec spec) {
  auto name = spec.name;
  functions_.insert_or_assign(name, std::move(spec));
}
const PluginSpec* Registry::plugin(const std::string& name) const {
  auto it = plugins_.find(name);
  return it == plugins_.end() ? nullptr : &it->second;
}
const ArgCheck* Registry::check(const std::string& plugin) const {
  auto it = checks_.find(plugin);
  return it == checks_.end() ? nullptr : &it->second;
}
const FunctionSpec* Registry::function(const std::string& name) const {
  auto it = functions_.find(name);
  return it == functions_.end() ? nullptr : &it->second;
}

void check_arg_names(const Args& args, const std::vector<ArgSpec>& spec) {
  bool any_name = std::any_of(spec.begin(), spec.end(), [](const ArgSpec& a) { return a.name == "*"; });
  for (auto& item : args.values()) {
    if (any_name) break;
    const std::string& name = item.first;
    bool known = std::any_of(spec.begin(), spec.end(), [&](const ArgSpec& a) { return a.name == name; });
    if (known) continue;
    std::string expected;
    for (auto& a : spec) expected += (expected.empty() ? "" : ", ") + a.name;
    args.fail(name, "unknown argument (" + (expected.empty() ? "it takes none" : "expected " + expected) + ")");
  }
}

void check_args(const Args& args, const std::vector<ArgSpec>& spec) {
  check_arg_names(args, spec);
  for (auto& a : spec)  // a NULL given is given (Velociraptor reads it as "", 0, FALSE)
    if (a.required && !args.given(a.name)) args.fail(a.name, "required");
}

namespace {
class RowsStream : public RowStream {
 public:
  explicit RowsStream(std::vector<Row> rows) : rows_(std::move(rows)) {}
  Step next(std::vector<Row>& out, size_t budget) override {
    for (; next_ < rows_.size() && budget > 0; --budget) out.push_back(std::move(rows_[next_++]));
    return next_ < rows_.size() ? Step::more() : Step::done();
  }

 private:
  std::vector<Row> rows_;
  size_t next_ = 0;
};
}  // namespace

std::unique_ptr<RowStream> rows_stream(std::vector<Row> rows) {
  return std::make_unique<RowsStream>(std::move(rows));
}

}  // namespace outpost::vql
