#pragma once
// Runs parsed VQL: scopes, lazy LETs, stored queries, and the streams that
// SELECT, foreach() and if() are made of.
//
// A query runs as a RowStream, its statements in order: the last SELECT's
// rows are its result (an artifact's query marks each source's result
// SELECT instead); other SELECTs run for their side effects (response
// actions) and their rows are dropped. LET x = ... is lazy (a query or
// expression evaluated where x is used); LET x <= ... is evaluated once,
// where it stands; LET f(a) = ... is a function, or a plugin when a query.

#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "queries/ast.hpp"
#include "queries/plugin.hpp"

namespace re2 {
class RE2;
}

namespace outpost::vql {

// Rows a stored query may hold when a function or a materialized LET turns
// it into a list: beyond this the query fails rather than exhaust memory.
inline constexpr size_t kMaxMaterializedRows = 100000;
// How long a stored query that waits (on a program's output) may take when
// a function or a materialized LET needs its rows: the thread waits for it.
inline constexpr std::chrono::minutes kMaxMaterializeWait{10};
// Groups a GROUP BY may hold at once, and items enumerate() may collect in
// one: beyond them the query fails rather than exhaust memory.
inline constexpr size_t kMaxGroups = 100000;
inline constexpr size_t kMaxEnumerated = 10000;

class Scope;
using ScopePtr = std::shared_ptr<const Scope>;

// A variable: a value, or a LET evaluated where it is used.
struct Binding {
  std::string name;
  Value value;
  std::shared_ptr<const ast::Let> lazy;  // set for LET x = ...
};

// Variables visible to an expression: a row's columns, then bindings, then
// the enclosing scope. Immutable once shared.
class Scope {
 public:
  Scope(ScopePtr parent, Row row, std::vector<Binding> bindings = {})
      : parent_(std::move(parent)), row_(std::move(row)), bindings_(std::move(bindings)) {}
  const ScopePtr& parent() const { return parent_; }
  const Row& row() const { return row_; }
  const Binding* binding(std::string_view name) const;

 private:
  ScopePtr parent_;
  Row row_;
  std::vector<Binding> bindings_;
};

class Engine;

// The state of one running query: what every stream and evaluation of it
// shares. Owned by the query's root stream.
struct RunContext {
  Engine& engine;  // the run's own copy (owned below), so that streams outlive the caller's Engine
  Env& env;
  ScopePtr root;
  std::shared_ptr<Engine> own_engine;
  int depth = 0;  // nested evaluations (lazy LETs, stored queries): bounded
  int artifact_depth = 0;  // artifacts calling artifacts (Artifact.X()) up to this run: bounded
  std::unordered_map<std::string, std::shared_ptr<const re2::RE2>> regexes;

  const re2::RE2& regex(const std::string& pattern);  // case-insensitive, cached
};

// A SELECT not yet run, with the scope it was written in: a LET's query, or
// a { subquery } argument.
class StoredQuery {
 public:
  StoredQuery(ast::SelectPtr select, ScopePtr scope, std::shared_ptr<RunContext> context)
      : select_(std::move(select)), scope_(std::move(scope)), context_(std::move(context)) {}
  // With `row`'s columns in scope (foreach runs its query once per row).
  std::unique_ptr<RowStream> run(const Row* row = nullptr) const;
  // All its rows; QueryError beyond kMaxMaterializedRows, for an event
  // query, or when it takes longer than kMaxMaterializeWait.
  std::vector<Row> materialize() const;
  const ast::Select& select() const { return *select_; }

 private:
  ast::SelectPtr select_;
  ScopePtr scope_;
  std::shared_ptr<RunContext> context_;
};

// Velociraptor's lambda, "x => expression": a plugin's or function's
// argument whose spec type is "lambda" is given as a string, which the
// engine compiles into this when it calls them. call() evaluates the
// expression with x bound, in the scope of the call (its variables seen).
// Used only by the thread running the query.
class Lambda final : public Object {
 public:
  Lambda(std::string text, std::string param, ast::ExprPtr body, ScopePtr scope, std::shared_ptr<RunContext> context)
      : text_(std::move(text)), param_(std::move(param)), body_(std::move(body)), scope_(std::move(scope)),
        context_(std::move(context)) {}
  // Throws QueryError naming `where` when `text` is no lambda.
  static ObjectPtr compile(const std::string& where, const std::string& text, ScopePtr scope,
                           std::shared_ptr<RunContext> context);
  Value call(const Value& argument) const;

