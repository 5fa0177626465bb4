// Expression evaluation.

#include <re2/re2.h>
#include <spdlog/spdlog.h>

#include <map>

#include "queries/engine.hpp"

namespace outpost::vql {

using ast::Expr;

namespace {

// Lazy LETs that use each other, and stored queries run from expressions,
// recurse: a LET that names itself must fail, not overflow the stack.
constexpr int kMaxDepth = 64;

struct Deeper {
  explicit Deeper(RunContext& ctx, const std::string& what) : ctx(ctx) {
    if (++ctx.depth > kMaxDepth) {
      --ctx.depth;
      throw QueryError(what + ": evaluation nested more than " + std::to_string(kMaxDepth) +
                       " levels deep (does a LET refer to itself?)");
    }
  }
  ~Deeper() { --ctx.depth; }
  RunContext& ctx;
};

Value field_of(const Value& v, const std::string& name) {
  if (auto d = v.as_dict()) {
    auto found = d->find(name);
    return found ? *found : Value();
  }
  if (auto o = v.as_object()) return o->member(name).value_or(Value());
  if (v.as_list() || v.as_query()) {  // a list's field is the list of its items' fields
    auto data = materialize(v);
    List out;
    for (auto& item : *data.as_list()) out.push_back(field_of(item, name));
    return out;
  }
  return Value();
}

Value index_of(const Value& v, const Value& i) {
  if (auto key = i.as_string()) return field_of(v, *key);
  auto n = i.as_int();
  if (!n) return Value();
  if (auto o = v.as_object()) return o->index(*n);
  auto data = materialize(v);
  if (auto l = data.as_list()) {
    int64_t k = *n < 0 ? *n + static_cast<int64_t>(l->size()) : *n;
    return k >= 0 && k < static_cast<int64_t>(l->size()) ? (*l)[static_cast<size_t>(k)] : Value();
  }
  if (auto s = data.as_string()) {
    int64_t k = *n < 0 ? *n + static_cast<int64_t>(s->size()) : *n;
    return k >= 0 && k < static_cast<int64_t>(s->size()) ? Value(s->substr(static_cast<size_t>(k), 1)) : Value();
  }
  return Value();
}

// x[a:b]: a substring, a sub-list; either bound NULL (absent), negative from the end.
Value slice_of(const Value& v, const Value& a, const Value& b) {
  if (auto o = v.as_object()) {
    auto bound = [](const Value& x) { return x.as_int() ? std::optional<int64_t>(*x.as_int()) : std::nullopt; };
    return o->slice(bound(a), bound(b));
  }
  auto data = materialize(v);
  auto bounds = [&](size_t size, int64_t& from, int64_t& to) {
    auto n = static_cast<int64_t>(size);
    auto at = [n](const Value& x, int64_t absent) {
      auto i = x.as_int();
      int64_t k = i ? (*i < 0 ? *i + n : *i) : absent;
      return std::clamp<int64_t>(k, 0, n);
    };
    from = at(a, 0);
    to = std::max(from, at(b, n));
  };
  int64_t from = 0, to = 0;
  if (auto l = data.as_list()) {
    bounds(l->size(), from, to);
    return List(l->begin() + from, l->begin() + to);
  }
  if (auto s = data.as_string()) {
    bounds(s->size(), from, to);
    return s->substr(static_cast<size_t>(from), static_cast<size_t>(to - from));
  }
  return Value();
}

bool contains(const Value& haystack, const Value& needle) {
  auto data = materialize(haystack);
  if (auto l = data.as_list()) {
    for (auto& item : *l)
      if (equal(item, needle)) return true;
    return false;
  }
  if (auto d = data.as_dict()) return needle.as_string() && d->find(*needle.as_string());
  if (data.as_string() || data.as_object())
    return (needle.as_string() || needle.as_object()) && to_string(data).find(to_string(needle)) != std::string::npos;
  return false;
}

}  // namespace

const re2::RE2& RunContext::regex(const std::string& pattern) {
  auto it = regexes.find(pattern);
  if (it != regexes.end()) return *it->second;
  RE2::Options options;
  options.set_case_sensitive(false);
  options.set_log_errors(false);
  auto re = std::make_shared<const re2::RE2>(pattern, options);
  if (!re->ok()) throw QueryError("regex '" + pattern + "': " + re->error());
  if (regexes.size() > 1000) regexes.clear();  // patterns computed per row must not grow without bound
  regexes.emplace(pattern, re);
  return *re;
}

const re2::RE2* cached_regex(const std::string& pattern, bool case_sensitive) {
  thread_local std::map<std::pair<std::string, bool>, std::unique_ptr<re2::RE2>> cache;
  auto key = std::make_pair(pattern, case_sensitive);
  auto it = cache.find(key);
  if (it == cache.end()) {
    if (cache.size() >= 100) cache.clear();
    RE2::Options options(RE2::Quiet);
    options.set_case_sensitive(case_sensitive);
    it = cache.emplace(std::move(key), std::make_unique<re2::RE2>(pattern, options)).first;
  }
  return it->second->ok() ? it->second.get() : nullptr;
}

Value materialize(const Value& v) {
  if (auto q = v.as_query()) {
    List rows;
    for (auto& r : q->materialize()) rows.push_back(Value(std::move(r)));
    return rows;
  }
  return v;
}

bool first_in(Env& env, const std::string& key, std::chrono::seconds period) {
  auto now = std::chrono::steady_clock::now();
  auto [it, fresh] = env.logged.emplace(key, now);
  if (!fresh && now - it->second < period) return false;
  it->second = now;
  if (env.logged.size() > 1000) env.logged.clear();  // keys built per row must not grow without bound
  return true;
}

void log_row_error(Env& env, const std::string& message) {
  if (first_in(env, message, std::chrono::seconds(60))) spdlog::warn("vql: {}", message);
}

namespace {

// How many edits (a letter added, removed, changed, or two swapped) turn
// `a` into `b`, ignoring case; at most 3 ("more").
size_t distance(std::string_view a, std::string_view b) {
  if (a.size() > b.size() + 2 || b.size() > a.size() + 2) return 3;
  auto same = [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
  };
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (same(a[i - 1], b[j - 1]) ? 0 : 1)});
      if (i > 1 && j > 1 && same(a[i - 1], b[j - 2]) && same(a[i - 2], b[j - 1]))
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return std::min<size_t>(d[a.size()][b.size()], 3);
}

