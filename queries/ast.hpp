#pragma once
// The parsed form of a VQL query. Nodes are immutable once parsed and shared
// (a LET's query is held by every stored-query value made from it).

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "queries/lexer.hpp"
#include "queries/value.hpp"

namespace outpost::vql::ast {

struct Expr;
struct Select;
using ExprPtr = std::shared_ptr<const Expr>;
using SelectPtr = std::shared_ptr<const Select>;

struct Arg {
  std::string name;
  ExprPtr value;
};

struct Expr {
  enum class Kind {
    literal,   // value
    variable,  // name: a column, LET or parameter
    field,     // operands[0].name
    index,     // operands[0][operands[1]]
    call,      // name(args)
    unary,     // op operands[0]: NOT, -
    binary,    // operands[0] op operands[1]
    list,      // [operands...]
    dict,      // dict(args) and {name: value}-free literal form: dict(a=1)
    subquery,  // { query }
    slice,     // operands[0][operands[1]:operands[2]], an absent bound a NULL literal
  };
  Kind kind = Kind::literal;
  Position pos;
  Value value;
  // variable, field, function, or operator (upper case: AND OR NOT IN, =~ ..., and || &&)
  std::string name;
  std::vector<ExprPtr> operands;
  std::vector<Arg> args;
  SelectPtr query;
  int height = 1;  // of the tree below: the parser bounds it (evaluation recurses)
};

struct Column {
  ExprPtr expr;       // null for *
  std::string alias;  // empty: named after the expression
};

struct Select {
  Position pos;
  std::vector<Column> columns;
  // FROM plugin(args), or FROM name: a LET query or a parameter. An
  // artifact called inline is a plugin named Artifact.Its.Name.
  std::string source;
  bool source_is_call = false;
  std::vector<Arg> source_args;
  Position source_pos;
  ExprPtr where;
  std::vector<ExprPtr> group_by;  // GROUP BY: one row per distinct value of these
  std::string order_by;
  bool descending = false;
  std::optional<int64_t> limit;
};

struct Let {
  Position pos;
  std::string name;
  // LET f(a, b) = ...: a function (an expression) or a plugin (a query)
  // called with these arguments, each a variable of its body.
  std::optional<std::vector<std::string>> params;
  std::vector<ExprPtr> defaults;  // of each parameter; null: none (NULL)
  bool materialized = false;  // LET x <= ...: evaluated once, where it is defined
  SelectPtr query;            // either a query
  ExprPtr expr;               // or an expression
};

struct Statement {
  std::shared_ptr<const Let> let;  // one of the two
  SelectPtr select;
  // Set on the SELECT that is an artifact source's result: the source's
  // name ("Linux.Sys.Users" or "Generic.Client.Info/Users"). When no
  // statement has one, the last SELECT is the query's result.
  std::optional<std::string> result;
};

struct Query {
  std::vector<Statement> statements;
  // An artifact's precondition: the statements run only if it gives a row.
  std::shared_ptr<const Query> precondition;
};

// The canonical form: keywords upper case, single spaces, every binary
// operation parenthesized, strings single-quoted. Parsing it gives the same tree.
std::string print(const Query& q);
std::string print(const Select& s);
std::string print(const Expr& e);

// The column name an unaliased expression gets: a variable's name,
// otherwise its canonical text without outer parentheses ("Stat.Size",
// "Pid + 1", "basename(path=FullPath)").
std::string column_name(const Column& c);

}  // namespace outpost::vql::ast
