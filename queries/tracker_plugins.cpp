// The process tracker's VQL: process_tracker() installs one for the agent
// (Linux.Events.TrackProcesses), kept by the query that called it, beside
// its rows, until that query ends; process_tracker_get, _callchain, _tree,
// _pslist and _updates read it. Without one, the readers answer as
// Velociraptor's fallback does: from pslist()'s rows, kept for 10 s, the
// ids bare pids.


#include <algorithm>
#include <mutex>
#include <set>

#include "queries/engine.hpp"
#include "queries/process_tracker.hpp"
#include "schemas/codec.hpp"

namespace outpost::vql {
namespace {

// Velociraptor's fallback keeps its pslist() this long.
constexpr auto kFallbackLifetime = std::chrono::seconds(10);
// A call chain has at most kMaxChain processes; a tree, as Velociraptor
// counts, at most kMaxTreeDepth + 1 levels below its root.
constexpr int kMaxChain = 10;
constexpr int kMaxTreeDepth = 20;

// ---- the fallback: pslist()'s rows

struct Snapshot final : ProcessView {
  std::vector<TrackedProcess> all;  // by pid
  std::unordered_map<std::string, size_t> by_id;
  const TrackedProcess* find(const std::string& id) const override {
    auto it = by_id.find(id);
    return it == by_id.end() ? nullptr : &all[it->second];
  }
  void each(const std::function<void(const TrackedProcess&)>& f) const override {
    for (auto& p : all) f(p);
  }
};

// pslist()'s rows, all at once (the registry's pslist, as Velociraptor calls
// its own); none when the engine has no pslist.
std::vector<Row> pslist_rows(Env& env) {
  const PluginSpec* pslist = env.engine ? env.engine->registry().plugin("pslist") : nullptr;
  std::vector<Row> rows;
  if (!pslist) return rows;
  auto stream = pslist->make(Args("pslist", {}), env);
  for (Step step = Step::more(); step.state == Step::State::more;) step = stream->next(rows, 1000);
  return rows;
}

std::shared_ptr<const Snapshot> load_snapshot(Env& env) {
  auto s = std::make_shared<Snapshot>();
  for (auto& row : pslist_rows(env)) {
    auto pid = row.find("Pid"), ppid = row.find("Ppid"), created = row.find("CreateTime");
    if (!pid || !pid->as_int() || !ppid || !ppid->as_int() || !created) continue;
    TrackedProcess p;
    p.id = std::to_string(*pid->as_int());
    p.parent_id = std::to_string(*ppid->as_int());
    p.start = created->as_timestamp() ? *created->as_timestamp() : Timestamp{};
    p.data = std::move(row);
    s->all.push_back(std::move(p));
  }
  std::sort(s->all.begin(), s->all.end(), [](const TrackedProcess& a, const TrackedProcess& b) {
    return std::make_pair(a.id.size(), a.id) < std::make_pair(b.id.size(), b.id);  // numerically
  });
  for (size_t i = 0; i < s->all.size(); ++i) s->by_id.emplace(s->all[i].id, i);
  for (auto& p : s->all) {
    auto parent = s->by_id.find(p.parent_id);
    if (parent != s->by_id.end() && p.parent_id != p.id) s->all[parent->second].children.push_back(p.id);
  }
  return s;
}

// The processes of the last 10 s, shared by every query in the process; read
// again when older or when asked for other proc or passwd paths (one set is
// kept). Read outside the lock, so that no worker waits on another's /proc
// scan (two may read at once; the later one is kept). Immutable once made.
std::shared_ptr<const Snapshot> snapshot(Env& env) {
  static std::mutex mutex;
  static std::string key;
  static std::chrono::steady_clock::time_point loaded;
  static std::shared_ptr<const Snapshot> cached;
  std::string paths = env.paths->proc.string() + '\0' + env.paths->passwd.string();
  auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (cached && key == paths && now - loaded < kFallbackLifetime) return cached;
  }
  auto fresh = load_snapshot(env);
  std::lock_guard<std::mutex> lock(mutex);
  cached = fresh;
  key = paths;
  loaded = now;
  return fresh;
}

std::shared_ptr<ProcessTracker> installed(const Env& env) {
  return env.sensors ? env.sensors->trackers()->get() : nullptr;
}

// `f` with the installed tracker's table, else the fallback's.
template <typename F>
auto with_processes(Env& env, F f) {
  if (auto tracker = installed(env)) {
    decltype(f(std::declval<const ProcessView&>())) out;
    tracker->read([&](const ProcessView& view) { out = f(view); });
    return out;
  }
  auto s = snapshot(env);
  return f(static_cast<const ProcessView&>(*s));
}

// ---- the readers

Value tracker_get(const Args& args, Env& env) {
  std::string id = required_string(args, "id");
  return with_processes(env, [&](const ProcessView& view) {
    auto p = view.find(id);
    return p ? tracker_entry(*p) : Value();
  });
}

// The process's ancestors from the oldest known down to it.
Value tracker_callchain(const Args& args, Env& env) {
  std::string id = required_string(args, "id");
  int64_t max_items = args.integer("max_items").value_or(0);
  if (max_items == 0) max_items = 10;
  return with_processes(env, [&](const ProcessView& view) {
    std::vector<const TrackedProcess*> chain;
    for (int depth = 0; depth < kMaxChain; ++depth) {
      const TrackedProcess* p = view.find(id);
      if (!p || std::find(chain.begin(), chain.end(), p) != chain.end()) break;
      chain.push_back(p);
      if (static_cast<int64_t>(chain.size()) > max_items) break;  // max_items + 1, as Velociraptor
      id = p->parent_id;
    }
    List out;
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) out.push_back(tracker_entry(**it));
    return Value(std::move(out));
  });
}

