#include "queries/ast.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace outpost::vql::ast {
namespace {

bool plain_identifier(const std::string& name) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0]))) return false;
  for (char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '$') return false;
  return true;
}

// Keywords and odd names are backquoted so that the printed query parses back.
std::string identifier(const std::string& name) {
  static const char* const kKeywords[] = {"SELECT", "FROM", "WHERE", "LET",  "AS",   "AND",   "OR",
                                          "NOT",    "IN",   "ORDER", "BY",   "DESC", "ASC",   "LIMIT",
                                          "NULL",   "TRUE", "FALSE", "GROUP"};
  std::string upper;
  for (char c : name) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  bool keyword = std::find(std::begin(kKeywords), std::end(kKeywords), upper) != std::end(kKeywords);
  return plain_identifier(name) && !keyword ? name : "`" + name + "`";
}

std::string literal(const Value& v) {
  if (v.is_null()) return "NULL";
  if (auto b = v.as_bool()) return *b ? "TRUE" : "FALSE";
  if (auto i = v.as_int()) return std::to_string(*i);
  if (auto d = v.as_double()) {
    std::ostringstream out;
    out.precision(17);
    out << *d;
    std::string s = out.str();
    if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // stays a float when parsed back
    return s;
  }
  if (auto s = v.as_string()) return "'" + escape_string(*s) + "'";
  return "NULL";
}

std::string args(const std::vector<Arg>& a) {
  std::string out = "(";
  for (size_t i = 0; i < a.size(); ++i) {
    if (i) out += ", ";
    out += identifier(a[i].name) + "=" + print(*a[i].value);
  }
  return out + ")";
}

}  // namespace

std::string print(const Expr& e) {
  switch (e.kind) {
    case Expr::Kind::literal: return literal(e.value);
    case Expr::Kind::variable: return identifier(e.name);
    case Expr::Kind::field: return print(*e.operands[0]) + "." + identifier(e.name);
    case Expr::Kind::index: return print(*e.operands[0]) + "[" + print(*e.operands[1]) + "]";
    case Expr::Kind::call: return identifier(e.name) + args(e.args);
    case Expr::Kind::dict: return "dict" + args(e.args);
    case Expr::Kind::unary:
      return e.name == "NOT" ? "(NOT " + print(*e.operands[0]) + ")" : "(-" + print(*e.operands[0]) + ")";
    case Expr::Kind::binary:
      return "(" + print(*e.operands[0]) + " " + e.name + " " + print(*e.operands[1]) + ")";
    case Expr::Kind::list: {
      std::string out = "[";
      for (size_t i = 0; i < e.operands.size(); ++i) out += (i ? ", " : "") + print(*e.operands[i]);
      return out + "]";
    }
    case Expr::Kind::subquery: return "{" + print(*e.query) + "}";
    case Expr::Kind::slice: {
      auto bound = [](const Expr& b) { return b.kind == Expr::Kind::literal && b.value.is_null() ? "" : print(b); };
      return print(*e.operands[0]) + "[" + bound(*e.operands[1]) + ":" + bound(*e.operands[2]) + "]";
    }
  }
  return "?";
}

std::string print(const Select& s) {
  std::string out = "SELECT ";
  for (size_t i = 0; i < s.columns.size(); ++i) {
    if (i) out += ", ";
    auto& c = s.columns[i];
    out += c.expr ? print(*c.expr) : "*";
    if (!c.alias.empty()) out += " AS " + identifier(c.alias);
  }
  out += " FROM ";
  std::string source = s.source;  // Artifact.A.B prints part by part
  for (size_t dot; (dot = source.find('.')) != std::string::npos; source.erase(0, dot + 1))
    out += identifier(source.substr(0, dot)) + ".";
  out += identifier(source);
  if (s.source_is_call) out += args(s.source_args);
  if (s.where) out += " WHERE " + print(*s.where);
  for (size_t i = 0; i < s.group_by.size(); ++i) out += (i ? ", " : " GROUP BY ") + print(*s.group_by[i]);
  if (!s.order_by.empty()) out += " ORDER BY " + identifier(s.order_by) + (s.descending ? " DESC" : "");
  if (s.limit) out += " LIMIT " + std::to_string(*s.limit);
  return out;
}

std::string print(const Query& q) {
  std::string out;
  for (auto& st : q.statements) {
    if (!out.empty()) out += "; ";
    if (st.select) {
      out += print(*st.select);
    } else {
      auto& l = *st.let;
      out += "LET " + identifier(l.name);
      if (l.params) {
        out += "(";
        for (size_t i = 0; i < l.params->size(); ++i) {
          out += (i ? ", " : "") + identifier((*l.params)[i]);
          if (i < l.defaults.size() && l.defaults[i]) out += "=" + print(*l.defaults[i]);
        }
        out += ")";
      }
      out += l.materialized ? " <= " : " = ";
      out += l.query ? print(*l.query) : print(*l.expr);
    }
  }
  return out;
}

std::string column_name(const Column& c) {
  if (!c.alias.empty()) return c.alias;
  if (c.expr->kind == Expr::Kind::variable) return c.expr->name;
  std::string text = print(*c.expr);
  if (c.expr->kind == Expr::Kind::binary || c.expr->kind == Expr::Kind::unary)
    text = text.substr(1, text.size() - 2);  // the outer parentheses
  return text;
}

}  // namespace outpost::vql::ast
