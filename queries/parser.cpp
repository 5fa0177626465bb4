#include "queries/parser.hpp"

#include <algorithm>

namespace outpost::vql {
namespace {

using ast::Expr;
using ast::ExprPtr;

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  ast::Query query() {
    ast::Query q;
    while (peek().kind != Token::Kind::end) {
      q.statements.push_back(statement());
      while (peek().is_op(";")) next();
    }
    if (q.statements.empty()) fail("expected SELECT or LET");
    return q;
  }

 private:
  const Token& peek(size_t ahead = 0) const {
    return tokens_[std::min(i_ + ahead, tokens_.size() - 1)];
  }
  const Token& next() { return tokens_[std::min(i_++, tokens_.size() - 1)]; }

  [[noreturn]] void fail(const std::string& expected) const {
    throw ParseError(peek().pos, expected + ", found " + peek().describe());
  }
  bool accept_op(const char* o) {
    if (!peek().is_op(o)) return false;
    next();
    return true;
  }
  bool accept_keyword(const char* k) {
    if (!peek().is_keyword(k)) return false;
    next();
    return true;
  }
  void expect_op(const char* o) {
    if (!accept_op(o)) fail(std::string("expected '") + o + "'");
  }
  void expect_keyword(const char* k) {
    if (!accept_keyword(k)) fail(std::string("expected ") + k);
  }
  // Keywords only where a clause may start: elsewhere they are names, as in
  // Velociraptor's artifacts (SELECT Group FROM ..., a parameter Limit).
  static bool soft_keyword(const Token& t) {
    if (t.kind != Token::Kind::keyword) return false;
    for (const char* k : {"GROUP", "ORDER", "BY", "ASC", "DESC", "LIMIT"})
      if (t.text == k) return true;
    return false;
  }

  std::string name(const char* what) {
    if (soft_keyword(peek())) return next().raw;
    if (peek().kind != Token::Kind::identifier) fail(std::string("expected ") + what);
    return next().text;
  }

  // Bounds recursion: every nested expression or query goes through here.
  struct Depth {
    explicit Depth(Parser& p) : p(p) {
      if (++p.depth_ > kMaxNesting)
        throw ParseError(p.peek().pos, "nested more than " + std::to_string(kMaxNesting) + " levels deep");
    }
    ~Depth() { --p.depth_; }
    Parser& p;
  };

  ast::Statement statement() {
    ast::Statement s;
    if (peek().is_keyword("LET")) {
      s.let = let();
    } else if (peek().is_keyword("SELECT")) {
      s.select = select();
    } else {
      fail("expected SELECT or LET");
    }
    return s;
  }

  std::shared_ptr<const ast::Let> let() {
    auto l = std::make_shared<ast::Let>();
    l->pos = next().pos;
    l->name = name("a name after LET");
    if (accept_op("(")) {  // LET f(a, b='default') = ...
      l->params.emplace();
      if (!accept_op(")")) {
        do {
          l->params->push_back(name("a parameter name"));
          l->defaults.push_back(accept_op("=") ? expr() : nullptr);
        } while (accept_op(",") && !peek().is_op(")"));
        expect_op(")");
      }
    }
    if (accept_op("<="))
      l->materialized = true;
    else
      expect_op("=");
    if (peek().is_keyword("SELECT"))
      l->query = select();
    else
      l->expr = expr();
    return l;
  }

  ast::SelectPtr select() {
    Depth depth(*this);
    auto s = std::make_shared<ast::Select>();
    s->pos = peek().pos;
    expect_keyword("SELECT");
    do {
      ast::Column c;
      if (!accept_op("*")) {
        c.expr = expr();
        if (accept_keyword("AS")) c.alias = name("a column name after AS");
      }
      s->columns.push_back(std::move(c));
    } while (accept_op(","));
    expect_keyword("FROM");
    s->source_pos = peek().pos;
    s->source = name("a plugin or a LET name after FROM");
    if (s->source == "Artifact")  // Artifact.Linux.Sys.Users(...)
      while (accept_op(".")) s->source += "." + name("an artifact name's next part after '.'");
    if (accept_op("(")) {
      s->source_is_call = true;
      s->source_args = args();
    }
    if (accept_keyword("WHERE")) s->where = expr();
    if (accept_keyword("GROUP")) {
      expect_keyword("BY");
      do s->group_by.push_back(expr());
      while (accept_op(","));
    }
    if (accept_keyword("ORDER")) {
      expect_keyword("BY");
      s->order_by = name("a column name after ORDER BY");
      if (accept_keyword("DESC"))
        s->descending = true;
      else
        accept_keyword("ASC");
    }
    if (accept_keyword("LIMIT")) {
      if (peek().kind != Token::Kind::integer) fail("expected a whole number after LIMIT");
      s->limit = next().integer;
    }
    return s;
  }

