// The streams a query runs as: SELECT over a plugin or a variable, the
// statement sequence, and the foreach() and if() plugins.

#include <algorithm>
#include <functional>
#include <map>
#include <thread>
#include <unordered_map>

#include "queries/engine.hpp"

namespace outpost::vql {

const Binding* Scope::binding(std::string_view name) const {
  for (auto it = bindings_.rbegin(); it != bindings_.rend(); ++it)
    if (it->name == name) return &*it;
  return nullptr;
}

// A `{SELECT ...}` column's value, as Velociraptor gives it: its rows, each
// row of one column as that column's value, and one row as itself, not a list.
// foreach()'s row= as given: NULL given (a parser's NULL for a file that
// did not parse) is no rows, as in Velociraptor; absent is refused.
static const Value& foreach_rows(const Args& args) {
  static const Value none;
  if (auto v = args.find("row")) return *v;
  if (args.given("row")) return none;
  return args.require("row");
}

static Value subquery_column(const Value& query) {
  Value rows = materialize(query);
  auto list = rows.as_list();
  if (!list) return rows;
  List out;
  out.reserve(list->size());
  for (auto& r : *list) {
    auto d = r.as_dict();
    out.push_back(d && d->size() == 1 ? d->items()[0].second : r);
  }
  if (out.size() == 1) return std::move(out[0]);
  return Value(std::move(out));
}

std::unique_ptr<RowStream> rows_of(const Value& v, const Row* row) {
  if (auto q = v.as_query()) return q->run(row);
  std::vector<Row> rows;
  auto add = [&rows](const Value& item, bool in_list) {
    if (auto d = item.as_dict()) {
      rows.push_back(*d);
    } else if (auto o = item.as_object(); o && !(in_list && o->wrapped_as_item()) && o->row()) {
      rows.push_back(*o->row());
    } else {
      Row r;
      r.set("_value", item);
      rows.push_back(std::move(r));
    }
  };
  if (auto l = v.as_list())
    for (auto& item : *l) add(item, true);
  else if (!v.is_null())
    add(v, false);
  return rows_stream(std::move(rows));
}

namespace {

// ORDER BY's sort, in slices: runs of kRun rows sorted, then merged in
// pairs, kWorkPerCall rows moved per step, so that sorting a million rows
// does not hold a thread. Stable: ties keep their order.
class SlicedSort {
 public:
  static constexpr size_t kRun = 1024;
  static constexpr size_t kWorkPerCall = size_t{1} << 16;  // rows moved (or about) per step
  using Less = std::function<bool(size_t, size_t)>;  // on indexes of the rows

  void start(size_t rows, Less less) {
    less_ = std::move(less);
    order_.resize(rows);
    for (size_t i = 0; i < rows; ++i) order_[i] = static_cast<uint32_t>(i);
    merged_.resize(rows);
    width_ = kRun;
    lo_ = 0;
    runs_sorted_ = false;
    started_ = true;
  }
  bool started() const { return started_; }

  // Does a slice of the work; true once the order is final.
  bool step() {
    size_t n = order_.size(), work = 0;
    auto by_row = [this](uint32_t a, uint32_t b) { return less_(a, b); };
    while (!runs_sorted_) {
      if (lo_ >= n) {
        runs_sorted_ = true;
        lo_ = 0;
        break;
      }
      size_t hi = std::min(n, lo_ + kRun);
      std::stable_sort(order_.begin() + static_cast<std::ptrdiff_t>(lo_), order_.begin() + static_cast<std::ptrdiff_t>(hi), by_row);
      work += (hi - lo_) * 10;  // n log n of a run, about
      lo_ = hi;
      if (work >= kWorkPerCall) return false;
    }
    while (width_ < n) {
      if (lo_ >= n) {  // a pass is done: runs twice as long
        order_.swap(merged_);
        width_ *= 2;
        lo_ = 0;
        continue;
      }
      if (!merging_) {
        mid_ = std::min(n, lo_ + width_);
        hi_ = std::min(n, lo_ + 2 * width_);
        i_ = lo_;
        j_ = mid_;
        k_ = lo_;
        merging_ = true;
      }
      for (; k_ < hi_ && work < kWorkPerCall; ++k_, ++work) {
        // From the right only when strictly less: stable.
        bool right = j_ < hi_ && (i_ == mid_ || less_(order_[j_], order_[i_]));
        merged_[k_] = right ? order_[j_++] : order_[i_++];
      }
      if (k_ < hi_) return false;
      merging_ = false;
      lo_ = hi_;
    }
    return true;
  }
  // The rows' indexes in order, once step() said so.
  const std::vector<uint32_t>& order() const { return order_; }

