#pragma once
// Running VQL in the tests: a query through an engine over a registry, all
// its rows, and each as JSON.

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "queries/engine.hpp"

namespace outpost::vql {

// What a query that waits (a program, a socket) means to the test.
enum class Waits { fail, sleep };

// Every row of `vql`, pulled `budget` rows at a time; a wait either fails
// the test (a finite query must not wait) or is slept as the stream asks.
inline std::vector<Row> run_rows_on(Engine engine, const std::string& vql, Waits waits = Waits::fail,
                                    size_t budget = 1000, std::vector<Binding> params = {}) {
  Env env;
  auto stream = engine.start(vql, std::move(params), env);
  std::vector<Row> rows;
  for (int i = 0; i < 100000; ++i) {
    Step s = stream->next(rows, budget);
    if (s.state == Step::State::done) break;
    if (s.state == Step::State::more) continue;
    if (waits == Waits::fail) ADD_FAILURE() << "a finite query waited";
    std::this_thread::sleep_for(s.wait);
  }
  return rows;
}

inline std::vector<Row> run_rows(const Registry& registry, const std::string& vql, Waits waits = Waits::fail,
                                 size_t budget = 1000, std::vector<Binding> params = {}) {
  return run_rows_on(Engine(registry), vql, waits, budget, std::move(params));
}

// With vql.allow_execve, which copy() and execve() need.
inline std::vector<Row> run_rows_allowed(const Registry& registry, const std::string& vql) {
  return run_rows_on(Engine(registry, nullptr, Permissions{true}), vql);
}

inline std::vector<std::string> json_lines(const std::vector<Row>& rows) {
  std::vector<std::string> out;
  for (auto& r : rows) out.push_back(to_json(r));
  return out;
}

inline std::string value_json(const Value& v) {
  std::string out;
  append_json(out, v);
  return out;
}

// A process_tracker_tree() node as text: name(children...), children in
// the tree's order.
inline std::string tree_shape(const Value& node) {
  auto d = node.as_dict();
  if (!d) return "?";
  std::string out = to_string(*d->find("name"));
  auto children = d->find("children");
  if (!children || children->is_null()) return out;
  out += "(";
  for (auto& child : *children->as_list()) out += (out.back() == '(' ? "" : " ") + tree_shape(child);
  return out + ")";
}

// The message of what `run` throws; "<no error>" when it throws nothing.
template <typename Run>
std::string error_of_run(Run&& run) {
  try {
    run();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace outpost::vql