// " (NOUN: a, b, c; did you mean b?)": what there is, and the nearest to `name`.
std::string what_there_is(const std::string& noun, const std::vector<std::string>& names, const std::string& name) {
  std::string list, nearest;
  size_t best = name.size() <= 2 ? 0 : name.size() <= 5 ? 1 : 2;  // a short name: its case only
  for (size_t i = 0; i < names.size(); ++i) {
    if (i < 30) list += (i ? ", " : "") + names[i];
    if (size_t d = distance(name, names[i]); d <= best && (nearest.empty() || d < best)) best = d, nearest = names[i];
  }
  if (names.size() > 30) list += ", ... (" + std::to_string(names.size()) + " in all)";
  if (list.empty()) return "";
  return " (" + noun + ": " + list + (nearest.empty() ? "" : "; did you mean " + nearest + "?") + ")";
}

std::vector<std::string> keys_of(const Dict& d) {
  std::vector<std::string> out;
  for (auto& [k, v] : d.items()) out.push_back(k);
  return out;
}

}  // namespace

void warn_unknown_name(Env& env, const std::string& name, const Row* row) {
  if (!first_in(env, "name " + name, std::chrono::seconds(3600))) return;
  spdlog::warn("vql: {} is no column of the row and no variable: it reads as NULL{}", name,
               row ? what_there_is("the row's columns", keys_of(*row), name) : std::string());
}

void warn_missing_field(Env& env, const ast::Expr& of, const Value& value, const std::string& field) {
  if (value.is_null() || value.as_list() || value.as_query()) return;  // NULL in, NULL out; a list: per item
  auto d = value.as_dict();
  auto o = value.as_object();
  if ((d && d->find(field)) || (o && o->member(field))) return;  // there, and NULL
  std::string whose = of.kind == ast::Expr::Kind::variable ? of.name : "the value";
  if (!first_in(env, "field " + whose + "." + field, std::chrono::seconds(3600))) return;
  std::string there;
  if (d) {
    there = what_there_is("its fields", keys_of(*d), field);
  } else if (o) {
    there = what_there_is("its members", o->members(), field);
  } else {
    there = std::string(" (a ") + type_name(value) + " has no fields)";
  }
  spdlog::warn("vql: {}.{}: {} has no field {}: it reads as NULL{}", whose, field, whose, field, there);
}