// process_tracker_tree()'s nodes: {name, id, start_time, data, children}.
class TreeBuilder {
 public:
  TreeBuilder(const ProcessView& processes, Env& env, int64_t max_items)
      : processes_(processes), env_(env), left_(max_items - 1) {}

  // `depth` counts the levels above `p`'s children, as Velociraptor's does.
  Dict node(const TrackedProcess& p, int depth) {
    seen_.insert(p.id);
    Dict n;
    auto name = p.data.find("Name");
    n.set("name", name && name->as_string() ? *name : Value(p.id));
    n.set("id", p.id);
    n.set("start_time", p.start);
    n.set("data", tracker_data(p));
    std::vector<std::pair<int64_t, Dict>> children;
    bool complete = true;
    for (size_t i = 0; depth <= kMaxTreeDepth && i < p.children.size(); ++i) {
      const TrackedProcess* child = processes_.find(p.children[i]);
      if (!child || !seen_.insert(child->id).second) continue;
      if (--left_ < 0) {
        log_row_error(env_, "process_tracker_tree(): more than max_items processes in the tree: truncated");
        complete = false;
        break;
      }
      children.emplace_back(child->start.ns, node(*child, depth + 1));
    }
    if (complete)  // a truncated level stays in the order it has, as Velociraptor leaves it unsorted
      std::stable_sort(children.begin(), children.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
    List list;
    for (auto& child : children) list.push_back(std::move(child.second));
    n.set("children", list.empty() ? Value() : Value(std::move(list)));  // Go's nil slice: null
    return n;
  }

 private:
  const ProcessView& processes_;
  Env& env_;
  int64_t left_;
  std::set<std::string> seen_;
};

Value tracker_tree(const Args& args, Env& env) {
  if (auto callback = args.find("data_callback"); callback && !dynamic_cast<const Lambda*>(callback->as_object()))
    args.fail("data_callback", "expected a lambda");
  int64_t max_items = args.integer("max_items").value_or(0);
  if (max_items == 0) max_items = 1000;
  std::string id = args.string("id").value_or("");
  return with_processes(env, [&](const ProcessView& view) {
    auto root = view.find(id);
    return root ? Value(TreeBuilder(view, env, max_items).node(*root, 0)) : Value();
  });
}

std::unique_ptr<RowStream> make_tracker_pslist(const Args&, Env& env) {
  auto tracker = installed(env);
  if (!tracker) {
    const PluginSpec* pslist = env.engine ? env.engine->registry().plugin("pslist") : nullptr;
    if (!pslist) throw QueryError("process_tracker_pslist(): no tracker and no pslist()");
    return pslist->make(Args("pslist", {}), env);
  }
  std::vector<std::pair<std::pair<int64_t, std::string>, Row>> rows;
  tracker->read([&](const ProcessView& view) {
    view.each([&](const TrackedProcess& p) {
      Value data = tracker_data(p);
      rows.push_back({{p.start.ns, p.id}, *data.as_dict()});
    });
  });
  std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) { return a.first < b.first; });
  std::vector<Row> out;
  out.reserve(rows.size());
  for (auto& r : rows) out.push_back(std::move(r.second));
  return rows_stream(std::move(out));
}

