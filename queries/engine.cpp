#include "queries/engine.hpp"

#include <algorithm>

#include "queries/agent_plugins.hpp"
#include "queries/event_plugins.hpp"
#include "queries/linux_plugins.hpp"
#include "queries/parser.hpp"

namespace outpost::vql {
namespace {

std::string at(Position p) {
  return "line " + std::to_string(p.line) + ", column " + std::to_string(p.column) + ": ";
}

// A value written in the query itself: a literal, or a list of them.
std::optional<Value> constant(const ast::Expr& e) {
  if (e.kind == ast::Expr::Kind::literal) return e.value;
  if (e.kind != ast::Expr::Kind::list) return std::nullopt;
  List items;
  for (auto& o : e.operands) {
    auto v = constant(*o);
    if (!v) return std::nullopt;
    items.push_back(std::move(*v));
  }
  return Value(std::move(items));
}

// Every name the query calls must exist, and a plugin's arguments must be
// ones it takes with values it accepts (as far as they are constants): a
// typo or clock(period=0) fails before anything runs, not in a restart loop.
// With `problems`, it goes on past each one and lists them all there.
class Checker {
 public:
  Checker(const Registry& r, const ArtifactCalls* artifacts, const Declared& declared,
          std::vector<std::string>* problems)
      : r_(r), artifacts_(artifacts), declared_(declared), problems_(problems) {}

  // The query's own LETs: callable wherever they are written.
  void declare(const ast::Query& query) {
    for (auto& st : query.statements)
      if (st.let) declared_.names.insert(st.let->name);
  }

  void select(const ast::Select& s) {
    for (auto& c : s.columns)
      if (c.expr) expr(*c.expr);
    if (s.source_is_call && is_artifact_call(s.source)) {
      artifact_call(s);
    } else if (s.source_is_call && !r_.plugin(s.source)) {
      if (is_declared(s.source)) return rest(s);
      std::string hint = r_.function(s.source) ? " (" + s.source + "() is a function, not a plugin)" : "";
      problem(s.source_pos, "unknown plugin " + s.source + "()" + hint);
    } else if (s.source_is_call) {
      plugin_args(s);
    }
    rest(s);
  }

  void rest(const ast::Select& s) {
    for (auto& a : s.source_args) expr(*a.value);
    if (s.where) expr(*s.where);
  }

  void expr(const ast::Expr& e) {
    if (e.kind == ast::Expr::Kind::call && !r_.function(e.name) && is_declared(e.name)) {
      // a LET: its parameters are checked when it is called
    } else if (e.kind == ast::Expr::Kind::call && !r_.function(e.name)) {
      std::string hint = r_.plugin(e.name) ? " (" + e.name + "() is a plugin: use it after FROM)" : "";
      problem(e.pos, "unknown function " + e.name + "()" + hint);
    } else if (e.kind == ast::Expr::Kind::call) {
      try {
        const auto& spec = r_.function(e.name)->args;
        std::vector<std::pair<std::string, Value>> names;
        for (auto& a : e.args) names.emplace_back(a.name, Value());
        check_arg_names(Args(e.name, std::move(names)), spec);
        required(e.name, e.args, spec);
      } catch (const QueryError& err) {
        problem(e.pos, err.what());
      }
    }
    for (auto& o : e.operands) expr(*o);
    for (auto& a : e.args) expr(*a.value);
    if (e.query) select(*e.query);
  }

 private:
  bool is_declared(const std::string& name) const { return declared_.any || declared_.names.count(name); }

  void problem(Position p, const std::string& what) {
    if (!problems_) throw QueryError(at(p) + what);
    problems_->push_back(at(p) + what);
  }

  // Left to the artifacts, when there are any here.
  void artifact_call(const ast::Select& s) {
    if (!artifacts_) return;
    std::vector<std::string> names;
    for (auto& a : s.source_args) names.push_back(a.name);
    try {
      artifacts_->check_call(s.source.substr(kArtifactPrefix.size()), names);
    } catch (const QueryError& e) {
      problem(s.source_pos, e.what());
    }
  }

  void plugin_args(const ast::Select& s) {
    const PluginSpec& plugin = *r_.plugin(s.source);
    std::vector<std::pair<std::string, Value>> constants;
    for (auto& a : s.source_args)
      if (auto v = constant(*a.value)) constants.emplace_back(a.name, std::move(*v));
    std::vector<std::pair<std::string, Value>> names;
    for (auto& a : s.source_args) names.emplace_back(a.name, Value());
    try {
      check_arg_names(Args(s.source, std::move(names)), plugin.args);
      required(s.source, s.source_args, plugin.args);
      if (auto check = r_.check(s.source)) (*check)(Args(s.source, std::move(constants)));
    } catch (const QueryError& e) {
      problem(s.source_pos, e.what());
    }
  }

  // A required argument the call does not name (whatever its value will be).
  template <class Written>
  static void required(const std::string& callee, const Written& written, const std::vector<ArgSpec>& spec) {
    for (auto& a : spec)
      if (a.required && std::none_of(written.begin(), written.end(), [&](auto& w) { return w.name == a.name; }))
        Args(callee, {}).fail(a.name, "required");
  }

  const Registry& r_;
  const ArtifactCalls* artifacts_;
  Declared declared_;
  std::vector<std::string>* problems_;
};

void check_statements(const ast::Query& query, Checker& c) {
  for (auto& st : query.statements) {
    if (st.select) c.select(*st.select);
    if (st.let && st.let->query) c.select(*st.let->query);
    if (st.let && st.let->expr) c.expr(*st.let->expr);
  }
}

}  // namespace

ast::Query Engine::compile(std::string_view vql, const Declared& declared) const {
  ast::Query q = parse(vql);
  check(q, declared);
  return q;
}

void Engine::check(const ast::Query& query, const Declared& declared) const {
  if (query.precondition) check(*query.precondition, declared);
  Checker c(registry_, artifacts_, declared, nullptr);
  c.declare(query);
  check_statements(query, c);
}

std::vector<std::string> Engine::problems(const ast::Query& query, const Declared& declared) const {
  std::vector<std::string> out;
  if (query.precondition) out = problems(*query.precondition, declared);
  Checker c(registry_, artifacts_, declared, &out);
  c.declare(query);
  check_statements(query, c);
  return out;
}

const Registry& default_registry() {
  static const Registry registry = [] {
    Registry r;
    add_builtin_functions(r);
    add_text_functions(r);
    add_string_functions(r);
    add_collection_functions(r);
    add_host_functions(r);
    add_record_parsers(r);
    add_http_client(r);
    add_binary_parser(r);
    add_fifo_plugin(r);
    add_yara_plugins(r);
    add_sqlite_plugin(r);
    add_interface_plugins(r);
    add_misc_functions(r);
    add_xml_functions(r);
    add_netstat_plugins(r);
    add_tracker_plugins(r);
    add_journald_plugins(r);
    add_flow_functions(r);
    add_builtin_plugins(r);
    add_execve_plugin(r);
    add_parse_functions(r);
    add_linux_plugins(r);
    add_event_plugins(r);
    add_agent_plugins(r);
    return r;
  }();
  return registry;
}

}  // namespace outpost::vql