bool is_aggregate(const std::string& name) {
  return name == "count" || name == "sum" || name == "min" || name == "max" || name == "enumerate" ||
         name == "rate";
}

// The running value over the rows seen so far, of the SELECT or of the
// row's GROUP BY group: count() the rows, sum(item=), min(item=), max(item=),
// enumerate(items=) as a list; rate(x=, y=) the change of x over y since
// the last row.
Value Engine::aggregate(const Expr& e, const Frame& f, const std::shared_ptr<RunContext>& ctx) {
  Aggregates scratch;  // outside a SELECT (a LET's expression): over this one row
  Value& state = (f.aggregates ? *f.aggregates : scratch)[&e];
  if (e.name == "rate") {  // its state is the last row's (x, y); it gives the rate
    Value x, y;
    for (auto& a : e.args) (a.name == "x" ? x : y) = eval(*a.value, f, ctx);
    return rate_step(state, x, y);
  }
  Value item;
  for (auto& a : e.args) item = eval(*a.value, f, ctx);
  if (e.name == "count") {
    state = int64_t{state.as_int() ? *state.as_int() + 1 : 1};
  } else if (e.name == "sum") {
    state = state.is_null() ? (item.is_number() ? item : Value(int64_t{0})) : add(state, item);
  } else if (e.name == "min" || e.name == "max") {
    auto c = state.is_null() ? std::optional<int>() : compare(item, state);
    if (state.is_null() || (c && (e.name == "min" ? *c < 0 : *c > 0))) state = item;
  } else {  // enumerate
    List list = state.as_list() ? *state.as_list() : List{};
    if (list.size() >= kMaxEnumerated)
      throw QueryError("enumerate(): more than " + std::to_string(kMaxEnumerated) + " items in one group");
    list.push_back(item);
    state = std::move(list);
  }
  return state;
}

Value Engine::lazy_if(const Expr& e, const Frame& f, const std::shared_ptr<RunContext>& ctx) {
  const ast::Arg* then = nullptr;
  const ast::Arg* otherwise = nullptr;
  Value condition;
  for (auto& a : e.args) {
    if (a.name == "condition") condition = eval(*a.value, f, ctx);
    if (a.name == "then") then = &a;
    if (a.name == "else") otherwise = &a;
  }
  auto branch = condition_holds(condition) ? then : otherwise;
  return branch ? eval(*branch->value, f, ctx) : Value();
}

Value Engine::call_let(const std::string& name, Position pos, const std::vector<ast::Arg>& args, const Frame& f,
                       const std::shared_ptr<RunContext>& ctx, bool as_plugin) {
  const Binding* b = nullptr;
  for (const Scope* s = f.scope.get(); s && !b; s = s->parent().get()) b = s->binding(name);
  auto where = "line " + std::to_string(pos.line) + ", column " + std::to_string(pos.column) + ": ";
  if (!b || !b->lazy) throw QueryError(where + (as_plugin ? "unknown plugin " : "unknown function ") + name + "()");
  const ast::Let& let = *b->lazy;
  std::vector<Binding> params;
  for (auto& a : args) {
    if (!let.params || std::find(let.params->begin(), let.params->end(), a.name) == let.params->end())
      throw QueryError(where + name + "(): " + a.name + ": not a parameter of LET " + name);
    params.push_back({a.name, eval(*a.value, f, ctx), nullptr});
  }
  if (let.params)  // those not given: their default, else NULL (not the caller's variables of that name)
    for (size_t i = 0; i < let.params->size(); ++i) {
      auto& p = (*let.params)[i];
      if (std::any_of(params.begin(), params.end(), [&](auto& given) { return given.name == p; })) continue;
      ast::ExprPtr d = i < let.defaults.size() ? let.defaults[i] : nullptr;
      params.push_back({p, d ? eval(*d, f, ctx) : Value(), nullptr});
    }
  auto scope = std::make_shared<const Scope>(f.scope, Row{}, std::move(params));
  if (let.query) return QueryPtr(std::make_shared<const StoredQuery>(let.query, scope, ctx));
  Deeper deeper(*ctx, name + "()");
  return eval(*let.expr, Frame{scope}, ctx);
}

