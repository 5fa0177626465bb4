// actors(): the agent's own actors as rows, with the counters the inspector
// shows (actors/metrics.hpp) and each actor's own status, so that the
// collector can collect them like any other artifact.

#include <caf/actor_system.hpp>
#include <caf/config_value.hpp>

#include <cmath>
#include <mutex>

#include "actors/registry.hpp"
#include "queries/agent_plugins.hpp"

namespace outpost::vql {
namespace {

// How long an actor may take to answer with its status.
constexpr auto kStatusTimeout = std::chrono::seconds(3);

Value to_value(const caf::config_value& v);

Value to_value(const caf::settings& s) {
  Dict d;
  for (auto& [key, value] : s) d.set(key, to_value(value));
  return Value(std::move(d));
}

Value to_value(const caf::config_value& v) {
  if (auto i = caf::get_if<int64_t>(&v)) return Value(*i);
  if (auto b = caf::get_if<bool>(&v)) return Value(*b);
  if (auto r = caf::get_if<double>(&v)) return std::isfinite(*r) ? Value(*r) : Value();
  if (auto l = caf::get_if<caf::config_value::list>(&v)) {
    List list;
    for (auto& x : *l) list.push_back(to_value(x));
    return Value(std::move(list));
  }
  if (auto d = caf::get_if<caf::config_value::dictionary>(&v)) return to_value(*d);
  if (auto s = caf::get_if<std::string>(&v)) return Value(*s);
  return Value(caf::to_string(v));
}

Value wall_time(int64_t ns) { return ns ? Value(Timestamp{ns}) : Value(); }

Row actor_row(const ActorMetrics& m, int64_t now, const Statuses& statuses) {
  Row row;
  row.set("Id", Value(m.id));
  row.set("Kind", m.kind);
  row.set("Name", m.name());
  row.set("Parent", Value(m.parent));
  row.set("State", to_string(m.state()));
  row.set("StateForNs", Value(now - m.state_since_ns.load()));
  row.set("Mailbox", Value(m.mailbox_size()));
  row.set("Handled", Value(m.handled.load()));
  row.set("HandlingNs", Value(m.handling_ns.load()));
  row.set("HandlingMaxNs", Value(m.handling_max_ns.load()));
  int64_t busy = m.busy_since_ns.load();
  row.set("BusyForNs", Value(busy ? now - busy : int64_t{0}));
  row.set("RowsIn", Value(m.rows_in.load()));
  row.set("RowsOut", Value(m.rows_out.load()));
  row.set("BytesIn", Value(m.bytes_in.load()));
  row.set("BytesOut", Value(m.bytes_out.load()));
  row.set("Dropped", Value(m.dropped.load()));
  auto [error, at] = m.last_error();
  row.set("LastError", error);
  row.set("LastErrorTime", wall_time(at));
  row.set("StartTime", wall_time(m.start_wall_ns));
  row.set("Detached", m.detached);
  auto it = statuses.find(m.id);
  row.set("Status", it == statuses.end() ? Value() : to_value(it->second));
  return row;
}

// Asks every actor for its status on the first call, then parks until the
// answers are in (or, with nobody to wake it, polls) and gives the rows.
class ActorsStream : public RowStream {
 public:
  ActorsStream(caf::actor_system& sys, std::vector<ActorRegistry::Entry> actors, bool ask, Env& env)
      : sys_(sys), actors_(std::move(actors)), ask_(ask), env_(env), answers_(std::make_shared<Answers>()) {}

  Step next(std::vector<Row>& out, size_t budget) override {
    if (!asked_) {
      asked_ = true;
      if (ask_) {
        std::weak_ptr<Answers> answers = answers_;
        ask_statuses(sys_, actors_, kStatusTimeout, [answers, wake = env_.wake](Statuses s) {
          auto a = answers.lock();
          if (!a) return;  // the query ended meanwhile
          {
            std::lock_guard<std::mutex> lock(a->mutex);
            a->statuses = std::move(s);
            a->ready = true;
          }
          if (wake) wake();
        });
      } else {
        answers_->ready = true;
      }
    }
    if (!ready()) return env_.wake ? Step::parked() : Step::after(std::chrono::milliseconds(10));
    int64_t now = steady_ns();
    for (; next_ < actors_.size() && budget > 0; ++next_, --budget)
      out.push_back(actor_row(*actors_[next_].metrics, now, answers_->statuses));
    return next_ < actors_.size() ? Step::more() : Step::done();
  }

 private:
  struct Answers {
    std::mutex mutex;
    bool ready = false;
    Statuses statuses;  // written once, under the lock, before ready
  };
  bool ready() const {
    std::lock_guard<std::mutex> lock(answers_->mutex);
    return answers_->ready;
  }

  caf::actor_system& sys_;
  std::vector<ActorRegistry::Entry> actors_;
  const bool ask_;
  Env& env_;
  std::shared_ptr<Answers> answers_;
  bool asked_ = false;
  size_t next_ = 0;
};

std::unique_ptr<RowStream> make_actors(const Args& args, Env& env) {
  auto* registry = env.system ? ActorRegistry::of(*env.system) : nullptr;
  if (!registry)
    throw QueryError("actors(): this query runs outside an agent's actor system, so there are no actors to list");
  auto kind = args.string("kind");
  std::vector<ActorRegistry::Entry> actors;
  for (auto& e : registry->live())
    if (!kind || kind->empty() || *kind == e.metrics->kind) actors.push_back(std::move(e));
  return std::make_unique<ActorsStream>(*env.system, std::move(actors), args.boolean("status").value_or(true), env);
}

}  // namespace

void add_agent_plugins(Registry& registry) {
  registry.add(PluginSpec{
      "actors",
      "The agent's actors, one row each: Id, Kind, Name, Parent, State, StateForNs, Mailbox, Handled, "
      "HandlingNs, HandlingMaxNs, BusyForNs, RowsIn, RowsOut, BytesIn, BytesOut, Dropped, LastError, LastErrorTime, "
      "StartTime, Detached, Status (the actor's own status: a buffer's lanes, a link's state, a query's rows).",
      {{"kind", "string", false, "only actors of this kind (buffer, query, link, sensor, ...); empty: all"},
       {"status", "bool", false, "ask each actor for its own status (default TRUE)"}},
      false, make_actors});
}

}  // namespace outpost::vql
