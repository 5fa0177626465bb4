// Small Velociraptor functions and plugins: getpid(), version(), pathspec(),
// tempdir(), copy(), and the delay() and query() plugins.

#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>

#include "queries/engine.hpp"
#include "queries/linux_util.hpp"
#include "queries/os_objects.hpp"

namespace outpost::vql {
namespace {

using Clock = std::chrono::steady_clock;

// Bytes copy() writes at most: it works at once, holding the query's thread.
constexpr int64_t kMaxCopyBytes = int64_t{64} << 20;
constexpr std::chrono::seconds kMaxDelay{86400};

// query()s running each other on this thread (a stored query that runs
// itself, an artifact whose text query calls it): bounded as artifacts
// calling artifacts are, rather than exhausting the stack.
thread_local int query_nesting = 0;
class Nested {
 public:
  Nested() {
    if (query_nesting >= ArtifactCalls::kMaxDepth)
      throw QueryError("query(): queries run each other more than " + std::to_string(ArtifactCalls::kMaxDepth) +
                       " deep (does one run itself?)");
    ++query_nesting;
  }
  ~Nested() { --query_nesting; }
  Nested(const Nested&) = delete;
  Nested& operator=(const Nested&) = delete;
};

// 1 for a function or plugin this agent has, NULL for one it lacks (an
// artifact's test of presence); 0, logged, when neither is named. Outpost
// keeps no versions: a test for a later one (`> 1`) takes the older branch.
Value version(const Args& a, Env& env) {
  std::string plugin = a.string("plugin").value_or(""), function = a.string("function").value_or("");
  if (plugin.empty() && function.empty()) {
    log_row_error(env, "version(): give function= or plugin=");
    return int64_t{0};
  }
  if (!env.engine) throw QueryError("version(): no engine runs this query");
  const Registry& registry = env.engine->registry();
  bool known = plugin.empty() ? registry.function(function) != nullptr : registry.plugin(plugin) != nullptr;
  return known ? Value(int64_t{1}) : Value();
}

// Velociraptor's generic path syntax: '/' and '\' separate components; a
// component in double quotes may hold them ("" is a quote in it). Empty
// components, "." and ".." are dropped.
std::vector<std::string> generic_components(std::string_view text) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < text.size()) {
    std::string part;
    if (text[at] == '"') {
      for (++at; at < text.size(); ++at) {
        if (text[at] != '"') {
          part += text[at];
        } else if (at + 1 < text.size() && text[at + 1] == '"') {
          part += '"';
          ++at;
        } else {
          ++at;
          break;
        }
      }
    }
    while (at < text.size() && text[at] != '/' && text[at] != '\\') part += text[at++];
    if (!part.empty() && part != "." && part != "..") out.push_back(std::move(part));
    ++at;  // the separator
  }
  return out;
}

std::string joined(const std::vector<std::string>& c) {
  std::string out;
  for (auto& part : c) out += '/' + part;
  return out;
}

// Velociraptor's JSON pathspec, the empty members left out.
Dict spec_of(const std::vector<std::string>& c, const std::string& accessor = "", const std::string& delegate = "") {
  Dict spec;
  if (!accessor.empty()) spec.set("DelegateAccessor", accessor);
  if (!delegate.empty()) spec.set("DelegatePath", delegate);
  if (!c.empty()) spec.set("Path", joined(c));
  return spec;
}

// A path to open through another accessor's file (a zip member): Path's
// components with DelegateAccessor and DelegatePath. Its text is the JSON
// pathspec, {"DelegateAccessor":..,"DelegatePath":..,"Path":..} without
// the empty ones, as Velociraptor writes it.
class DelegatedPath final : public PathObject {
 public:
  DelegatedPath(std::vector<std::string> c, std::string accessor, std::string delegate)
      : PathObject(std::move(c)), accessor_(std::move(accessor)), delegate_(std::move(delegate)) {}

  std::string str() const override { return to_string(Value(spec_of(c_, accessor_, delegate_))); }
  std::optional<Value> member(std::string_view name) const override {
    if (name == "Path") return Value(joined(c_));
    if (name == "String") return Value(str());
    if (name == "HumanString") return Value(delegate_ + " -> " + joined(c_));
    if (name == "DelegateAccessor") return Value(accessor_);
    if (name == "DelegatePath") return Value(delegate_);
    return PathObject::member(name);
  }
  std::vector<std::string> members() const override {
    return {"Basename", "Components", "DelegateAccessor", "DelegatePath", "Dirname", "HumanString", "Path", "String"};
  }