std::optional<Value> Engine::find_name(const std::string& name, const Frame& f,
                                      const std::shared_ptr<RunContext>& ctx) {
  if (f.row)
    if (auto v = f.row->find(name)) return *v;
  if (f.columns)
    for (auto& c : *f.columns)
      if (c.expr && !c.alias.empty() && c.alias == name) {
        Frame inner{f.scope, f.row, nullptr};  // an alias does not see the other aliases
        return eval(*c.expr, inner, ctx);
      }
  for (const Scope* s = f.scope.get(); s; s = s->parent().get()) {
    if (auto v = s->row().find(name)) return *v;
    auto b = s->binding(name);
    if (!b) continue;
    if (!b->lazy) return b->value;
    if (b->lazy->query)
      return QueryPtr(std::make_shared<const StoredQuery>(b->lazy->query, ctx->root, ctx));
    Deeper deeper(*ctx, "LET " + name);
    return eval(*b->lazy->expr, Frame{ctx->root}, ctx);
  }
  return std::nullopt;  // VQL: an unknown name is NULL, not an error (a warning: warn_unknown_name)
}

void Engine::read_scope_paths(std::vector<std::pair<std::string, Value>>& values, const Frame& f,
                              const std::shared_ptr<RunContext>& ctx) {
  auto accessor = std::find_if(values.begin(), values.end(), [](auto& v) { return v.first == "accessor"; });
  if (accessor == values.end() || !accessor->second.as_string() || *accessor->second.as_string() != "scope") return;
  accessor->second = Value("data");
  for (auto& [name, v] : values) {
    auto path = v.as_string();
    if ((name != "file" && name != "filename" && name != "files" && name != "path") || !path) continue;
    size_t dot = path->find('.');
    Value data = lookup(path->substr(0, dot), f, ctx);
    while (dot != std::string::npos && !data.is_null()) {
      size_t next = path->find('.', dot + 1);
      data = field_of(data, path->substr(dot + 1, next == std::string::npos ? next : next - dot - 1));
      dot = next;
    }
    v = data.is_null() ? Value() : Value(to_string(data));
  }
}

// get(field=) or get(member=) without item=: the path starts at a variable.
Value Engine::scope_get(const Expr& e, const Frame& f, const std::shared_ptr<RunContext>& ctx) {
  Value field, member, fallback;
  for (auto& a : e.args) {
    Value v = eval(*a.value, f, ctx);
    if (a.name == "field") field = v;
    else if (a.name == "member") member = v;
    else if (a.name == "default") fallback = v;
    else throw QueryError("get(): " + a.name + ": no such argument (item, field, member, default)");
  }
  std::string path = !field.is_null() ? to_string(field) : to_string(member);
  if (path.empty()) throw QueryError("get(): a field or a member is needed");
  size_t dot = member.is_null() || !field.is_null() ? std::string::npos : path.find('.');
  Value v = lookup(path.substr(0, dot), f, ctx);
  if (dot != std::string::npos && !v.is_null()) {
    std::vector<std::pair<std::string, Value>> values{{"item", v}, {"member", path.substr(dot + 1)}};
    v = registry_.function("get")->call(Args("get", std::move(values)), ctx->env);
  }
  return v.is_null() ? fallback : v;
}

