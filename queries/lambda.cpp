// Velociraptor's lambdas ("x => x.Size > 10"), compiled where a plugin or
// function that takes one is called.

#include <algorithm>

#include "queries/engine.hpp"
#include "queries/parser.hpp"

namespace outpost::vql {

ObjectPtr Lambda::compile(const std::string& where, const std::string& text, ScopePtr scope,
                          std::shared_ptr<RunContext> context) {
  auto arrow = text.find("=>");
  auto fail = [&](const std::string& problem) -> ObjectPtr {
    throw QueryError(where + ": " + problem + " (a lambda is \"x => expression\"): " + text);
  };
  if (arrow == std::string::npos) return fail("no =>");
  auto trim = [](std::string s) {
    auto b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
    return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
  };
  std::string param = trim(text.substr(0, arrow)), body = trim(text.substr(arrow + 2));
  bool name = !param.empty() && (std::isalpha(static_cast<unsigned char>(param[0])) || param[0] == '_') &&
              std::all_of(param.begin(), param.end(),
                          [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
  if (!name) return fail("\"" + param + "\" is not a parameter name");
  if (body.empty()) return fail("no expression");
  ast::ExprPtr expr;
  try {  // an expression is a column of a query
    auto query = parse("SELECT (" + body + "\n) AS _ FROM scope()");
    if (query.statements.size() != 1 || !query.statements[0].select) return fail("not one expression");
    expr = query.statements[0].select->columns.at(0).expr;
  } catch (const std::exception& e) {  // its place is in the query around the body: left out
    std::string what = e.what();
    if (what.rfind("line ", 0) == 0 && what.find(": ") != std::string::npos) what = what.substr(what.find(": ") + 2);
    return fail(what);
  }
  return std::make_shared<const Lambda>(text, std::move(param), std::move(expr), std::move(scope),
                                        std::move(context));
}

Value Lambda::call(const Value& argument) const {
  auto scope = std::make_shared<const Scope>(scope_, Row{}, std::vector<Binding>{{param_, argument, nullptr}});
  return context_->engine.eval(*body_, Frame{scope}, context_);
}

const Lambda* lambda_arg(const Args& args, const std::string& name) {
  auto v = args.find(name);
  return v ? dynamic_cast<const Lambda*>(v->as_object()) : nullptr;
}

std::vector<std::pair<std::string, Value>> Engine::arguments(const std::string& callee,
                                                             const std::vector<ast::Arg>& args,
                                                             const std::vector<ArgSpec>& spec, const Frame& f,
                                                             const std::shared_ptr<RunContext>& ctx) {
  std::vector<std::pair<std::string, Value>> values;
  values.reserve(args.size());
  for (auto& a : args) {
    Value v = eval(*a.value, f, ctx);
    auto s = v.as_string();
    auto kind = s ? std::find_if(spec.begin(), spec.end(), [&](auto& x) { return x.name == a.name; }) : spec.end();
    if (kind != spec.end() && (kind->type == "lambda" || kind->type == "lambda text")) {
      auto scope = f.row ? std::make_shared<const Scope>(f.scope, *f.row) : f.scope;
      if (kind->type == "lambda")
        v = Value(Lambda::compile(callee + "(): " + a.name, *s, std::move(scope), ctx));
      else
        v = Value(std::static_pointer_cast<const Object>(std::make_shared<const LambdaText>(*s, std::move(scope), ctx)));
    }
    values.emplace_back(a.name, std::move(v));
  }
  read_scope_paths(values, f, ctx);
  return values;
}

}  // namespace outpost::vql