// ---- process_tracker(): the tracker and the queries that feed it

// A time column: a time, or what timestamp() takes (epoch seconds, text).
Timestamp time_of(const Value& v, Env& env) {
  if (v.is_null()) return {};
  if (auto t = v.as_timestamp()) return *t;
  Value t = default_registry().function("timestamp")->call(Args("timestamp", {{"epoch", v}}), env);
  return t.as_timestamp() ? *t.as_timestamp() : Timestamp{};
}

std::string id_of(const Value* v) {
  if (!v || v->is_null()) return "";
  if (auto s = v->as_string()) return *s;
  return to_string(*v);
}

// A row of the sync or update query; nullopt (and the reason) when it has no id.
std::optional<TrackerUpdate> update_of(const Row& row, Env& env, std::string& problem) {
  TrackerUpdate u;
  u.id = id_of(row.find("id"));
  if (u.id.empty()) {
    problem = "a row without an id";
    return std::nullopt;
  }
  u.parent_id = id_of(row.find("parent_id"));
  if (auto type = row.find("update_type"); type && type->as_string()) u.type = *type->as_string();
  try {
    if (auto v = row.find("start_time")) u.start = time_of(*v, env);
    if (auto v = row.find("end_time")) u.end = time_of(*v, env);
  } catch (const std::exception& e) {
    problem = e.what();
    return std::nullopt;
  }
  if (auto data = row.find("data"); data && data->as_dict()) u.data = *data->as_dict();
  return u;
}

Timestamp wall_now() { return Timestamp{schemas::now_ns()}; }

// Runs the update query and, every sync period, the sync query, beside the
// query that installed the tracker; uninstalls it when that query ends.
class TrackerRunner final : public Background {
 public:
  static constexpr int kCallsPerPump = 64;

  TrackerRunner(std::shared_ptr<TrackerSlot> slot, std::shared_ptr<ProcessTracker> tracker, QueryPtr sync,
                QueryPtr update, std::chrono::milliseconds period, Env& env)
      : slot_(std::move(slot)), tracker_(std::move(tracker)), sync_(std::move(sync)), period_(period), env_(env) {
    if (update) updates_ = update->run();
    next_sync_ = std::chrono::steady_clock::now() + period_;
    slot_->install(tracker_);
  }
  ~TrackerRunner() override { slot_->uninstall(tracker_.get()); }

  // Rows of the sync query, all of them before they apply.
  void sync_now(std::vector<Row> rows, ProcessTracker::SyncStart began) {
    std::vector<TrackerUpdate> live;
    live.reserve(rows.size());
    std::string problem;
    for (auto& row : rows)
      if (auto u = update_of(row, env_, problem)) live.push_back(std::move(*u));
    if (!problem.empty()) log_row_error(env_, "process_tracker(): sync_query: " + problem + ": skipped");
    tracker_->sync(live, began);
  }

  Step pump(size_t budget) override {
    Step step = Step::parked();
    if (updates_) {
      std::vector<Row> rows;
      Step s = Step::more();
      try {
        for (int i = 0; i < kCallsPerPump && s.state == Step::State::more && rows.size() < budget; ++i)
          s = updates_->next(rows, budget - rows.size());
      } catch (const std::exception& e) {  // the tracker keeps what it has; syncs go on
        log_row_error(env_, std::string("process_tracker(): update_query failed (only syncs from now on): ") + e.what());
        s = Step::done();
      }
      std::string problem;
      for (auto& row : rows)
        if (auto u = update_of(row, env_, problem)) tracker_->update(*u, wall_now());
      if (!problem.empty()) log_row_error(env_, "process_tracker(): update_query: " + problem + ": skipped");
      if (s.state == Step::State::done) updates_.reset();
      else step = s;
    }
    if (sync_) step = sooner(step, pump_sync(budget));
    return step;
  }