Value Engine::eval(const Expr& e, const Frame& f, const std::shared_ptr<RunContext>& ctx) {
  switch (e.kind) {
    case Expr::Kind::literal: return e.value;
    case Expr::Kind::variable: {
      if (auto v = find_name(e.name, f, ctx)) return *v;
      warn_unknown_name(ctx->env, e.name, f.row);
      return Value();
    }
    case Expr::Kind::field: {
      Value of = eval(*e.operands[0], f, ctx);
      Value v = field_of(of, e.name);
      if (v.is_null()) warn_missing_field(ctx->env, *e.operands[0], of, e.name);
      return v;
    }
    case Expr::Kind::index: return index_of(eval(*e.operands[0], f, ctx), eval(*e.operands[1], f, ctx));
    case Expr::Kind::list: {
      List out;
      out.reserve(e.operands.size());
      for (auto& o : e.operands) out.push_back(eval(*o, f, ctx));
      return out;
    }
    case Expr::Kind::dict: {
      Dict out;
      for (auto& a : e.args) out.set(a.name, eval(*a.value, f, ctx));
      return out;
    }
    case Expr::Kind::subquery: {
      // It runs later, maybe for every row: it keeps the row it was written beside.
      auto scope = f.row ? std::make_shared<const Scope>(f.scope, *f.row) : f.scope;
      return QueryPtr(std::make_shared<const StoredQuery>(e.query, scope, ctx));
    }
    case Expr::Kind::call: {
      if (e.name == "if") return lazy_if(e, f, ctx);
      if (is_aggregate(e.name)) return aggregate(e, f, ctx);
      if (e.name == "get" && std::none_of(e.args.begin(), e.args.end(), [](auto& a) { return a.name == "item"; }))
        return scope_get(e, f, ctx);
      auto fn = registry_.function(e.name);
      if (!fn) return call_let(e.name, e.pos, e.args, f, ctx);
      Args args(e.name, arguments(e.name, e.args, fn->args, f, ctx));
      Deeper deeper(*ctx, e.name + "()");
      try {
        check_args(args, fn->args);
        return fn->call(args, ctx->env);
      } catch (const QueryError& error) {  // as Velociraptor: logged, NULL, and the query goes on
        log_row_error(ctx->env, error.what());
        return Value();
      }
    }
    case Expr::Kind::unary: {
      Value v = eval(*e.operands[0], f, ctx);
      if (e.name == "NOT") return !truthy(v);
      if (auto i = v.as_int()) return *i == INT64_MIN ? Value(-static_cast<double>(*i)) : Value(-*i);
      if (auto d = v.as_double()) return -*d;
      return Value();
    }
    case Expr::Kind::slice:
      return slice_of(eval(*e.operands[0], f, ctx), eval(*e.operands[1], f, ctx), eval(*e.operands[2], f, ctx));
    case Expr::Kind::binary: break;
  }
  const std::string& op = e.name;
  // Velociraptor's: AND is a boolean; && is FALSE or its right operand's
  // value; OR and || give a true left operand's value, else (||) the right
  // one's, or (OR) TRUE for a true right operand and its value otherwise.
  if (op == "AND" || op == "&&") {
    if (!truthy(eval(*e.operands[0], f, ctx))) return false;
    Value b = eval(*e.operands[1], f, ctx);
    if (!truthy(b)) return false;
    return op == "AND" ? Value(true) : b;
  }
  if (op == "OR" || op == "||") {
    Value a = eval(*e.operands[0], f, ctx);
    if (truthy(a)) return a;
    Value b = eval(*e.operands[1], f, ctx);
    return op == "OR" && truthy(b) ? Value(true) : b;
  }
  Value a = eval(*e.operands[0], f, ctx);
  Value b = eval(*e.operands[1], f, ctx);
  if (op == "=") return equal(a, b);
  if (op == "!=") return !equal(a, b);
  if (op == "=~") {
    if (b.is_null()) return false;
    std::string pattern = to_string(b);
    // As Velociraptor's: these match anything, NULL too; a list matches
    // when one of its elements does.
    if (pattern.empty() || pattern == "." || pattern == ".*") return true;
    if (a.is_null()) return false;
    const auto& re = ctx->regex(pattern);
    if (auto s = a.as_string()) return RE2::PartialMatch(*s, re);
    if (auto l = a.as_list())
      return std::any_of(l->begin(), l->end(), [&](const Value& v) {
        return !v.is_null() && RE2::PartialMatch(v.as_string() ? *v.as_string() : to_string(v), re);
      });
    return RE2::PartialMatch(to_string(a), re);
  }
  if (op == "IN") return contains(b, a);
  if (op == "+") return add(a, b);
  if (op == "-") return subtract(a, b);
  if (op == "*") return multiply(a, b);
  if (op == "/") return divide(a, b);
  if (op == "%") return modulo(a, b);
  auto c = compare(a, b);
  if (!c) return false;
  if (op == "<") return *c < 0;
  if (op == "<=") return *c <= 0;
  if (op == ">") return *c > 0;
  if (op == ">=") return *c >= 0;
  throw QueryError("unknown operator " + op);
}

}  // namespace outpost::vql
