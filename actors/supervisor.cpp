#include "actors/supervisor.hpp"

#include <spdlog/spdlog.h>

#include "actors/status.hpp"
#include "actors/waker.hpp"

namespace outpost {
namespace {

using Self = supervisor_actor::stateful_pointer<supervisor_state>;

void start_query(Self self, size_t i) {
  auto& q = self->state.queries[i];
  q.actor = self->spawn<caf::monitored>(query, q.spec, self->state.buffer, self->state.waker,
                                         self->state.make_source);
  q.started = supervisor_state::Clock::now();
}

size_t running(Self self) {
  size_t n = 0;
  for (auto& q : self->state.queries) n += q.actor ? 1 : 0;
  return n;
}

// The shutdown order: queries flush and end; then the link stops (acks it
// already sent are still in the buffer's mailbox, ahead of what follows);
// then the buffer commits what is waiting and quits; then this actor.
void advance_shutdown(Self self) {
  auto& st = self->state;
  if (running(self) > 0) return;
  if (st.link) {
    if (!st.link_stop_sent) self->send_exit(st.link, caf::exit_reason::user_shutdown);
    st.link_stop_sent = true;
  } else if (st.buffer) {
    if (!st.buffer_stop_sent) self->send(st.buffer, stop_atom::value);
    st.buffer_stop_sent = true;
  } else if (st.failed) {
    self->send_exit(st.waker, caf::exit_reason::user_shutdown);
    // Exits with an error so that the agent's exit code says so.
    self->quit(caf::make_error(caf::sec::runtime_error, "the buffer or the link failed"));
  } else {
    self->send_exit(st.waker, caf::exit_reason::user_shutdown);
    self->quit();
  }
}

// Once every query has handed its last batch to the buffer, the buffer
// answers every append still waiting, so that no query waits for space that
// will never come (a full buffer with the link offline).
void settle_buffer(Self self) {
  auto& st = self->state;
  if (--st.handovers_pending > 0 || !st.buffer) return;
  self->request(st.buffer, caf::infinite, settle_atom::value)
      .then([](uint64_t) {}, [](caf::error&) {});  // a dead buffer is handled by on_down
}

void begin_shutdown(Self self) {
  auto& st = self->state;
  if (st.stopping) return;
  st.stopping = true;
  spdlog::info("supervisor: stopping {} queries", running(self));
  st.handovers_pending = 1;  // released below, after every stop request is out
  for (auto& q : st.queries) {
    if (!q.actor) continue;
    if (!st.buffer) {
      // Without a buffer their appends would never be answered: end them now.
      self->send_exit(q.actor, caf::exit_reason::user_shutdown);
      continue;
    }
    ++st.handovers_pending;
    self->request(q.actor, caf::infinite, stop_atom::value)
        .then([=](uint64_t) { settle_buffer(self); },
              [=](caf::error&) { settle_buffer(self); });  // it ended first
  }
  settle_buffer(self);
}

void on_down(Self self, const caf::down_msg& down) {
  auto& st = self->state;
  std::string reason = down.reason ? self->system().render(down.reason) : "normal";
  bool is_buffer = st.buffer && down.source == st.buffer.address();
  bool is_link = st.link && down.source == st.link.address();
  if (is_buffer || is_link) {
    if (!(is_buffer ? st.buffer_stop_sent : st.link_stop_sent)) {
      spdlog::critical("supervisor: the {} stopped ({}); shutting the agent down",
                       is_buffer ? "buffer" : "link", reason);
      st.failed = true;
    }
    if (is_buffer)
      st.buffer = nullptr;
    else
      st.link = nullptr;
    begin_shutdown(self);
    advance_shutdown(self);
    return;
  }
  for (size_t i = 0; i < st.queries.size(); ++i) {
    auto& q = st.queries[i];
    if (!q.actor || down.source != q.actor.address()) continue;
    q.actor = nullptr;
    if (st.stopping || q.retired || !down.reason || q.origin == supervisor_state::Query::Origin::collection) {
      if (down.reason && !st.stopping && !q.retired)
        spdlog::error("collection {} ({}) failed: {}", q.spec->name, q.spec->artifact, reason);
      q.finished = !down.reason;
      if (!down.reason) spdlog::info("query {} finished", q.spec->name);
      break;
    }
    q.last_error = reason;
    auto ran = supervisor_state::Clock::now() - q.started;
    q.backoff = ran >= st.policy.healthy || q.backoff.count() == 0
                    ? st.policy.initial
                    : std::min(st.policy.cap, q.backoff * 2);
    ++q.restarts;
    spdlog::error("query {} failed: {}; restart {} in {} ms", q.spec->name, reason, q.restarts,
                  q.backoff.count());
    self->delayed_send(self, q.backoff, restart_atom::value, uint64_t{i});
    break;
  }
  if (st.stopping) advance_shutdown(self);
}

caf::settings status_of(Self self) {
  auto& st = self->state;
  caf::settings s;
  put_count(s, "queries", st.queries.size());
  put_count(s, "running", running(self));
  caf::put(s, "stopping", st.stopping);
  caf::put(s, "failed", st.failed);
  static const char* kOrigins[] = {"config", "event_table", "collection"};
  for (auto& q : st.queries) {
    std::string key = "query." + q.spec->name + ".";
    caf::put(s, key + "artifact", q.spec->artifact);
    caf::put(s, key + "origin", std::string(kOrigins[static_cast<int>(q.origin)]));
    put_count(s, key + "restarts", q.restarts);
    caf::put(s, key + "running", static_cast<bool>(q.actor));
    caf::put(s, key + "finished", q.finished);
    caf::put(s, key + "retired", q.retired);
    if (!q.last_error.empty()) caf::put(s, key + "last_error", q.last_error);
  }
  return s;
}

supervisor_state::Query* find_query(Self self, uint64_t id) {
  for (auto& q : self->state.queries)
    if (q.spec->id == id) return &q;
  return nullptr;
}

size_t add_query(Self self, QuerySpec spec, supervisor_state::Query::Origin origin) {
  supervisor_state::Query q;
  q.origin = origin;
  q.spec = std::make_shared<const QuerySpec>(std::move(spec));
  self->state.queries.push_back(std::move(q));
  size_t i = self->state.queries.size() - 1;
  start_query(self, i);
  return i;
}

// Stops a query for good; `then` runs once it has handed over its last batch.
void retire(Self self, supervisor_state::Query& q, std::function<void()> then) {
  q.retired = true;
  if (!q.actor) return then();
  self->request(q.actor, caf::infinite, stop_atom::value)
      .then([then](uint64_t) { then(); }, [then](caf::error&) { then(); });
}

// The collector's request as a query this agent can run, or ConfigError.
QuerySpec checked_query(Self self, const CollectSpec& request, Lane lane) {
  auto spec = collected_query(request, lane);
  if (self->state.make_source.check) try {
      self->state.make_source.check(spec);
    } catch (const std::exception& e) {
      throw ConfigError("collect " + (request.artifact.empty() ? std::string("VQL") : request.artifact) + ": " +
                        e.what());
    }
  return spec;
}

void collect(Self self, const CollectSpec& request, ControlAnswer& answer) {
  if (find_query(self, request.flow_id))  // a request sent again after a lost answer
    return answer.answer({{}, request.flow_id, {}});
  try {
    auto spec = checked_query(self, request, Lane::RESULTS);
    size_t i = add_query(self, std::move(spec), supervisor_state::Query::Origin::collection);
    spdlog::info("collection {} ({}) started", self->state.queries[i].spec->name, request.artifact);
    answer.answer({{}, request.flow_id, {}});
  } catch (const ConfigError& e) {
    answer.answer({e.what(), 0, {}});
  }
}

// Stops the flow's query (if this agent still runs it) and then deletes
// whatever of it the buffer holds, including appends waiting for space.
void cancel(Self self, uint64_t flow_id, std::shared_ptr<ControlAnswer> answer) {
  auto purge = [self, flow_id, answer] {
    auto& st = self->state;
    if (!st.buffer) return answer->answer({"the buffer is gone", 0, {}});
    self->request(st.buffer, caf::infinite, purge_atom::value, flow_id)
        .then([answer](uint64_t n) { answer->answer({{}, n, {}}); },
              [self, answer](caf::error& e) { answer->answer({self->system().render(e), 0, {}}); });
  };
  auto* q = find_query(self, flow_id);
  if (!q) return purge();  // rows of a flow from before a restart may still be buffered
  spdlog::info("query {} cancelled by the collector", q->spec->name);
  retire(self, *q, purge);
}

// Makes the collector's event table the set of event-table queries running:
// entries already running (same flow id) go on untouched. Checks every
// entry before changing anything.
void set_event_table(Self self, const std::vector<CollectSpec>& table, ControlAnswer& answer) {
  using Origin = supervisor_state::Query::Origin;
  std::vector<QuerySpec> wanted;
  std::string errors;
  for (auto& entry : table) try {
      wanted.push_back(checked_query(self, entry, Lane::EVENTS));
    } catch (const ConfigError& e) {
      errors += (errors.empty() ? "" : "; ") + std::string(e.what());
    }
  for (auto& w : wanted)
    if (auto* q = find_query(self, w.id); q && (q->origin != Origin::event_table || q->retired))
      errors += (errors.empty() ? "" : "; ") + std::string("flow id ") + std::to_string(w.id) +
                " is already used by " + q->spec->name;
  if (!errors.empty()) return answer.answer({errors, 0, {}});
  auto& st = self->state;
  for (auto& q : st.queries) {
    bool keep = std::any_of(wanted.begin(), wanted.end(), [&](auto& w) { return w.id == q.spec->id; });
    if (q.origin == Origin::event_table && !q.retired && !keep) {
      spdlog::info("event query {} ({}) removed from the event table", q.spec->name, q.spec->artifact);
      retire(self, q, [] {});
    }
  }
  for (auto& w : wanted) {
    if (find_query(self, w.id)) continue;  // running already
    spdlog::info("event query {} ({}) started", w.name, w.artifact);
    add_query(self, std::move(w), Origin::event_table);
  }
  answer.answer({{}, table.size(), {}});
}

void on_control(Self self, ControlCall& call) {
  auto& answer = *call.answer;
  if (self->state.stopping) return answer.answer({"the agent is shutting down", 0, {}});
  switch (call.kind) {
    case ControlCall::Kind::collect:
      if (call.specs.size() != 1) return answer.answer({"collect takes one request", 0, {}});
      return collect(self, call.specs[0], answer);
    case ControlCall::Kind::cancel: return cancel(self, call.flow_id, call.answer);
    case ControlCall::Kind::set_event_table: return set_event_table(self, call.specs, answer);
    case ControlCall::Kind::status: {
      auto s = status_of(self);
      if (!self->state.buffer) return answer.answer({{}, 0, settings_json(s)});
      self->request(self->state.buffer, std::chrono::seconds(10), status_atom::value)
          .then(
              [s, a = call.answer](caf::settings& buffer) mutable {
                caf::put(s, "buffer", std::move(buffer));
                a->answer({{}, 0, settings_json(s)});
              },
              [s, a = call.answer](caf::error&) { a->answer({{}, 0, settings_json(s)}); });
      return;
    }
  }
}

}  // namespace

supervisor_actor::behavior_type supervisor(supervisor_actor::stateful_pointer<supervisor_state> self,
                                           buffer_actor buffer, link_actor link,
                                           std::vector<QuerySpec> queries,
                                           SourceFactory make_source, RestartPolicy policy) {
  auto& st = self->state;
  st.buffer = std::move(buffer);
  st.link = std::move(link);
  st.make_source = std::move(make_source);
  st.policy = policy;
  st.waker = self->spawn(waker);
  self->monitor(st.buffer);
  self->monitor(st.link);
  self->set_down_handler([=](caf::down_msg& down) { on_down(self, down); });
  for (auto& spec : queries) {
    supervisor_state::Query q;
    q.spec = std::make_shared<const QuerySpec>(spec);
    st.queries.push_back(std::move(q));
  }
  for (size_t i = 0; i < st.queries.size(); ++i) start_query(self, i);
  spdlog::info("supervisor: started {} queries", st.queries.size());
  return {
      [=](stop_atom) {
        begin_shutdown(self);
        advance_shutdown(self);
      },
      [=](control_atom, ControlCall& call) { on_control(self, call); },
      [=](restart_atom, uint64_t i) {
        auto& st = self->state;
        if (!st.stopping && i < st.queries.size() && !st.queries[i].retired) start_query(self, i);
      },
      [=](status_atom) { return status_of(self); },
  };
}

}  // namespace outpost