 private:
  Less less_;
  std::vector<uint32_t> order_, merged_;
  size_t width_ = kRun, lo_ = 0, mid_ = 0, hi_ = 0, i_ = 0, j_ = 0, k_ = 0;
  bool runs_sorted_ = false, merging_ = false, started_ = false;
};

class SelectStream : public RowStream {
 public:
  SelectStream(Engine& engine, ast::SelectPtr select, ScopePtr scope, std::shared_ptr<RunContext> ctx,
               std::unique_ptr<RowStream> source)
      : engine_(engine), s_(std::move(select)), scope_(std::move(scope)), ctx_(std::move(ctx)),
        source_(std::move(source)) {
    star_only_ = s_->columns.size() == 1 && !s_->columns[0].expr;
  }

  Step next(std::vector<Row>& out, size_t budget) override {
    if (s_->limit && emitted_ >= static_cast<uint64_t>(*s_->limit)) return Step::done();
    if (sort_.started()) {
      if (!sorted_) {
        sorted_ = sort_.step();
        if (!sorted_) return Step::more();
      }
      return emit_sorted(out, budget);
    }
    if (grouped_) return emit_groups(out, budget);
    if (next_in_ == in_.size()) {
      in_.clear();
      next_in_ = 0;
      source_step_ = source_->next(in_, std::max<size_t>(budget, 1));
    }
    std::vector<Row>& target = s_->order_by.empty() ? out : unsorted_;
    for (; next_in_ < in_.size(); ++next_in_) {
      auto kept = evaluate(in_[next_in_], target);
      if (!kept) return Step::more();  // unfinished: the same row in the next call
      if (!*kept) continue;
      if (s_->order_by.empty() && s_->limit && ++emitted_ >= static_cast<uint64_t>(*s_->limit))
        return Step::done();
      if (!s_->order_by.empty()) {
        keys_.push_back(key_of(unsorted_.back()));
        if (unsorted_.size() > kMaxSortRows)
          throw QueryError("ORDER BY " + s_->order_by + ": more than " + std::to_string(kMaxSortRows) +
                           " rows to sort");
      }
    }
    if (source_step_.state == Step::State::done && !s_->group_by.empty()) {
      grouped_ = true;  // the groups are the rows now: ORDER BY and LIMIT apply to them
      if (s_->order_by.empty()) return emit_groups(out, budget);
      for (auto& g : groups_) {
        unsorted_.push_back(std::move(g.row));
        keys_.push_back(key_of(unsorted_.back()));
      }
      groups_.clear();
    }
    if (source_step_.state == Step::State::done && !s_->order_by.empty()) {
      start_sort();
      return Step::more();
    }
    return source_step_;
  }

 private:
  static constexpr size_t kMaxSortRows = kMaxMaterializedRows * 10;

  // filter_and_project, whose functions may spread their work over several
  // calls (Env::slicing) when no enclosing row already lets them: nullopt
  // when it is unfinished (its effects undone: it runs again).
  std::optional<bool> evaluate(Row& row, std::vector<Row>& out) {
    Env& env = ctx_->env;
    if (env.slicing.work) return filter_and_project(row, out);  // an enclosing row takes it up again
    if (retrying_) env.slicing.budget = Slicing::kBytesPerCall;
    size_t uploads = env.upload_requests.size();
    env.slicing.work = &work_;
    try {
      bool kept = filter_and_project(row, out);
      env.slicing.work = nullptr;
      work_.clear();
      retrying_ = false;
      return kept;
    } catch (const Unfinished&) {
      env.slicing.work = nullptr;
      env.upload_requests.resize(uploads);
      retrying_ = true;
      return std::nullopt;
    } catch (...) {
      env.slicing.work = nullptr;
      work_.clear();
      throw;
    }
  }