 private:
  std::vector<std::string> split(std::string_view text) const override { return generic_components(text); }
  Value with(std::vector<std::string> c) const override {
    return Value(ObjectPtr(std::make_shared<const DelegatedPath>(std::move(c), accessor_, delegate_)));
  }

  std::string accessor_, delegate_;
};

// A plain path (the OSPath of glob()'s rows) when nothing is delegated.
Value make_path(std::vector<std::string> c, std::string accessor, std::string delegate) {
  if (accessor.empty() && delegate.empty()) return os_path(std::move(c));
  return Value(ObjectPtr(std::make_shared<const DelegatedPath>(std::move(c), std::move(accessor), std::move(delegate))));
}

std::vector<std::string> components_of(const Args& a, const std::string& text) {
  std::string type = a.string("path_type").value_or("");
  if (type == "linux") return *path_components(os_path(text));
  if (type.empty() || type == "generic") return generic_components(text);
  a.fail("path_type", "\"" + type + "\" is not supported: linux or generic");
}

// parse=: a path, or a JSON pathspec when it starts with '{'.
Value parse_pathspec(const Args& a, const std::string& text) {
  if (text[0] != '{') return make_path(components_of(a, text), "", "");
  Value json = parse_json_text(text);
  auto spec = json.as_dict();
  if (!spec) a.fail("parse", "not a JSON pathspec: " + text);
  auto field = [&](const char* name) {
    auto v = spec->find(name);
    return v && v->as_string() ? *v->as_string() : std::string();
  };
  std::string delegate = field("DelegatePath");
  if (auto nested = spec->find("Delegate"); nested && nested->as_dict()) delegate = to_string(*nested);
  return make_path(components_of(a, field("Path")), field("DelegateAccessor"), delegate);
}

Value pathspec(const Args& a, Env&) {
  if (auto text = a.string("parse"); text && !text->empty()) return parse_pathspec(a, *text);
  std::string path = a.string("Path").value_or("");
  if (a.string("accessor").value_or("") != "") {
    accessor_of(a, {Accessor::ext4, Accessor::process});  // refuses the others
    return os_path(path);  // as Velociraptor: the accessor's path, the delegate arguments dropped
  }
  std::string delegate = a.string("DelegatePath").value_or("");
  if (auto d = a.find("Delegate")) {
    if (d->as_dict()) delegate = to_string(*d);
    else if (auto c = path_components(*d)) delegate = to_string(Value(spec_of(*c)));
    else if (dynamic_cast<const DelegatedPath*>(d->as_object())) delegate = d->as_object()->str();
    else a.fail("Delegate", std::string("expected a pathspec, got ") + type_name(*d));
  }
  return make_path(components_of(a, path), a.string("DelegateAccessor").value_or(""), delegate);
}

// A new directory in $TMPDIR (or /tmp), removed with all in it when the query ends.
Value tempdir(const Args& a, Env& env) {
  (void)a.boolean("remove_last");  // accepted: removed at the query's end anyway
  std::string dir = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
  std::string path = dir + "/outpost-tmp-XXXXXX";
  if (!::mkdtemp(path.data())) throw QueryError("tempdir(): cannot create in " + dir + ": " + std::strerror(errno));
  env.temp_files.add(path);
  return path;
}

// Velociraptor's permission text: octal when it starts with '0' ("0755"),
// "x" for rwx------, else letters in rwxrwxrwx's places or '-' ("rw-r--r--",
// the rest '-').
mode_t file_mode_of(const Args& a, const std::string& name, mode_t otherwise) {
  auto text = a.string(name).value_or("");
  if (text.empty()) return otherwise;
  if (text[0] == '0') {
    char* end = nullptr;
    unsigned long mode = std::strtoul(text.c_str(), &end, 0);
    if (*end) a.fail(name, "\"" + text + "\" is not an octal mode");
    return static_cast<mode_t>(mode & 0777);
  }
  if (text == "x") text = "rwx";
  static const char kLetters[] = "rwxrwxrwx";
  mode_t mode = 0;
  for (size_t i = 0; i < 9 && i < text.size(); ++i) {
    if (text[i] == '-') continue;
    if (text[i] != kLetters[i]) a.fail(name, "\"" + text + "\": expected " + kLetters[i] + " or - at " + std::to_string(i));
    mode |= 1u << (8 - i);
  }
  return mode;
}

