#pragma once
// What VQL plugins and functions are made of: evaluated arguments in, rows
// or a value out. Plugins run cooperatively: a RowStream does a bounded
// slice of work per call, so that no query holds a CAF worker thread.

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "queries/value.hpp"

namespace caf {
class actor_system;
}

namespace outpost::vql {

// A query that cannot run: bad arguments, an unknown plugin, a failed
// plugin. The message names the plugin or function and the argument.
class QueryError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Step {
  enum class State {
    more,     // call again at once (even when no row came: the work is sliced)
    wait,     // nothing until `wait` has passed (a periodic plugin)
    parked,  // nothing until Env::wake is called (an event from a sensor)
    done,
  };
  State state = State::more;
  std::chrono::nanoseconds wait{0};

  static Step more() { return {}; }
  static Step done() { return {State::done, {}}; }
  static Step parked() { return {State::parked, {}}; }
  static Step after(std::chrono::nanoseconds d) { return {State::wait, d}; }
};

// The sooner of two steps of streams that go on: more, then the shorter
// wait, then the other (parked).
inline Step sooner(const Step& a, const Step& b) {
  if (a.state == Step::State::more || b.state == Step::State::more) return Step::more();
  if (a.state == Step::State::wait && b.state == Step::State::wait) return a.wait < b.wait ? a : b;
  return a.state == Step::State::wait ? a : b;
}

class RowStream {
 public:
  // noexcept(false), as KJ's own interfaces: an implementation may own a
  // kj::AutoCloseFd, whose destructor throws a failed close.
  virtual ~RowStream() noexcept(false) = default;
  // Appends at most `budget` rows to `out` after bounded work. Throws
  // QueryError (or any std::exception) when the plugin fails.
  virtual Step next(std::vector<Row>& out, size_t budget) = 0;
};

// The arguments of one call, evaluated, by name.
class Args {
 public:
  Args(std::string callee, std::vector<std::pair<std::string, Value>> values)
      : callee_(std::move(callee)), values_(std::move(values)) {}
  const std::string& callee() const { return callee_; }
  const std::vector<std::pair<std::string, Value>>& values() const { return values_; }

  // NULL or absent: nullptr.
  const Value* find(const std::string& name) const;
  // Written in the call, even as NULL.
  bool given(const std::string& name) const;
  // The typed getters throw QueryError "<callee>(): <name>: expected <type>, got <type>"
  // when the argument has another type, and, for `require`, when it is missing.
  const Value& require(const std::string& name) const;
  std::optional<std::string> string(const std::string& name) const;
  std::optional<int64_t> integer(const std::string& name) const;
  std::optional<bool> boolean(const std::string& name) const;
  // A string or a list of strings (VQL lets either stand for a list).
  std::vector<std::string> strings(const std::string& name) const;

  [[noreturn]] void fail(const std::string& name, const std::string& problem) const;

 private:
  std::string callee_;
  std::vector<std::pair<std::string, Value>> values_;
};

// A string argument that check_args has already required; checked again so
// that a caller skipping check_args gets an error, not undefined behaviour.
// A NULL given reads as "", as Velociraptor reads it.
inline std::string required_string(const Args& args, const std::string& name) {
  auto s = args.string(name);
  if (!s && !args.given(name)) args.fail(name, "required");
  return s.value_or("");
}

// Where plugins look, so that tests point them at fixtures.
struct Paths {
  std::filesystem::path proc = "/proc";
  std::filesystem::path sys = "/sys";
  std::filesystem::path passwd = "/etc/passwd";
  std::filesystem::path mountinfo = "/proc/self/mountinfo";
  std::vector<std::filesystem::path> os_release = {"/etc/os-release", "/usr/lib/os-release"};  // first found
};

// A piece of a process's address space (accessor="process").
struct MemoryRange {
  uint64_t start = 0, length = 0;
};

// A file upload() asked for, streamed after its row (uploads.hpp).
struct UploadRequest {
  std::string path;    // the name the collector stores it under
  std::string source;  // the file read: the path itself, or /proc/PID/mem
  // Empty: the whole file. Else these ranges of it, one after another (a
  // process's readable memory, whose addresses upload() returns).
  std::vector<MemoryRange> ranges;
};

// What the agent's configuration lets queries do beyond reading the host.
struct Permissions {
  bool execve = false;  // execve() may run programs (vql.allow_execve)
};

// Thrown by a function that did a bounded slice of its work and must be
// called again, with the same arguments, to go on (hash() of a big file).
// Only while Env::slicing.work is set; the SelectStream that set it catches
// it and evaluates the row again in its next call, the work done so far
// waiting in `work`. Not a std::exception: nothing else may take it for an error.
struct Unfinished {};

// Work a function may spread over a query's calls (see Unfinished). Like
// the rest of Env, used only by the thread running the query's stream.
struct Slicing {
  // Bytes a function may read per call of a query (hash(): a few ms of digests).
  static constexpr size_t kBytesPerCall = size_t{1} << 20;
  // Set while a row is evaluated that can be taken up again; null otherwise
  // (a function then does all its work at once). Keyed by the function and
  // its argument ("hash:/bin/ls"); the row's finished work stays until the
  // row is done, so that taking it up again does not repeat it.
  std::map<std::string, std::shared_ptr<void>>* work = nullptr;
  size_t budget = kBytesPerCall;  // left in this call: when 0, Unfinished
};

class Engine;      // engine.hpp: plugins that run queries (foreach) reach it here
class SensorHub;   // sensors.hpp: where event plugins subscribe

// The paths every query uses unless told otherwise.
const std::shared_ptr<const Paths>& default_paths();

// Files and directories a query made (tempfile(), tempdir()), removed (a
// directory with all in it) when it ends (host_functions.cpp).
class TempFiles {
 public:
  TempFiles() = default;
  TempFiles(const TempFiles&) = delete;
  TempFiles& operator=(const TempFiles&) = delete;
  ~TempFiles();
  void add(std::string path) { paths_.push_back(std::move(path)); }