  bool filter_and_project(Row& row, std::vector<Row>& out) {
    Frame f{scope_, &row, &s_->columns, &aggregates_};
    if (s_->where && !truthy(engine_.eval(*s_->where, f, ctx_))) return false;
    if (!s_->group_by.empty()) return group(row, f);
    if (star_only_) {
      out.push_back(std::move(row));
      return true;
    }
    project(row, f, out);
    return true;
  }

  // GROUP BY: the row's projection, with its group's aggregates, becomes
  // the group's row (Velociraptor's: the last one wins). Nothing is emitted
  // until the source has ended.
  bool group(const Row& row, Frame& f) {
    Row values;
    for (size_t i = 0; i < s_->group_by.size(); ++i) values.set(std::to_string(i), engine_.eval(*s_->group_by[i], f, ctx_));
    std::string key = to_json(values);
    auto found = group_index_.find(key);
    if (found == group_index_.end()) {
      if (groups_.size() >= kMaxGroups)
        throw QueryError("GROUP BY: more than " + std::to_string(kMaxGroups) + " groups");
      found = group_index_.emplace(std::move(key), groups_.size()).first;
      groups_.emplace_back();
    }
    Group& g = groups_[found->second];
    Aggregates before = g.aggregates;  // an unfinished row runs again: it must not count twice
    f.aggregates = &g.aggregates;
    std::vector<Row> projected;
    try {
      project(row, f, projected);
    } catch (const Unfinished&) {
      g.aggregates = std::move(before);
      throw;
    }
    g.row = std::move(projected.back());
    return false;
  }

  void project(const Row& row, const Frame& f, std::vector<Row>& out) {
    Row projected;
    for (auto& c : s_->columns) {
      if (!c.expr) {
        for (auto& [k, v] : row.items()) projected.set(k, v);
      } else if (c.expr->kind == ast::Expr::Kind::subquery) {
        projected.set(ast::column_name(c), subquery_column(engine_.eval(*c.expr, f, ctx_)));
      } else {
        projected.set(ast::column_name(c), engine_.eval(*c.expr, f, ctx_));
      }
    }
    out.push_back(std::move(projected));
  }

  Value key_of(const Row& r) const {
    auto v = r.find(s_->order_by);
    return v ? *v : Value();
  }

  // NULLs and values that do not order with the rest go first; ties keep
  // their order.
  void start_sort() {
    sort_.start(unsorted_.size(), [this](size_t a, size_t b) {
      const Value &x = keys_[a], &y = keys_[b];
      auto c = compare(x, y);
      bool less = c ? *c < 0 : (x.is_null() && !y.is_null());
      bool greater = c ? *c > 0 : (!x.is_null() && y.is_null());
      return s_->descending ? greater : less;
    });
  }

  // GROUP BY without ORDER BY: the groups in the order first seen, `budget` a call.
  Step emit_groups(std::vector<Row>& out, size_t budget) {
    uint64_t limit = s_->limit ? static_cast<uint64_t>(*s_->limit) : UINT64_MAX;
    for (; next_group_ < groups_.size() && budget > 0 && emitted_ < limit; --budget, ++emitted_)
      out.push_back(std::move(groups_[next_group_++].row));
    return next_group_ < groups_.size() && emitted_ < limit ? Step::more() : Step::done();
  }

  Step emit_sorted(std::vector<Row>& out, size_t budget) {
    uint64_t limit = s_->limit ? static_cast<uint64_t>(*s_->limit) : UINT64_MAX;
    auto& order = sort_.order();
    for (; next_sorted_ < order.size() && budget > 0 && emitted_ < limit; --budget, ++emitted_)
      out.push_back(std::move(unsorted_[order[next_sorted_++]]));
    return next_sorted_ < order.size() && emitted_ < limit ? Step::more() : Step::done();
  }