  // After '(': name=expr, ... ')'
  std::vector<ast::Arg> args() {
    std::vector<ast::Arg> out;
    if (accept_op(")")) return out;
    do {
      if (peek().is_op(")")) break;  // a trailing comma
      ast::Arg a;
      a.name = name("an argument name (arguments are named: name=value)");
      for (auto& other : out)
        if (other.name == a.name) throw ParseError(tokens_[i_ - 1].pos, "argument '" + a.name + "' given twice");
      expect_op("=");
      a.value = expr();
      out.push_back(std::move(a));
    } while (accept_op(","));
    expect_op(")");
    return out;
  }

  std::shared_ptr<Expr> node(Expr::Kind kind, Position pos) {
    auto e = std::make_shared<Expr>();
    e->kind = kind;
    e->pos = pos;
    return e;
  }

  ExprPtr binary(std::string op, Position pos, ExprPtr lhs, ExprPtr rhs) {
    auto e = node(Expr::Kind::binary, pos);
    e->name = std::move(op);
    e->operands = {std::move(lhs), std::move(rhs)};
    return grown(e);
  }

  // Long chains (a + a + ... , a.b.c...) nest as deeply as parentheses do.
  ExprPtr grown(std::shared_ptr<Expr> e) {
    for (auto& o : e->operands) e->height = std::max(e->height, o->height + 1);
    if (e->height > kMaxNesting * 4)
      throw ParseError(e->pos, "expression nested more than " + std::to_string(kMaxNesting * 4) + " levels deep");
    return e;
  }

  ExprPtr expr() {
    Depth depth(*this);
    return and_expr();
  }

  // Velociraptor's precedence: AND binds looser than OR (a OR b AND c is
  // (a OR b) AND c). && is AND with its value; || (and |) is OR with its value.
  ExprPtr and_expr() {
    auto lhs = or_expr();
    while (peek().is_keyword("AND") || peek().is_op("&&")) {
      auto& t = next();
      lhs = binary(t.kind == Token::Kind::op ? "&&" : "AND", t.pos, lhs, or_expr());
    }
    return lhs;
  }

  ExprPtr or_expr() {
    auto lhs = not_expr();
    while (peek().is_keyword("OR") || peek().is_op("||") || peek().is_op("|")) {
      auto& t = next();
      lhs = binary(t.kind == Token::Kind::op ? "||" : "OR", t.pos, lhs, not_expr());
    }
    return lhs;
  }

  ExprPtr not_expr() {
    if (!peek().is_keyword("NOT")) return comparison();
    Depth depth(*this);
    auto e = node(Expr::Kind::unary, next().pos);
    e->name = "NOT";
    e->operands = {not_expr()};
    return grown(e);
  }

  ExprPtr comparison() {
    auto lhs = sum();
    static const char* const kOps[] = {"=", "!=", "<>", "<", "<=", ">", ">=", "=~"};
    for (const char* o : kOps) {
      if (peek().is_op(o)) {
        auto pos = next().pos;
        return binary(std::string(o) == "<>" ? "!=" : o, pos, lhs, sum());
      }
    }
    if (peek().is_keyword("IN")) {
      auto pos = next().pos;
      return binary("IN", pos, lhs, sum());
    }
    return lhs;
  }

  ExprPtr sum() {
    auto lhs = product();
    while (peek().is_op("+") || peek().is_op("-")) {
      auto& t = next();
      lhs = binary(t.text, t.pos, lhs, product());
    }
    return lhs;
  }

  ExprPtr product() {
    auto lhs = unary();
    while (peek().is_op("*") || peek().is_op("/") || peek().is_op("%")) {
      auto& t = next();
      lhs = binary(t.text, t.pos, lhs, unary());
    }
    return lhs;
  }

