#pragma once
// VQL's recursive-descent parser. The grammar, lowest precedence first:
//
//   query      := statement (';'? statement)* ';'?
//   statement  := LET name ('=' | '<=') (select | expr) | select
//   select     := SELECT columns FROM source [WHERE expr] [GROUP BY expr (',' expr)*]
//                 [ORDER BY name [ASC|DESC]] [LIMIT integer]
//   columns    := '*' | column (',' column)*      column := '*' | expr [AS name]
//   source     := name '(' args ')' | name
//   args       := [name '=' expr (',' name '=' expr)*]
//   expr       := and;  and := or ((AND | &&) or)*;  or := not ((OR | || | |) not)*
//                 (Velociraptor's precedence: AND binds looser than OR)
//   not        := NOT not | comparison
//   comparison := sum [('=' | '!=' | '<>' | '<' | '<=' | '>' | '>=' | '=~' | IN) sum]
//   sum        := product (('+' | '-') product)*
//   product    := unary (('*' | '/' | '%') unary)*
//   unary      := '-' unary | postfix
//   postfix    := primary ('.' name | '[' expr ']')*
//   primary    := literal | name | name '(' args ')' | '(' expr ')'
//                 | '[' [expr (',' expr)*] ']' | '{' select '}'
//
// dict(a=1) is a call the parser turns into a dict literal.

#include <string_view>

#include "queries/ast.hpp"

namespace outpost::vql {

// Queries longer than this, or nested deeper, are refused with a ParseError
// rather than parsed: a hostile query must not exhaust the stack or memory.
inline constexpr size_t kMaxQueryBytes = 1 << 20;
inline constexpr int kMaxNesting = 100;

// Throws ParseError naming the line, the column, what was found and what
// was expected.
ast::Query parse(std::string_view text);

}  // namespace outpost::vql