  Engine& engine_;
  ast::SelectPtr s_;
  ScopePtr scope_;
  std::shared_ptr<RunContext> ctx_;
  std::unique_ptr<RowStream> source_;
  bool star_only_ = false;
  uint64_t emitted_ = 0;
  std::vector<Row> in_;  // from the source, not yet evaluated from next_in_ on
  size_t next_in_ = 0;
  Step source_step_{};   // what the source said when it gave in_
  std::map<std::string, std::shared_ptr<void>> work_;  // of the row being evaluated (Env::slicing)
  bool retrying_ = false;  // the row at next_in_ was unfinished
  std::vector<Row> unsorted_;  // ORDER BY: every row, then emitted in sort_'s order
  std::vector<Value> keys_;    // ORDER BY: each row's key
  SlicedSort sort_;
  bool sorted_ = false;
  size_t next_sorted_ = 0;
  Aggregates aggregates_;  // without GROUP BY: over every row so far
  struct Group {
    Aggregates aggregates;
    Row row;  // the last row's projection
  };
  std::vector<Group> groups_;  // in the order first seen
  std::unordered_map<std::string, size_t> group_index_;
  bool grouped_ = false;  // the source has ended: the groups are emitted
  size_t next_group_ = 0;
};

// A query's statements in order. A LET binds its name for the statements
// after it (LET x <= ... is evaluated there); a SELECT runs with the
// variables bound so far, and its rows are kept when it is a result (an
// artifact source's, or the last SELECT when none is marked).
class StatementStream : public RowStream {
 public:
  StatementStream(std::vector<ast::Statement> statements, std::shared_ptr<RunContext> ctx, bool label_rows)
      : statements_(std::move(statements)), ctx_(std::move(ctx)), label_rows_(label_rows) {
    bool marked = std::any_of(statements_.begin(), statements_.end(), [](auto& st) { return st.result; });
    for (size_t i = 0; i < statements_.size(); ++i)
      if (statements_[i].select && (marked ? bool(statements_[i].result) : true)) last_result_ = i;
    if (!marked && last_result_ == statements_.size()) throw QueryError("the query has no SELECT: nothing to return");
    if (!marked) statements_[last_result_].result = "";
  }

  Step next(std::vector<Row>& out, size_t budget) override {
    Step step = run(out, budget);
    if (ctx_->env.background.empty() || step.state == Step::State::done) return step;
    return sooner(step, pump_background(ctx_->env, budget));
  }

 private:
  Step run(std::vector<Row>& out, size_t budget) {
    while (current_ < statements_.size()) {
      const ast::Statement& st = statements_[current_];
      if (st.let) {
        bind(*st.let);
        ++current_;
        continue;
      }
      if (!stream_) stream_ = ctx_->engine.run(st.select, ctx_->root, ctx_);
      std::vector<Row> dropped;
      size_t before = out.size();
      Step step = stream_->next(st.result ? out : dropped, budget);
      if (label_rows_ && st.result)
        for (size_t i = before; i < out.size(); ++i) out[i].set("_Source", *st.result);
      if (step.state != Step::State::done) return step;
      stream_.reset();
      if (++current_ <= last_result_) return Step::more();  // one slice of work per call
    }
    return Step::done();
  }

  void bind(const ast::Let& let) {
    Binding b{let.name, Value(), nullptr};
    if (!let.materialized || let.params) {
      b.lazy = statements_[current_].let;
    } else if (let.query) {
      b.value = materialize(QueryPtr(std::make_shared<const StoredQuery>(let.query, ctx_->root, ctx_)));
    } else {
      // A stored query kept in a binding would keep its own context alive.
      b.value = materialize(ctx_->engine.eval(*let.expr, Frame{ctx_->root}, ctx_));
    }
    ctx_->root = std::make_shared<const Scope>(ctx_->root, Row{}, std::vector<Binding>{std::move(b)});
  }