 private:
  Step pump_sync(size_t budget) {
    auto now = std::chrono::steady_clock::now();
    if (!syncing_) {
      if (now < next_sync_) return Step::after(next_sync_ - now);
      syncing_ = sync_->run();
      sync_began_ = tracker_->sync_start();
      sync_rows_.clear();
    }
    Step s = Step::more();
    try {
      for (int i = 0; i < kCallsPerPump && s.state == Step::State::more; ++i) s = syncing_->next(sync_rows_, budget);
      if (sync_rows_.size() > kMaxMaterializedRows) throw QueryError("more than " + std::to_string(kMaxMaterializedRows) + " rows");
    } catch (const std::exception& e) {
      log_row_error(env_, std::string("process_tracker(): sync_query failed: ") + e.what());
      syncing_.reset();
      next_sync_ = now + period_;
      return Step::after(period_);
    }
    if (s.state != Step::State::done) return s;
    syncing_.reset();
    sync_now(std::move(sync_rows_), sync_began_);
    sync_rows_ = {};
    next_sync_ = now + period_;
    return Step::after(period_);
  }

  std::shared_ptr<TrackerSlot> slot_;
  std::shared_ptr<ProcessTracker> tracker_;
  QueryPtr sync_;
  std::unique_ptr<RowStream> updates_;  // null once it has ended
  std::chrono::milliseconds period_;
  std::chrono::steady_clock::time_point next_sync_;
  std::unique_ptr<RowStream> syncing_;  // a sync under way
  std::vector<Row> sync_rows_;
  ProcessTracker::SyncStart sync_began_;
  Env& env_;
};

QueryPtr query_arg(const Args& args, const std::string& name) {
  const Value* v = args.find(name);
  if (!v) return nullptr;
  if (!v->as_query()) args.fail(name, std::string("expected a query, got ") + type_name(*v));
  return std::get<QueryPtr>(v->data);
}

constexpr int64_t kMaxExpiry = int64_t{10} * 365 * 24 * 3600;
constexpr int64_t kMaxSyncPeriod = int64_t{24} * 3600 * 1000;

Value install_tracker(const Args& args, Env& env) {
  for (const char* unsupported : {"enrichments", "cache"})
    if (args.find(unsupported)) args.fail(unsupported, "not supported by Outpost's tracker");
  TrackerOptions options;
  if (auto max_size = args.integer("max_size"); max_size && *max_size != 0) {
    if (*max_size < 0) args.fail("max_size", "must be positive, got " + std::to_string(*max_size));
    options.max_size = static_cast<size_t>(*max_size);
  }
  if (auto expiry = args.integer("max_expiry"); expiry && *expiry != 0) {
    if (*expiry < 0 || *expiry > kMaxExpiry)
      args.fail("max_expiry", "must be from 1 to " + std::to_string(kMaxExpiry) + " (10 years), got " + std::to_string(*expiry));
    options.max_expiry = std::chrono::seconds(*expiry);
  }
  int64_t period = args.integer("sync_period").value_or(0);
  if (period < 0 || period > kMaxSyncPeriod)
    args.fail("sync_period", "must be from 1 to " + std::to_string(kMaxSyncPeriod) + " ms (a day), got " + std::to_string(period));
  if (period == 0) period = 5000;  // upstream's default
  QueryPtr sync = query_arg(args, "sync_query"), update = query_arg(args, "update_query");
  if (!env.sensors) throw QueryError("process_tracker(): only an agent's queries can install a tracker");
  auto tracker = std::make_shared<ProcessTracker>(options);
  // The first sync at once (upstream's too): the tracker is installed, and
  // read empty, only for as long as that takes.
  auto began = tracker->sync_start();
  std::vector<Row> first = sync ? sync->materialize() : std::vector<Row>{};
  auto runner = std::make_shared<TrackerRunner>(env.sensors->trackers(), tracker, sync, update,
                                                std::chrono::milliseconds(period), env);
  if (sync) runner->sync_now(std::move(first), began);
  env.background["process_tracker"] = runner;  // replaces (and uninstalls) one this query installed before
  Dict out;
  out.set("Processes", static_cast<int64_t>(tracker->size()));
  out.set("MaxSize", static_cast<int64_t>(options.max_size));
  out.set("MaxExpiry", static_cast<int64_t>(options.max_expiry.count()));
  out.set("SyncPeriod", period);
  return out;
}