 private:
  std::vector<std::string> paths_;
};

// A query a query keeps running beside its own rows (fifo()'s): pulled by
// pump_background() from the query's statements before their rows.
class Background {
 public:
  virtual ~Background() = default;
  // One bounded slice of its work, as RowStream::next.
  virtual Step pump(size_t budget) = 0;
};

// One query's surroundings.
struct Env {
  // Shared, not copied: a Paths costs ~1.3 KB (std::filesystem::path
  // allocates its components), and an agent runs thousands of queries.
  std::shared_ptr<const Paths> paths = default_paths();
  // Called (from any thread) by event sources when rows are waiting; the
  // query then pulls again. Empty when nobody waits (a test, a one-shot run).
  std::function<void()> wake;
  Engine* engine = nullptr;
  SensorHub* sensors = nullptr;  // null: event plugins refuse to start
  caf::actor_system* system = nullptr;  // the agent's, whose actors actors() lists; null: none
  uint64_t dropped_events = 0;   // missed by this query's subscriptions; reported, then reset
  std::vector<UploadRequest> upload_requests;  // upload(): files to stream into the uploads lane
  Slicing slicing;
  Permissions permissions;  // the engine's, set when a query starts
  // log(): when each message format was last logged (its deduplication).
  std::map<std::string, std::chrono::steady_clock::time_point> logged;
  TempFiles temp_files;
  // Last, so that it goes first: what runs there still sees the rest.
  std::map<std::string, std::shared_ptr<Background>> background;
};

// A slice of every background query of `env`; the soonest step any of them
// wants (parked when there are none). Used only by the query's thread.
Step pump_background(Env& env, size_t budget);

struct ArgSpec {
  std::string name;
  std::string type;  // as shown to users: "string", "int", "list of strings", "query"...
  bool required = false;
  std::string description;
};

struct PluginSpec {
  std::string name;
  std::string description;
  std::vector<ArgSpec> args;
  bool event = false;  // never ends by itself
  // Arguments are checked against `args` (unknown names refused) before this runs.
  std::function<std::unique_ptr<RowStream>(const Args&, Env&)> make;
};

// Refuses bad argument values of a plugin (a clock period of 0) with a
// QueryError naming the plugin and argument. Engine::check calls it before a
// query starts with the arguments written as constants (the others absent);
// the plugin's make() must check the evaluated values again.
using ArgCheck = std::function<void(const Args&)>;

struct FunctionSpec {
  std::string name;
  std::string description;
  std::vector<ArgSpec> args;
  std::function<Value(const Args&, Env&)> call;
};

// Every plugin and function the engine knows, by name.
class Registry {
 public:
  void add(PluginSpec spec);
  void add(PluginSpec spec, ArgCheck check);
  void add(FunctionSpec spec);
  const PluginSpec* plugin(const std::string& name) const;
  const ArgCheck* check(const std::string& plugin) const;  // null: none
  const FunctionSpec* function(const std::string& name) const;
  const std::map<std::string, PluginSpec>& plugins() const { return plugins_; }
  const std::map<std::string, FunctionSpec>& functions() const { return functions_; }

 private:
  std::map<std::string, PluginSpec> plugins_;
  std::map<std::string, FunctionSpec> functions_;
  std::map<std::string, ArgCheck> checks_;
};

// Refuses an argument `spec` does not name (unless it has one named "*":
// any name goes), and a missing required one.
void check_args(const Args& args, const std::vector<ArgSpec>& spec);
// Refuses only an argument `spec` does not name (the values may be unknown yet).
void check_arg_names(const Args& args, const std::vector<ArgSpec>& spec);

// A finite stream over rows computed at once (small results: users, mounts).
std::unique_ptr<RowStream> rows_stream(std::vector<Row> rows);

}  // namespace outpost::vql