  std::vector<ast::Statement> statements_;
  std::shared_ptr<RunContext> ctx_;
  bool label_rows_;
  size_t last_result_ = statements_.size();  // after it, the rest (LETs) is not run
  size_t current_ = 0;
  std::unique_ptr<RowStream> stream_;
};

// An artifact's precondition, then (if it gave a row) its statements.
class PreconditionStream : public RowStream {
 public:
  PreconditionStream(std::unique_ptr<RowStream> precondition, std::function<std::unique_ptr<RowStream>()> then)
      : precondition_(std::move(precondition)), then_(std::move(then)) {}

  Step next(std::vector<Row>& out, size_t budget) override {
    if (precondition_) {
      std::vector<Row> rows;
      Step step = precondition_->next(rows, 1);
      if (rows.empty() && step.state != Step::State::done) return step;
      precondition_.reset();
      if (rows.empty()) return Step::done();  // skipped: not an error
      then_stream_ = then_();
      return Step::more();
    }
    return then_stream_ ? then_stream_->next(out, budget) : Step::done();
  }

 private:
  std::unique_ptr<RowStream> precondition_;  // null once it has answered
  std::function<std::unique_ptr<RowStream>()> then_;
  std::unique_ptr<RowStream> then_stream_;
};

// foreach(row=, query=): for each row, the query with that row's columns in scope.
class ForeachStream : public RowStream {
 public:
  // With `column`: each row's value of that column as rows instead of a query's.
  // An error in one row's query is logged (`env`) and ends only that query.
  ForeachStream(Env& env, std::unique_ptr<RowStream> rows, Value query, std::string column = "")
      : env_(env), rows_(std::move(rows)), query_(std::move(query)), column_(std::move(column)) {}

  Step next(std::vector<Row>& out, size_t budget) override {
    if (!inner_ && pending_.empty() && rows_done_) return Step::done();
    if (!inner_ && pending_.empty()) {
      Step step = rows_->next(pending_, budget);
      rows_done_ = step.state == Step::State::done;
      if (pending_.empty()) return rows_done_ ? Step::done() : step;
      next_pending_ = 0;
    }
    if (!inner_) {
      Row& row = pending_[next_pending_++];
      if (!column_.empty()) {
        auto v = row.find(column_);
        inner_ = rows_of(v ? *v : Value());
      } else if (query_.is_null()) {
        out.push_back(std::move(row));
      } else {
        try {
          inner_ = rows_of(query_, &row);
        } catch (const QueryError& error) {
          log_row_error(env_, error.what());
        }
      }
      if (next_pending_ == pending_.size()) pending_.clear();
      if (!inner_) return Step::more();
    }
    Step step;
    try {
      step = inner_->next(out, budget);
    } catch (const QueryError& error) {
      log_row_error(env_, error.what());
      step = Step::done();
    }
    if (step.state == Step::State::done) {
      inner_.reset();
      return Step::more();
    }
    return step;
  }

 private:
  Env& env_;
  std::unique_ptr<RowStream> rows_;
  Value query_;
  std::string column_;
  std::vector<Row> pending_;
  size_t next_pending_ = 0;
  bool rows_done_ = false;
  std::unique_ptr<RowStream> inner_;
};

// Several streams at once: rows from each in turn; waits only when all do.
class MergeStream : public RowStream {
 public:
  void add(std::unique_ptr<RowStream> s) { streams_.push_back(std::move(s)); }
  bool empty() const { return streams_.empty(); }

  Step next(std::vector<Row>& out, size_t budget) override {
    Step merged = Step::parked();
    for (size_t i = 0; i < streams_.size();) {
      Step step = streams_[i]->next(out, budget);
      if (step.state == Step::State::done) {
        streams_.erase(streams_.begin() + static_cast<std::ptrdiff_t>(i));
        merged = Step::more();  // one ended: look again at once
        continue;
      }
      merged = sooner(merged, step);
      ++i;
    }
    return streams_.empty() ? Step::done() : merged;
  }