// mkdir -p, new directories with `mode`.
bool make_directories(const std::string& dir, mode_t mode) {
  for (size_t at = 1; at <= dir.size(); ++at)
    if ((at == dir.size() || dir[at] == '/') && ::mkdir(dir.substr(0, at).c_str(), mode) != 0 && errno != EEXIST)
      return false;
  return true;
}

// The file (or with accessor='data' the text) `filename` written to `dest`;
// returns dest. At most kMaxCopyBytes.
Value copy_file(const Args& a, Env& env) {
  if (!env.permissions.execve)
    throw QueryError("copy(): refused: this agent's configuration does not let queries write files "
                     "(vql.allow_execve: true allows it)");
  std::string from = required_string(a, "filename"), dest = required_string(a, "dest");
  if (dest.empty()) a.fail("dest", "expected a path, got \"\"");
  mode_t mode = file_mode_of(a, "permissions", 0600), dir_mode = file_mode_of(a, "dir_permissions", 0700);
  bool data = accessor_of(a, {Accessor::data}) == Accessor::data;
  auto too_big = [&] { a.fail("filename", "more than " + std::to_string(kMaxCopyBytes >> 20) + " MiB: not copied"); };
  kj::AutoCloseFd in;
  if (!data) {
    in = open_read(from);
    if (in == nullptr) a.fail("filename", "cannot open " + from + ": " + errno_message(errno));
    if (auto why = not_a_finite_file(in.get()); !why.empty()) a.fail("filename", from + ": " + why);
    struct stat st;
    if (::fstat(in.get(), &st) == 0 && st.st_size > kMaxCopyBytes) too_big();
  } else if (from.size() > static_cast<size_t>(kMaxCopyBytes)) {
    too_big();
  }
  if (a.boolean("create_directories").value_or(false)) {
    auto slash = dest.rfind('/');
    if (slash != std::string::npos && slash > 0 && !make_directories(dest.substr(0, slash), dir_mode))
      a.fail("dest", "cannot create the directories of " + dest + ": " + errno_message(errno));
  }
  // As Velociraptor: appending needs the file to be there.
  int flags = a.boolean("append").value_or(false) ? O_WRONLY | O_APPEND : O_RDWR | O_CREAT | O_TRUNC;
  // O_NONBLOCK: a FIFO without a reader fails rather than hold the thread.
  // A failed close is a failed copy: NFS and FUSE report write errors there.
  auto closed = [&](kj::AutoCloseFd& fd) -> Value {
    if (int error = close_file(fd)) a.fail("dest", "writing " + dest + ": " + errno_message(error));
    return dest;
  };
  kj::AutoCloseFd out(::open(dest.c_str(), flags | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, mode));
  if (out == nullptr) a.fail("dest", "cannot open " + dest + " for writing: " + errno_message(errno));
  if (data) {
    if (int error = write_all(out.get(), from.data(), from.size()))
      a.fail("dest", "writing " + dest + ": " + errno_message(error));
    return closed(out);
  }
  std::string buf(256 << 10, '\0');
  for (int64_t copied = 0;;) {
    ssize_t n = read_retry(in.get(), buf.data(), buf.size());
    if (n < 0) a.fail("filename", "reading " + from + ": " + errno_message(errno));
    if (n == 0) {
      close_file(in);  // read to its end: a close error adds nothing
      return closed(out);
    }
    if ((copied += n) > kMaxCopyBytes) too_big();  // it grew
    if (int error = write_all(out.get(), buf.data(), static_cast<size_t>(n)))
      a.fail("dest", "writing " + dest + ": " + errno_message(error));
  }
}

// Rows of `inner`, each `delay` after it came; at most `capacity` held
// (the inner query is not pulled while they are).
class DelayStream : public RowStream {
 public:
  DelayStream(std::unique_ptr<RowStream> inner, std::chrono::seconds delay, size_t capacity)
      : inner_(std::move(inner)), delay_(delay), capacity_(capacity) {}