  const char* type() const override { return "lambda"; }
  std::string str() const override { return text_; }
  std::optional<Value> member(std::string_view) const override { return std::nullopt; }
  std::vector<std::string> members() const override { return {}; }

 private:
  std::string text_, param_;
  ast::ExprPtr body_;
  ScopePtr scope_;
  std::shared_ptr<RunContext> context_;
};

// An argument whose text holds lambdas (parse_binary()'s profile): the
// text, and the scope of the call, where its lambdas compile. Engine::arguments
// makes one of a string argument whose spec type is "lambda text".
class LambdaText final : public Object {
 public:
  LambdaText(std::string text, ScopePtr scope, std::shared_ptr<RunContext> context)
      : text_(std::move(text)), scope_(std::move(scope)), context_(std::move(context)) {}
  ObjectPtr compile(const std::string& where, const std::string& lambda) const {
    return Lambda::compile(where, lambda, scope_, context_);
  }
  const char* type() const override { return "string"; }
  std::string str() const override { return text_; }
  std::optional<Value> member(std::string_view) const override { return std::nullopt; }
  std::vector<std::string> members() const override { return {}; }

 private:
  std::string text_;
  ScopePtr scope_;
  std::shared_ptr<RunContext> context_;
};

// The lambda argument `name`; null when absent.
const Lambda* lambda_arg(const Args& args, const std::string& name);

// What aggregate functions have seen so far, by the call written in the query.
using Aggregates = std::map<const ast::Expr*, Value>;

// Where an expression is evaluated: a scope, and the row being filtered or
// projected (not yet part of any scope, so that nothing is copied per row).
struct Frame {
  const ScopePtr& scope;
  const Row* row = nullptr;
  // SELECT columns that WHERE and later columns may name (their aliases),
  // evaluated against `row` when named.
  const std::vector<ast::Column>* columns = nullptr;
  // The state of the aggregate functions (count(), sum(), ...) by call:
  // the SELECT's own, or its GROUP BY group's.
  Aggregates* aggregates = nullptr;
};

// Artifacts that VQL calls as plugins: FROM Artifact.Linux.Sys.Users(...).
// Implemented by the artifact repository; const methods, safe to call from
// any thread.
class ArtifactCalls {
 public:
  // Artifacts may call each other this deep.
  static constexpr int kMaxDepth = 10;

  virtual ~ArtifactCalls() = default;
  // Throws QueryError when `name` (without "Artifact.") is no artifact or
  // does not take an argument named in `arguments`.
  virtual void check_call(const std::string& name, const std::vector<std::string>& arguments) const = 0;
  // The artifact's rows, run in a child of `caller` (its variables stay
  // visible), each with a last column _Source naming its source.
  virtual std::unique_ptr<RowStream> call(const std::string& name, const Args& arguments, const ScopePtr& caller,
                                          RunContext& context) const = 0;
};

// Names a query may call that are not in the registry: LETs defined outside
// it. `any`: every name (an artifact's imports may define it; the artifact
// is checked again once its imports are known).
struct Declared {
  std::set<std::string> names;
  bool any = false;
};

// FROM Artifact.Name(...) calls an artifact.
inline constexpr std::string_view kArtifactPrefix = "Artifact.";
inline bool is_artifact_call(std::string_view source) { return source.substr(0, kArtifactPrefix.size()) == kArtifactPrefix; }

// Where a query run by another starts (an artifact called inline).
struct Caller {
  ScopePtr scope;          // the new run's root scope is a child of it
  int artifact_depth = 0;  // of the new run
  bool label_rows = false; // rows of an artifact source's result get _Source
};

class Engine {
 public:
  // `artifacts`, when given, must outlive the engine and its queries;
  // without it Artifact.X() passes the checks and fails when run.
  explicit Engine(const Registry& registry, const ArtifactCalls* artifacts = nullptr, Permissions permissions = {})
      : registry_(registry), artifacts_(artifacts), permissions_(permissions) {}
  const Registry& registry() const { return registry_; }
  const ArtifactCalls* artifacts() const { return artifacts_; }
  const Permissions& permissions() const { return permissions_; }