 private:
  std::vector<std::unique_ptr<RowStream>> streams_;
};

// foreach(async=TRUE): a query per row, all running at once, for rows that
// come from an event query and queries that never end (watch each new drive).
class AsyncForeachStream : public RowStream {
 public:
  AsyncForeachStream(std::unique_ptr<RowStream> rows, Value query) : rows_(std::move(rows)), query_(std::move(query)) {}

  Step next(std::vector<Row>& out, size_t budget) override {
    Step step = Step::parked();
    if (rows_) {
      std::vector<Row> rows;
      step = rows_->next(rows, budget);
      for (auto& row : rows) inners_.add(rows_of(query_, &row));
      if (step.state == Step::State::done) {
        rows_.reset();
        step = Step::more();
      }
    }
    if (inners_.empty()) return rows_ ? step : Step::done();
    Step inner = inners_.next(out, budget);
    if (inner.state == Step::State::done) return rows_ ? Step::more() : Step::done();
    return sooner(step, inner);
  }

 private:
  std::unique_ptr<RowStream> rows_;  // null once it ended
  Value query_;
  MergeStream inners_;
};

// chain(a=, b=, ...): each query's rows in turn, in argument order.
class ChainStream : public RowStream {
 public:
  explicit ChainStream(std::vector<Value> queries) : queries_(std::move(queries)) {}
  Step next(std::vector<Row>& out, size_t budget) override {
    while (next_ < queries_.size() || current_) {
      if (!current_) current_ = rows_of(queries_[next_++]);
      Step step = current_->next(out, budget);
      if (step.state != Step::State::done) return step;
      current_.reset();
      return Step::more();
    }
    return Step::done();
  }

 private:
  std::vector<Value> queries_;
  size_t next_ = 0;
  std::unique_ptr<RowStream> current_;
};

// switch(a=, b=, ...): the first query that gives a row, all of its rows.
class SwitchStream : public RowStream {
 public:
  explicit SwitchStream(std::vector<Value> queries) : queries_(std::move(queries)) {}
  Step next(std::vector<Row>& out, size_t budget) override {
    for (;;) {
      if (!current_) {
        if (next_ == queries_.size()) return Step::done();
        current_ = rows_of(queries_[next_++]);
      }
      size_t before = out.size();
      Step step = current_->next(out, budget);
      chosen_ = chosen_ || out.size() > before;
      if (step.state != Step::State::done) return step;
      if (chosen_) return Step::done();
      current_.reset();  // ended without a row: the next one
    }
  }

 private:
  std::vector<Value> queries_;
  size_t next_ = 0;
  std::unique_ptr<RowStream> current_;
  bool chosen_ = false;
};

}  // namespace

bool condition_holds(const Value& v) {
  auto q = v.as_query();
  if (!q) return truthy(v);
  auto stream = q->run();
  std::vector<Row> rows;
  for (int slices = 0; slices < 10000; ++slices) {
    Step step = stream->next(rows, 1);
    if (!rows.empty()) return true;
    if (step.state != Step::State::more) return false;
  }
  return false;
}

std::unique_ptr<RowStream> merge_streams(std::vector<std::unique_ptr<RowStream>> streams) {
  auto merged = std::make_unique<MergeStream>();
  for (auto& s : streams) merged->add(std::move(s));
  return merged;
}

std::unique_ptr<RowStream> chain_streams(std::vector<std::unique_ptr<RowStream>> streams) {
  struct Running : RowStream {
    std::vector<std::unique_ptr<RowStream>> streams;
    size_t current = 0;
    Step next(std::vector<Row>& out, size_t budget) override {
      if (current == streams.size()) return Step::done();
      Step step = streams[current]->next(out, budget);
      if (step.state != Step::State::done) return step;
      streams[current++].reset();
      return current == streams.size() ? Step::done() : Step::more();
    }
  };
  auto chained = std::make_unique<Running>();
  chained->streams = std::move(streams);
  return chained;
}

std::unique_ptr<RowStream> StoredQuery::run(const Row* row) const {
  auto scope = row ? std::make_shared<const Scope>(scope_, *row) : scope_;
  return context_->engine.run(select_, scope, context_);
}

std::vector<Row> StoredQuery::materialize() const {
  auto event = [this] {
    return QueryError("{" + ast::print(*select_) + "}: an event query cannot be used as a list");
  };
  if (auto plugin = context_->engine.registry().plugin(select_->source); plugin && plugin->event) throw event();
  auto stream = run();
  std::vector<Row> rows;
  auto deadline = std::chrono::steady_clock::now() + kMaxMaterializeWait;
  for (;;) {
    Step step = stream->next(rows, 1024);
    if (rows.size() > kMaxMaterializedRows)
      throw QueryError("{" + ast::print(*select_) + "}: more than " + std::to_string(kMaxMaterializedRows) +
                       " rows where a list was needed");
    if (step.state == Step::State::done) return rows;
    if (step.state == Step::State::parked) throw event();
    if (step.state == Step::State::wait) {  // a program's output (execve()): this thread waits for it
      if (std::chrono::steady_clock::now() > deadline)
        throw QueryError("{" + ast::print(*select_) + "}: did not end within 10 minutes where a list was needed");
      std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(step.wait, std::chrono::milliseconds(50)));
    }
  }
}

