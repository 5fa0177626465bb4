#pragma once
// The host's own VQL plugins and functions (AgentOptions::plugins and
// ::functions): its queries call them as they call the built-in ones,
//   SELECT * FROM host_users(group="admin") WHERE risky(name=User)
// A plugin makes rows in bounded slices, as the built-in plugins do, so
// that no query holds one of the agent's threads: thousands of queries share
// a few of them.
//
// Threads: open(), next() and a stream's destructor run on the thread that
// runs its query (one of the agent's workers; the host's own thread inside
// run_query()); one call at a time per stream, but the streams of different
// queries run at once on different threads. A function's call() runs there
// too, once per row that names it. None of them may call the Agent.

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "outpost/values.hpp"

namespace outpost {

// The arguments of one call, evaluated, by name, in the order written. An
// argument the query left out is absent; NULL is a null Value. A list, a dict
// or a query's rows arrive as their JSON text, a timestamp as RFC 3339 text.
class Arguments {
 public:
  Arguments() = default;
  Arguments(std::vector<std::pair<std::string, Value>> values, std::string json)
      : values_(std::move(values)), json_(std::move(json)) {}
  const std::vector<std::pair<std::string, Value>>& values() const { return values_; }
  // All of them as one JSON object, lists and dicts nested in it.
  const std::string& json() const { return json_; }
  // The argument `name`; nullptr when absent or NULL.
  const Value* find(const std::string& name) const {
    for (auto& [n, v] : values_)
      if (n == name) return std::holds_alternative<std::nullptr_t>(v) ? nullptr : &v;
    return nullptr;
  }

 private:
  std::vector<std::pair<std::string, Value>> values_;
  std::string json_;
};

// One argument a plugin or function takes. A query that names any other is
// refused before it starts, as is one that leaves out a required argument
// (an argument named "*" lets every name through).
struct ArgumentDef {
  std::string name;
  std::string type;  // as shown to users in errors and listings: "string", "int"...
  bool required = false;
  std::string description;
};

// What a stream says after a slice.
struct PluginStep {
  enum class State {
    more,    // call next() again at once (also when this slice made no row)
    wait,    // call next() again after `wait` (a periodic source)
    parked,  // call next() again once the wake callback was called
    done,    // no more rows
  };
  State state = State::more;
  std::chrono::nanoseconds wait{0};

  static PluginStep more() { return {}; }
  static PluginStep after(std::chrono::nanoseconds d) { return {State::wait, d}; }
  static PluginStep parked() { return {State::parked, {}}; }
  static PluginStep done() { return {State::done, {}}; }
};

// The rows of one call of a plugin. Destroyed when its query ends, is
// cancelled or fails, or its agent stops.
class PluginStream {
 public:
  virtual ~PluginStream() = default;
  // Appends up to `budget` rows to `rows` after a bounded slice of work (a
  // few milliseconds; it must not block). Rows beyond `budget` wait for the
  // next call. What it throws fails its query (the message says which
  // plugin) and nothing else: the agent restarts a configured query later,
  // run_query() answers query_failed.
  virtual PluginStep next(std::vector<Row>& rows, size_t budget) = 0;
};

// Wakes a parked stream: any thread, any time (also after the stream is
// gone, when it does nothing). Blocks on nothing.
using WakeCallback = std::function<void()>;

struct PluginDef {
  std::string name;         // as VQL calls it: letters, digits and '_', not a built-in's
  std::string description;
  std::vector<ArgumentDef> args;
  bool event = false;       // its rows never end by themselves (as watch_processes'), for listings
  // Opens one call. What it throws (a bad argument value) fails the query.
  std::function<std::unique_ptr<PluginStream>(const Arguments& args, WakeCallback wake)> open;
};

struct FunctionDef {
  std::string name;  // as VQL calls it: letters, digits and '_', not a built-in's
  std::string description;
  std::vector<ArgumentDef> args;
  // Returns at once (it runs once per row). What it throws fails the query.
  std::function<Value(const Arguments& args)> call;
};

}  // namespace outpost