  Step next(std::vector<Row>& out, size_t budget) override {
    Step in = Step::parked();  // the inner query's: none when it is not pulled
    if (inner_ && held_.size() < capacity_) {
      std::vector<Row> rows;
      in = inner_->next(rows, std::max<size_t>(1, std::min(budget, capacity_ - held_.size())));
      auto due = Clock::now() + delay_;
      for (auto& row : rows) held_.push_back({due, std::move(row)});
      if (in.state == Step::State::done) {
        inner_.reset();
        in = Step::parked();
      }
    }
    auto now = Clock::now();
    for (; budget > 0 && !held_.empty() && held_.front().due <= now; --budget) {
      out.push_back(std::move(held_.front().row));
      held_.pop_front();
    }
    if (held_.empty()) return inner_ ? in : Step::done();
    if (held_.front().due <= now) return Step::more();  // the budget ran out
    return sooner(in, Step::after(held_.front().due - now));
  }

 private:
  struct Held {
    Clock::time_point due;
    Row row;
  };
  std::unique_ptr<RowStream> inner_;  // null once it ended
  std::chrono::seconds delay_;
  size_t capacity_;
  std::deque<Held> held_;
};

void check_delay(const Args& a) {
  if (auto d = a.integer("delay"); d && (*d < 0 || *d > kMaxDelay.count()))
    a.fail("delay", "expected 0 to " + std::to_string(kMaxDelay.count()) + " seconds");
  if (auto n = a.integer("buffer_size"); n && *n < 0) a.fail("buffer_size", "expected rows >= 0");
}

std::unique_ptr<RowStream> delay_plugin(const Args& a, Env&) {
  check_delay(a);
  const Value& query = a.require("query");
  auto delay = a.integer("delay");
  if (!delay) a.fail("delay", "required");
  int64_t size = a.integer("buffer_size").value_or(0);
  size_t capacity = size == 0 ? 1000 : std::min(static_cast<size_t>(size), kMaxMaterializedRows);
  return std::make_unique<DelayStream>(rows_of(query), std::chrono::seconds(*delay), capacity);
}

// The rows of `inner` until `deadline` passes or `exit` holds for one (that
// row not given).
class QueryStream : public RowStream {
 public:
  QueryStream(std::unique_ptr<RowStream> inner, std::optional<Clock::time_point> deadline, Value exit)
      : inner_(std::move(inner)), deadline_(deadline), exit_(std::move(exit)) {}

  Step next(std::vector<Row>& out, size_t budget) override {
    if (!inner_ || (deadline_ && Clock::now() >= *deadline_)) return end();
    std::vector<Row> rows;
    Step step;
    {
      Nested nested;
      step = inner_->next(rows, budget);
    }
    auto exit = dynamic_cast<const Lambda*>(exit_.as_object());
    for (auto& row : rows) {
      if (exit && truthy(exit->call(Value(row)))) return end();
      out.push_back(std::move(row));
    }
    if (step.state == Step::State::done) return end();
    if (!deadline_) return step;
    auto left = std::max(*deadline_ - Clock::now(), Clock::duration::zero());
    return sooner(step, Step::after(left));
  }

 private:
  Step end() {
    inner_.reset();
    return Step::done();
  }

  std::unique_ptr<RowStream> inner_;
  std::optional<Clock::time_point> deadline_;
  Value exit_;  // a Lambda, or NULL
};

std::unique_ptr<RowStream> query_plugin(const Args& a, Env& env) {
  const Value& query = a.require("query");
  Row vars;
  if (auto e = a.find("env")) {
    if (!e->as_dict()) a.fail("env", std::string("expected a dict, got ") + type_name(*e));
    vars = *e->as_dict();
  }
  (void)a.strings("copy_env");  // checked; a stored query sees the caller's variables anyway
  bool inherit = a.boolean("inherit").value_or(false);
  std::optional<Clock::time_point> deadline;
  if (auto t = a.find("timeout")) {
    auto seconds = t->number();
    if (!seconds) a.fail("timeout", std::string("expected seconds, got ") + type_name(*t));
    if (*seconds > 0)
      deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(std::min(*seconds, 1e9)));
  }
  const Value* exit = a.find("exit");
  if (exit && !lambda_arg(a, "exit")) a.fail("exit", std::string("expected a lambda, got ") + type_name(*exit));
  std::unique_ptr<RowStream> inner;
  Nested nested;
  if (auto stored = query.as_query()) {
    inner = stored->run(vars.empty() ? nullptr : &vars);
  } else if (auto text = query.as_string()) {
    if (inherit) a.fail("inherit", "a query given as text cannot see the caller's variables: give it as {...}");
    if (a.find("copy_env")) a.fail("copy_env", "a query given as text cannot see the caller's variables: use env");
    Engine* engine = env.engine;
    if (!engine) throw QueryError("query(): no engine runs this query");
    try {
      ast::Query parsed = engine->compile(*text);
      for (auto& statement : parsed.statements)  // as Velociraptor: the rows of every SELECT
        if (statement.select) statement.result = "";
      std::vector<Binding> bindings;
      for (auto& [name, value] : vars.items()) bindings.push_back({name, value, nullptr});
      inner = engine->start(parsed, std::move(bindings), env);
    } catch (const std::exception& e) {
      env.engine = engine;
      a.fail("query", e.what());
    }
    env.engine = engine;  // start() pointed it at the new run's own engine, which may end before ours
  } else {
    a.fail("query", std::string("expected a query or its text, got ") + type_name(query));
  }
  return std::make_unique<QueryStream>(std::move(inner), deadline, exit ? *exit : Value());
}

}  // namespace