std::unique_ptr<RowStream> Engine::run(const ast::SelectPtr& s, const ScopePtr& scope,
                                       const std::shared_ptr<RunContext>& ctx) {
  std::unique_ptr<RowStream> source;
  Frame f{scope};
  if (s->source_is_call && is_artifact_call(s->source)) {
    if (!artifacts_)
      throw QueryError("line " + std::to_string(s->source_pos.line) + ", column " +
                       std::to_string(s->source_pos.column) + ": " + s->source + "(): no artifacts here");
    std::vector<std::pair<std::string, Value>> values;
    for (auto& a : s->source_args) values.emplace_back(a.name, eval(*a.value, f, ctx));
    source = artifacts_->call(s->source.substr(kArtifactPrefix.size()), Args(s->source, std::move(values)), scope,
                              *ctx);
  } else if (s->source_is_call && !registry_.plugin(s->source)) {  // LET q(a) = SELECT ...
    source = rows_of(call_let(s->source, s->source_pos, s->source_args, f, ctx, true));
  } else if (s->source_is_call) {
    auto plugin = registry_.plugin(s->source);
    Args args(s->source, arguments(s->source, s->source_args, plugin->args, f, ctx));
    check_args(args, plugin->args);
    source = plugin->make(args, ctx->env);
  } else {
    Value v = lookup(s->source, f, ctx);
    if (v.is_null())
      throw QueryError("line " + std::to_string(s->source_pos.line) + ", column " +
                       std::to_string(s->source_pos.column) + ": FROM " + s->source +
                       ": no such variable (a plugin needs parentheses: " + s->source + "())");
    source = rows_of(v);
  }
  return std::make_unique<SelectStream>(*this, s, scope, ctx, std::move(source));
}

std::unique_ptr<RowStream> Engine::start(const ast::Query& query, std::vector<Binding> parameters, Env& env,
                                         const Caller& caller) {
  if (caller.artifact_depth > ArtifactCalls::kMaxDepth)
    throw QueryError("artifacts call each other more than " + std::to_string(ArtifactCalls::kMaxDepth) +
                     " deep (does one call itself?)");
  // The run's own copy of the engine: the caller's may be gone before it begins.
  // Called once: now, or once the precondition gave a row.
  auto begin = [engine = std::make_shared<Engine>(*this), &env, caller, statements = query.statements,
                parameters]() mutable -> std::unique_ptr<RowStream> {
    auto ctx = std::make_shared<RunContext>(RunContext{*engine, env, nullptr, engine, 0, caller.artifact_depth, {}});
    if (!caller.scope) env.engine = engine.get();  // a run called inline (Artifact.X()) keeps the caller's, which outlives it
    env.permissions = engine->permissions();
    ctx->root = std::make_shared<const Scope>(caller.scope, Row{}, std::move(parameters));
    return std::make_unique<StatementStream>(std::move(statements), ctx, caller.label_rows);
  };
  if (!query.precondition) return begin();
  Caller plain = caller;
  plain.label_rows = false;
  return std::make_unique<PreconditionStream>(start(*query.precondition, parameters, env, plain), begin);
}