  ExprPtr unary() {
    if (!peek().is_op("-")) return postfix();
    Depth depth(*this);
    auto pos = next().pos;
    auto operand = unary();
    if (operand->kind == Expr::Kind::literal && operand->value.is_number()) {  // -5 is a literal
      auto e = node(Expr::Kind::literal, pos);
      e->value = operand->value.as_int() ? Value(-*operand->value.as_int()) : Value(-*operand->value.as_double());
      return e;
    }
    auto e = node(Expr::Kind::unary, pos);
    e->name = "-";
    e->operands = {operand};
    return grown(e);
  }

  ExprPtr postfix() {
    auto e = primary();
    for (;;) {
      if (peek().is_op(".")) {
        auto f = node(Expr::Kind::field, next().pos);
        f->name = name("a field name after '.'");
        f->operands = {e};
        e = grown(f);
      } else if (peek().is_op("[")) {
        auto pos = next().pos;
        ExprPtr from = peek().is_op(":") ? literal_at(Value(), pos) : expr();
        if (accept_op(":")) {  // x[a:b], either bound optional
          auto x = node(Expr::Kind::slice, pos);
          x->operands = {e, from, peek().is_op("]") ? literal_at(Value(), pos) : expr()};
          expect_op("]");
          e = grown(x);
          continue;
        }
        auto x = node(Expr::Kind::index, pos);
        x->operands = {e, from};
        expect_op("]");
        e = grown(x);
      } else {
        return e;
      }
    }
  }

  ExprPtr primary() {
    const Token& t = peek();
    switch (t.kind) {
      case Token::Kind::integer: return literal(Value(next().integer));
      case Token::Kind::floating: return literal(Value(next().floating));
      case Token::Kind::string: return literal(Value(next().text));
      case Token::Kind::keyword:
        if (t.is_keyword("NULL") || t.is_keyword("TRUE") || t.is_keyword("FALSE")) {
          std::string k = next().text;
          return literal(k == "NULL" ? Value() : Value(k == "TRUE"));
        }
        if (!soft_keyword(t)) break;
        [[fallthrough]];
      case Token::Kind::identifier: {
        auto pos = t.pos;
        std::string n = name("a name");
        if (!accept_op("(")) {
          auto v = node(Expr::Kind::variable, pos);
          v->name = std::move(n);
          return v;
        }
        auto call = node(n == "dict" ? Expr::Kind::dict : Expr::Kind::call, pos);
        call->name = std::move(n);
        call->args = args();
        for (auto& a : call->args) call->height = std::max(call->height, a.value->height + 1);
        return grown(call);
      }
      case Token::Kind::op:
        if (t.is_op("(")) {  // (a) is a; (a, b) and (a,) are lists
          auto pos = next().pos;
          auto e = expr();
          if (!peek().is_op(",")) {
            expect_op(")");
            return e;
          }
          next();
          auto list = node(Expr::Kind::list, pos);
          list->operands.push_back(e);
          items(*list, ")");
          return grown(list);
        }
        if (t.is_op("[")) {
          auto list = node(Expr::Kind::list, next().pos);
          items(*list, "]");
          return grown(list);
        }
        if (t.is_op("{")) {
          auto sub = node(Expr::Kind::subquery, next().pos);
          sub->query = select();
          expect_op("}");
          return sub;
        }
        break;
      case Token::Kind::end: break;
    }
    fail("expected an expression");
  }

  // expr, ... up to `close`; a trailing comma is allowed.
  void items(Expr& list, const char* close) {
    while (!accept_op(close)) {
      list.operands.push_back(expr());
      if (!accept_op(",")) {
        expect_op(close);
        return;
      }
    }
  }

  ExprPtr literal_at(Value v, Position pos) {
    auto e = node(Expr::Kind::literal, pos);
    e->value = std::move(v);
    return e;
  }

  ExprPtr literal(Value v) {
    auto e = node(Expr::Kind::literal, tokens_[i_ - 1].pos);
    e->value = std::move(v);
    return e;
  }

  std::vector<Token> tokens_;
  size_t i_ = 0;
  int depth_ = 0;
};

}  // namespace

ast::Query parse(std::string_view text) {
  if (text.size() > kMaxQueryBytes)
    throw ParseError({1, 1}, "query of " + std::to_string(text.size()) + " bytes is longer than the limit of " +
                                 std::to_string(kMaxQueryBytes));
  return Parser(tokenize(text)).query();
}

}  // namespace outpost::vql