void add_misc_functions(Registry& r) {
  r.add(FunctionSpec{"getpid", "The agent's process id.", {},
                     [](const Args&, Env&) -> Value { return int64_t{::getpid()}; }});
  r.add(FunctionSpec{"version",
                     "1 when this agent has the function (or plugin) named, NULL when it does not; 0 when "
                     "neither is named.",
                     {{"function", "string", false, ""}, {"plugin", "string", false, "checked instead of function"}},
                     version});
  r.add(FunctionSpec{"pathspec",
                     "A path: parsed from `parse` (text, or a JSON pathspec), or `Path` with DelegateAccessor and "
                     "DelegatePath (an accessor reading inside another file), which then renders as JSON.",
                     {{"parse", "string", false, ""},
                      {"path_type", "string", false, "linux, or generic (default: '/' and '\\' separate)"},
                      {"Path", "string", false, ""},
                      {"DelegateAccessor", "string", false, ""},
                      {"DelegatePath", "string", false, ""},
                      {"Delegate", "path or dict", false, "a pathspec, as DelegatePath"},
                      {"accessor", "string", false, "file, auto, ext4 or process: Path as it parses it"}},
                     pathspec});
  r.add(FunctionSpec{"tempdir", "The path of a new directory in $TMPDIR (or /tmp), removed with all in it when the "
                                "query ends.",
                     {{"remove_last", "bool", false, "accepted; removed at the query's end anyway"}}, tempdir});
  r.add(FunctionSpec{"copy",
                     "Copies a file (up to 64 MiB) to `dest` and returns dest; needs vql.allow_execve, as "
                     "Velociraptor's needs execve allowed.",
                     {{"filename", "string", true, "the file (with accessor='data': the content)"},
                      {"accessor", "string", false, "file (default), auto or data"},
                      {"dest", "string", true, ""},
                      {"permissions", "string", false, "\"0755\", \"rw-r--r--\" or \"x\"; default 0600"},
                      {"dir_permissions", "string", false, "of directories made; default 0700"},
                      {"append", "bool", false, "append to dest, which must exist; default: replace it"},
                      {"create_directories", "bool", false, "make dest's missing directories"}},
                     copy_file});
  r.add(PluginSpec{"delay", "The rows of `query`, each `delay` seconds after it came.",
                   {{"query", "query", true, ""},
                    {"delay", "int", true, "seconds, up to a day"},
                    {"buffer_size", "int", false, "rows held at most (default 1000, up to 100000); the query "
                                                  "waits while they are"}},
                   false, delay_plugin},
        check_delay);
  r.add(PluginSpec{"query",
                   "The rows of `query` (a query, or VQL text whose SELECTs all give rows) as they come, with "
                   "`env`'s members as variables.",
                   {{"query", "query or string", true, ""},
                    {"env", "dict", false, "variables"},
                    {"copy_env", "list of strings", false, "accepted for a stored query, which sees the caller's "
                                                           "variables anyway"},
                    {"inherit", "bool", false, "for a stored query, which always does; refused for text"},
                    {"timeout", "float", false, "seconds; the query ends then"},
                    {"exit", "lambda", false, "ends the query at the first row for which it holds"},
                    {"cpu_limit", "float", false, "ignored"},
                    {"iops_limit", "float", false, "ignored"},
                    {"progress_timeout", "float", false, "ignored"}},
                   false, query_plugin});
}

}  // namespace outpost::vql