void add_builtin_plugins(Registry& r) {
  r.add(PluginSpec{"foreach",
                   "For each row of `row`, runs `query` with that row's columns in scope.",
                   {{"row", "query or list", true, "the rows to iterate"},
                    {"query", "query", false, "run for each row; without it, the rows themselves"},
                    {"column", "string", false, "instead of a query: this column's value (a list, a dict) as rows"},
                    {"async", "bool", false, "run the queries of all rows at once (for event rows and "
                                             "queries that never end); default false: one after another"},
                    {"workers", "int", false, "accepted for Velociraptor's artifacts; the rows go one after another"}},
                   false,
                   [](const Args& args, Env& env) -> std::unique_ptr<RowStream> {
                     const Value* q = args.find("query");
                     if (q && !q->as_query() && !q->as_list()) args.fail("query", "expected a query, got " + std::string(type_name(*q)));
                     if (auto column = args.string("column")) {
                       if (q) args.fail("column", "give a query or a column, not both");
                       return std::make_unique<ForeachStream>(env, rows_of(foreach_rows(args)), Value(), *column);
                     }
                     if (args.boolean("async").value_or(false)) {
                       if (!q) args.fail("async", "needs a query to run for each row");
                       return std::make_unique<AsyncForeachStream>(rows_of(foreach_rows(args)), *q);
                     }
                     return std::make_unique<ForeachStream>(env, rows_of(foreach_rows(args)), q ? *q : Value());
                   }});
  r.add(PluginSpec{"switch",
                   "The rows of the first of its arguments' queries, in argument order, that gives any: "
                   "switch(a={...}, b={...}); the later ones do not run.",
                   {{"*", "query or list", false, "any name"}}, false,
                   [](const Args& args, Env&) -> std::unique_ptr<RowStream> {
                     std::vector<Value> queries;
                     for (auto& [name, v] : args.values()) queries.push_back(v);
                     return std::make_unique<SwitchStream>(std::move(queries));
                   }});
  r.add(PluginSpec{"scope", "One empty row: the FROM of a query that only computes expressions.", {}, false,
                   [](const Args&, Env&) { return rows_stream({Row{}}); }});
  r.add(PluginSpec{"chain",
                   "The rows of each argument's query in turn: chain(a={...}, b={...}); with async=TRUE, "
                   "all at once, started in argument order (a watch before a listing: nothing falls between).",
                   {{"*", "query or list", false, "any name"}, {"async", "bool", false, "default false"}},
                   false,
                   [](const Args& args, Env&) -> std::unique_ptr<RowStream> {
                     std::vector<Value> queries;
                     for (auto& [name, v] : args.values())
                       if (name != "async") queries.push_back(v);
                     if (!args.boolean("async").value_or(false))
                       return std::make_unique<ChainStream>(std::move(queries));
                     std::vector<std::unique_ptr<RowStream>> streams;
                     for (auto& q : queries) streams.push_back(rows_of(q));
                     return merge_streams(std::move(streams));
                   }});
  r.add(PluginSpec{"if",
                   "The rows of `then` when `condition` holds, else those of `else`.",
                   {{"condition", "any", false, "a value, or a query that holds when it has a row (NULL: false)"},
                    {"then", "query or list", false, ""},
                    {"else", "query or list", false, ""}},
                   false,
                   [](const Args& args, Env&) -> std::unique_ptr<RowStream> {
                     auto condition = args.find("condition");
                     auto branch = args.find(condition && condition_holds(*condition) ? "then" : "else");
                     return rows_of(branch ? *branch : Value());
                   }});
}

}  // namespace outpost::vql