// process_tracker_updates(): the installed tracker's updates from now on.
class UpdatesStream final : public RowStream {
 public:
  UpdatesStream(SubscriptionPtr sub, Env& env) : sub_(std::move(sub)), env_(env) {}

  Step next(std::vector<Row>& out, size_t budget) override {
    size_t n = sub_->take(out, budget);
    env_.dropped_events += sub_->take_dropped();
    if (n > 0) return Step::more();
    std::string error;
    if (sub_->ended(error)) return Step::done();  // the tracker was uninstalled
    if (!env_.wake) return Step::after(std::chrono::milliseconds(100));
    return sub_->wait(env_.wake) ? Step::parked() : Step::more();
  }

 private:
  SubscriptionPtr sub_;
  Env& env_;
};

std::unique_ptr<RowStream> make_updates(const Args&, Env& env) {
  auto tracker = installed(env);
  if (!tracker)
    throw QueryError("process_tracker_updates(): no process tracker is installed (process_tracker() installs one, "
                     "as Linux.Events.TrackProcesses does)");
  return std::make_unique<UpdatesStream>(tracker->subscribe(), env);
}

}  // namespace

void add_tracker_plugins(Registry& r) {
  r.add(FunctionSpec{
      "process_tracker",
      "Installs the agent's process tracker, kept by this query until it ends: sync_query's rows (id, parent_id, "
      "start_time, data: usually from pslist()) now and every sync_period, update_query's rows (the same, with "
      "update_type \"start\" or \"exit\", end_time) as they come. At most max_size processes (live and exited), "
      "4 KiB of data each; exited ones kept max_expiry seconds at most.",
      {{"max_size", "int", false, "processes kept (default 10,000)"},
       {"sync_query", "query", false, "the live processes"},
       {"update_query", "query", false, "start and exit events"},
       {"sync_period", "int", false, "milliseconds between syncs (default 5000)"},
       {"max_expiry", "int", false, "seconds an exited process is kept at most (default 86400)"},
       {"enrichments", "list of strings", false, "not supported"},
       {"cache", "string", false, "not supported"}},
      install_tracker});
  const std::string fallback = " Without a tracker: from pslist(), ids the pids as text, kept 10 s.";
  r.add(FunctionSpec{"process_tracker_get",
                     "A process: {Id, ParentId, StartTime, EndTime, Data, Children (ids)}, or NULL; by its id or "
                     "its pid (the latest process with it)." + fallback,
                     {{"id", "string", true, "the process id"}, {"max_items", "int", false, "accepted, unused"}},
                     tracker_get});
  r.add(FunctionSpec{"process_tracker_callchain",
                     "A process and its ancestors, oldest first, as process_tracker_get() gives them." + fallback,
                     {{"id", "string", true, "the process id"},
                      {"max_items", "int", false, "stop after max_items + 1 processes (default 10; 10 at most)"}},
                     tracker_callchain});
  r.add(FunctionSpec{"process_tracker_tree",
                     "A process and its descendants: {name, id, start_time, data, children [...]}, children by "
                     "start time, 21 levels deep at most; NULL for an unknown id." + fallback,
                     {{"id", "string", false, "the process id"},
                      {"data_callback", "lambda", false, "accepted, unused (as upstream)"},
                      {"max_items", "int", false, "processes in the tree at most (default 1000)"}},
                     tracker_tree});
  r.add(PluginSpec{"process_tracker_pslist",
                   "Every process the tracker holds (exited ones too), as process_tracker_get()'s Data, by start "
                   "time. Without a tracker: pslist()'s rows.",
                   {}, false, make_tracker_pslist});
  r.add(PluginSpec{"process_tracker_updates",
                   "The installed tracker's updates as they happen: {Id, ParentId, UpdateType (start, exit, sync), "
                   "StartTime, EndTime, Data}; a sync's Data holds every live process by id. Ends when the tracker "
                   "is uninstalled.",
                   {}, true, make_updates});
}

}  // namespace outpost::vql
