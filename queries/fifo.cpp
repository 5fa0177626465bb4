// fifo(query=, max_rows=, max_age=, flush=): Velociraptor's window over a
// query that runs in the background of the query that started it: each call
// gives the rows that query gave in the last max_age seconds, at most
// max_rows of them. The first call with a query starts it; the later ones
// (the same query, written once) read the same window. The background query
// is pulled by pump_background(), from the statements of the query it
// belongs to, and ends with it.

#include <spdlog/spdlog.h>

#include <chrono>
#include <deque>

#include "queries/engine.hpp"

namespace outpost::vql {
namespace {

using Clock = std::chrono::steady_clock;

class Fifo final : public Background {
 public:
  static constexpr int kCallsPerPump = 64;

  Fifo(std::unique_ptr<RowStream> source, size_t max_rows, std::chrono::seconds max_age, std::string what)
      : source_(std::move(source)), max_rows_(max_rows), max_age_(max_age), what_(std::move(what)) {}

  // Up to `budget` rows, in at most kCallsPerPump calls of its query.
  Step pump(size_t budget) override {
    if (!source_) return Step::done();
    std::vector<Row> rows;
    Step step = Step::more();
    try {
      for (int i = 0; i < kCallsPerPump && step.state == Step::State::more && rows.size() < budget; ++i)
        step = source_->next(rows, budget - rows.size());
    } catch (const std::exception& e) {  // its rows so far stay readable; it gives no more
      spdlog::warn("vql: {}: {}", what_, e.what());
      step = Step::done();
    }
    auto now = Clock::now();
    for (auto& r : rows) {
      window_.push_back({now, std::move(r)});
      if (window_.size() > max_rows_) window_.pop_front();
    }
    if (step.state == Step::State::done) source_.reset();
    return step;
  }

  std::vector<Row> rows(bool flush) {
    auto oldest = Clock::now() - max_age_;
    while (!window_.empty() && window_.front().first < oldest) window_.pop_front();
    std::vector<Row> out;
    out.reserve(window_.size());
    for (auto& [at, row] : window_) out.push_back(row);
    if (flush) window_.clear();
    return out;
  }

 private:
  std::unique_ptr<RowStream> source_;  // null once it has ended
  size_t max_rows_;
  std::chrono::seconds max_age_;
  std::string what_;
  std::deque<std::pair<Clock::time_point, Row>> window_;
};

constexpr int64_t kMaxRows = 100'000;

std::unique_ptr<RowStream> make_fifo(const Args& args, Env& env) {
  auto query = args.require("query").as_query();
  if (!query) args.fail("query", std::string("expected a query, got ") + type_name(args.require("query")));
  int64_t max_rows = args.integer("max_rows").value_or(10);  // Velociraptor's defaults
  int64_t max_age = args.integer("max_age").value_or(5);
  if (max_rows <= 0) max_rows = 10;
  if (max_age <= 0) max_age = 5;
  if (max_rows > kMaxRows) args.fail("max_rows", "at most " + std::to_string(kMaxRows));
  // One window per query written: the same LET used again reads the same one.
  std::string key = "fifo:" + std::to_string(reinterpret_cast<uintptr_t>(&query->select())) + ":" +
                    std::to_string(max_rows) + ":" + std::to_string(max_age);
  auto& slot = env.background[key];
  if (!slot)
    slot = std::make_shared<Fifo>(query->run(), static_cast<size_t>(max_rows), std::chrono::seconds(max_age),
                                  "fifo(): {" + ast::print(query->select()) + "}");
  auto& fifo = static_cast<Fifo&>(*slot);
  fifo.pump(1000);  // what is there already
  return rows_stream(fifo.rows(args.boolean("flush").value_or(false)));
}

}  // namespace

Step pump_background(Env& env, size_t budget) {
  Step step = Step::parked();
  for (auto& [key, work] : env.background) {
    Step s = work->pump(budget);
    if (s.state != Step::State::done) step = sooner(step, s);
  }
  return step;
}

void add_fifo_plugin(Registry& r) {
  r.add(PluginSpec{"fifo",
                   "The rows `query` gave in the last `max_age` seconds (default 5), at most `max_rows` (default "
                   "10): the query runs beside the one that calls fifo() from its first call, and every call "
                   "reads its window.",
                   {{"query", "query", true, "the query to keep running (an event query, usually)"},
                    {"max_rows", "int", false, "rows kept (at most 100,000)"},
                    {"max_age", "int", false, "seconds a row is kept"},
                    {"flush", "bool", false, "empty the window after this call"}},
                   false, make_fifo});
}

}  // namespace outpost::vql