  // Parses and checks (every plugin and function exists, plugins take the
  // arguments given and accept their constant values); throws ParseError or
  // QueryError.
  // A query's own LETs may be called as functions and plugins; `declared`
  // adds names defined elsewhere (an artifact's other sources).
  ast::Query compile(std::string_view vql, const Declared& declared = {}) const;
  void check(const ast::Query& query, const Declared& declared = {}) const;
  // What check() would refuse: every problem, each as its QueryError's text.
  std::vector<std::string> problems(const ast::Query& query, const Declared& declared = {}) const;

  // Runs `query` with `parameters` bound as variables: its statements in
  // order, each LET bound for those after it, after its precondition (when
  // it has one) gave a row. `env` must outlive the stream.
  std::unique_ptr<RowStream> start(const ast::Query& query, std::vector<Binding> parameters, Env& env,
                                   const Caller& caller = {});
  std::unique_ptr<RowStream> start(std::string_view vql, std::vector<Binding> parameters, Env& env) {
    return start(compile(vql), std::move(parameters), env);
  }

  // For the streams and functions.
  Value eval(const ast::Expr& e, const Frame& f, const std::shared_ptr<RunContext>& ctx);
  std::unique_ptr<RowStream> run(const ast::SelectPtr& s, const ScopePtr& scope,
                                 const std::shared_ptr<RunContext>& ctx);
  // A name's value: the row's column, a SELECT alias, a variable; NULL when none is.
  Value lookup(const std::string& name, const Frame& f, const std::shared_ptr<RunContext>& ctx) {
    return find_name(name, f, ctx).value_or(Value());
  }
  std::optional<Value> find_name(const std::string& name, const Frame& f, const std::shared_ptr<RunContext>& ctx);
  // LET name(params) = ... called: its expression's value, or its query.
  Value call_let(const std::string& name, Position pos, const std::vector<ast::Arg>& args, const Frame& f,
                 const std::shared_ptr<RunContext>& ctx, bool as_plugin = false);

 private:
  Value lazy_if(const ast::Expr& e, const Frame& f, const std::shared_ptr<RunContext>& ctx);
  Value scope_get(const ast::Expr& e, const Frame& f, const std::shared_ptr<RunContext>& ctx);
  // accessor='scope' (Velociraptor's): a path argument (file, filename,
  // files, path) names a variable with .members ("String.Data"); it becomes
  // that variable's value, as text, and the accessor 'data'.
  void read_scope_paths(std::vector<std::pair<std::string, Value>>& values, const Frame& f,
                        const std::shared_ptr<RunContext>& ctx);
  Value aggregate(const ast::Expr& e, const Frame& f, const std::shared_ptr<RunContext>& ctx);
  // The values of a call's arguments, lambdas (by `spec`) compiled.
  std::vector<std::pair<std::string, Value>> arguments(const std::string& callee, const std::vector<ast::Arg>& args,
                                                       const std::vector<ArgSpec>& spec, const Frame& f,
                                                       const std::shared_ptr<RunContext>& ctx);

  const Registry& registry_;
  const ArtifactCalls* artifacts_;
  Permissions permissions_;
};

// Rows a value stands for in FROM, foreach(row=) and if(then=): a stored
// query's (run with `row`'s columns in scope), a list's dicts, a dict;
// other items become {"_value": item}.
std::unique_ptr<RowStream> rows_of(const Value& v, const Row* row = nullptr);

// Rows of all `streams` as they come, interleaved; done when all are.
std::unique_ptr<RowStream> merge_streams(std::vector<std::unique_ptr<RowStream>> streams);
// Rows of each of `streams` in turn.
std::unique_ptr<RowStream> chain_streams(std::vector<std::unique_ptr<RowStream>> streams);

// A compiled regex for functions, cached per thread (up to 100 patterns);
// null when `pattern` is not a valid regex. Queries' own `=~` use
// RunContext::regex, cached per query.
const re2::RE2* cached_regex(const std::string& pattern, bool case_sensitive);
// Every match of `re` in `source` replaced by `tmpl`, where $1 or ${name}
// stand for a group, as Go's Regexp.Expand writes them (text_functions.cpp).
std::string replace_all(const std::string& source, const re2::RE2& re, const std::string& tmpl);

// The path of a new file in $TMPDIR (or /tmp) holding `pieces`, removed
// when the query ends (tempfile()'s; host_functions.cpp). Throws QueryError
// naming `who`.
std::string temp_file_with(Env& env, const std::vector<std::string>& pieces, const std::string& extension,
                           const std::string& who);

// False when `key` was logged by this query less than `period` ago (log()'s
// and the row errors' deduplication); else notes it now.
bool first_in(Env& env, const std::string& key, std::chrono::seconds period);

// An error of one row's function or inner query: a warning in the log (the
// same message once a minute per query); the query goes on.
void log_row_error(Env& env, const std::string& message);

// "No silent wrong answers": a name that is no column and no variable, and a
// field a value does not have (`Laddr.Port` on a string), read as NULL as
// in Velociraptor, with a warning naming what there is and the nearest name
// (once an hour per name and query).
void warn_unknown_name(Env& env, const std::string& name, const Row* row);
void warn_missing_field(Env& env, const ast::Expr& of, const Value& value, const std::string& field);

// A condition that is a query holds when it has a row; otherwise its truth.
bool condition_holds(const Value& v);

// JSON text as VQL values (objects as dicts in key order); NULL when it is
// not exactly one JSON value (parse_functions.cpp).
Value parse_json_text(std::string_view text);
// CSV text (the first record naming the columns) as rows, cells typed as
// parse_csv() types them (record_parsers.cpp).
std::vector<Row> csv_rows(const std::string& text);

// Materializes a value for functions that want data: a stored query becomes
// its rows as a list of dicts; anything else is itself.
Value materialize(const Value& v);

// The registry every agent uses: built-in functions and plugins, Linux
// plugins, event plugins.
const Registry& default_registry();
void add_builtin_functions(Registry& registry);
void add_text_functions(Registry& registry);  // regex_replace
void add_flow_functions(Registry& registry);  // if, log
void add_execve_plugin(Registry& registry);
void add_string_functions(Registry& registry);  // substr, regex_transform, humanize, commandline_split, base64
void add_collection_functions(Registry& registry);  // items, to_dict, set, flatten
void add_host_functions(Registry& registry);  // ip, host, url, tempfile
void add_record_parsers(Registry& registry);  // parse_records_with_regex, parse_csv, grok
void add_grok(Registry& registry);  // grok() (grok.cpp)
void add_http_client(Registry& registry);  // http_client() (http_client.cpp)
void add_binary_parser(Registry& registry);  // parse_binary() (binary_parser.cpp)
void add_fifo_plugin(Registry& registry);  // fifo() (fifo.cpp)
void add_yara_plugins(Registry& registry);  // yara, proc_yara (yara.cpp)
void add_sqlite_plugin(Registry& registry);  // sqlite() (sqlite.cpp)
void add_interface_plugins(Registry& registry);  // interfaces, rate (interfaces.cpp)
// rate()'s step at one call site, whose Aggregates slot is `state` (interfaces.cpp).
Value rate_step(Value& state, const Value& x, const Value& y);
void add_misc_functions(Registry& registry);  // getpid, version, pathspec, tempdir, copy, delay, query (misc_functions.cpp)
void add_xml_functions(Registry& registry);  // parse_xml() (xml.cpp)
void add_netstat_plugins(Registry& registry);  // connections (netstat.cpp)
void add_tracker_plugins(Registry& registry);  // process_tracker, process_tracker_* (tracker_plugins.cpp)
void add_journald_plugins(Registry& registry);  // parse_journald, watch_journald (journald.cpp)
void add_parse_functions(Registry& registry);  // parse_json, parse_json_array, split_records, read_file()
void add_builtin_plugins(Registry& registry);  // foreach, if

}  // namespace outpost::vql
