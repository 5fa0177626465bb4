#include "actors/supervisor.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "actors/registry.hpp"
#include "actors/status.hpp"
#include "actors/waker.hpp"
#include "schemas/codec.hpp"

namespace outpost {
namespace {

using Self = instrumented<supervisor_self_actor, supervisor_state>;

// A collection's start or end, as a status record on the control lane for
// the collector's `flows`. Not budgeted like a query's rows (a few hundred
// bytes a flow); a full buffer holds it like any append.
void report_flow(Self self, schemas::Encoded record) {
  auto& st = self->state;
  if (!st.buffer) return;
  auto encoded = std::make_shared<const schemas::Encoded>(std::move(record));
  self->request(st.buffer, caf::infinite, append_atom::value, Lane::CONTROL, RecordRef{encoded, 0, 0})
      .then([](uint64_t) {},
            [self](caf::error& e) {
              spdlog::warn("supervisor: a flow's status record was not stored: {}", self->system().render(e));
            });
}

void start_query(Self self, size_t i) {
  auto& q = self->state.queries[i];
  q.actor = self->spawn<caf::monitored>(query, q.spec, self->state.buffer, self->state.waker,
                                         self->state.make_source);
  q.started = supervisor_state::Clock::now();
  if (q.origin != supervisor_state::Origin::collection) return;
  if (q.metrics) {  // restarted by the operator: the same flow goes on
    q.rows_before += q.metrics->rows_out.load();
    q.bytes_before += q.metrics->bytes_out.load();
  }
  if (auto* registry = ActorRegistry::of(self->system())) q.metrics = registry->find(q.actor->id());
  if (!std::exchange(q.flow_reported, true))
    report_flow(self, schemas::encode_flow_started(q.spec->id, q.spec->artifact));
}

size_t running(Self self) {
  size_t n = 0;
  for (auto& q : self->state.queries) n += q.actor ? 1 : 0;
  return n;
}

// The shutdown order: queries hand over and end; then the link stops (acks it
// already sent are still in the buffer's mailbox, ahead of what follows);
// then the buffer commits what is waiting and quits; then this actor.
void advance_shutdown(Self self) {
  auto& st = self->state;
  if (running(self) > 0) return;
  if (st.link) {
    if (!st.link_stop_sent) self->send_exit(st.link, caf::exit_reason::user_shutdown);
    st.link_stop_sent = true;
  } else if (st.buffer) {
    if (!st.buffer_close_sent) self->send(st.buffer, close_atom::value);
    st.buffer_close_sent = true;
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
    self->request(q.actor, caf::infinite, hand_over_atom::value)
        .then([=](uint64_t) { settle_buffer(self); },
              [=](caf::error&) { settle_buffer(self); });  // it ended first
  }
  settle_buffer(self);
}

supervisor_state::Query* find_query(Self self, uint64_t id) {
  for (auto& q : self->state.queries)
    if (q.spec->id == id) return &q;
  return nullptr;
}

const supervisor_state::Ended* find_ended(Self self, uint64_t id) {
  auto& recent = self->state.recent;
  for (auto it = recent.rbegin(); it != recent.rend(); ++it)
    if (it->id == id) return &*it;
  return nullptr;
}

// A collection or event query leaves the list for good, remembered in `recent`.
void end_query(Self self, uint64_t id, supervisor_state::Ended::How how, std::string error = {}) {
  auto& st = self->state;
  auto it = std::find_if(st.queries.begin(), st.queries.end(), [id](auto& q) { return q.spec->id == id; });
  if (it == st.queries.end()) return;
  if (it->origin == supervisor_state::Origin::collection) {
    using Outcome = schema::QueryStatus::Outcome;
    schemas::FlowEnd end;
    end.rows = it->rows_before + (it->metrics ? it->metrics->rows_out.load() : 0);
    end.bytes = it->bytes_before + (it->metrics ? it->metrics->bytes_out.load() : 0);
    end.duration_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(supervisor_state::Clock::now() - it->started)
                          .count();
    end.outcome = how == supervisor_state::Ended::How::failed      ? Outcome::FAILED
                  : how == supervisor_state::Ended::How::cancelled ? Outcome::CANCELLED
                                                                   : Outcome::FINISHED;
    end.error = error;
    report_flow(self, schemas::encode_flow_finished(id, it->spec->artifact, end));
  }
  st.recent.push_back({how, id, it->request_id, it->spec->name, it->spec->artifact, it->origin, std::move(error)});
  if (st.recent.size() > kRecentFlows) st.recent.pop_front();
  st.queries.erase(it);
}

void on_down(Self self, const caf::down_msg& down) {
  using How = supervisor_state::Ended::How;
  using Origin = supervisor_state::Origin;
  auto& st = self->state;
  std::string reason = down.reason ? readable_error(self->system(), down.reason) : "normal";
  bool is_buffer = st.buffer && down.source == st.buffer.address();
  bool is_link = st.link && down.source == st.link.address();
  if (is_buffer || is_link) {
    if (!(is_buffer ? st.buffer_close_sent : st.link_stop_sent)) {
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
  for (auto& q : st.queries) {
    if (!q.actor || down.source != q.actor.address()) continue;
    q.actor = nullptr;
    uint64_t id = q.spec->id;
    if (st.stopping) break;
    if (q.restart_now && !q.retired) {
      q.restart_now = false;
      q.halt = supervisor_state::Query::Halt::none;
      spdlog::info("query {} restarted by the operator", q.spec->name);
      start_query(self, static_cast<size_t>(&q - st.queries.data()));
      break;
    }
    if (q.retired) {
      end_query(self, id, q.origin == Origin::collection ? How::cancelled : How::removed);
      break;
    }
    if (q.halt == supervisor_state::Query::Halt::cancelled) break;  // the operator's: it stays stopped
    if (!down.reason) {
      spdlog::info("query {} finished", q.spec->name);
      if (q.origin == Origin::config)
        q.halt = supervisor_state::Query::Halt::finished;
      else
        end_query(self, id, How::finished);
      break;
    }
    if (q.origin == Origin::collection) {
      spdlog::error("collection {} ({}) failed: {}", q.spec->name, q.spec->artifact, reason);
      end_query(self, id, How::failed, reason);
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
    self->delayed_send(self, q.backoff, internal_atom::value, restart_atom::value, id);
    break;
  }
  if (st.stopping) advance_shutdown(self);
}

const char* origin_name(supervisor_state::Origin origin) {
  static const char* kOrigins[] = {"config", "event_table", "collection"};
  return kOrigins[static_cast<int>(origin)];
}

// Keyed by query name under "query" (one key each: a name may hold dots,
// which caf::put would take for a path), and the ended flows under
// "recent", oldest first.
caf::settings status_of(Self self) {
  auto& st = self->state;
  caf::settings s;
  put_count(s, "queries", st.queries.size());
  put_count(s, "running", running(self));
  caf::put(s, "stopping", st.stopping);
  caf::put(s, "failed", st.failed);
  auto& queries = caf::put_dictionary(s, "query");
  for (auto& q : st.queries) {
    caf::settings e;
    caf::put(e, "artifact", q.spec->artifact);
    caf::put(e, "origin", std::string(origin_name(q.origin)));
    put_count(e, "restarts", q.restarts);
    caf::put(e, "running", static_cast<bool>(q.actor));
    caf::put(e, "finished", q.halt == supervisor_state::Query::Halt::finished);
    caf::put(e, "cancelled", q.halt == supervisor_state::Query::Halt::cancelled);
    caf::put(e, "retired", q.retired);
    if (!q.last_error.empty()) caf::put(e, "last_error", q.last_error);
    queries.insert_or_assign(q.spec->name, caf::config_value{std::move(e)});
  }
  static const char* kHow[] = {"finished", "failed", "cancelled", "removed"};
  auto& recent = caf::put_list(s, "recent");
  for (auto& r : st.recent) {
    caf::settings e;
    caf::put(e, "name", r.name);
    caf::put(e, "artifact", r.artifact);
    caf::put(e, "origin", std::string(origin_name(r.origin)));
    caf::put(e, "ended", std::string(kHow[static_cast<int>(r.how)]));
    if (!r.error.empty()) caf::put(e, "error", r.error);
    recent.emplace_back(std::move(e));
  }
  return s;
}

void add_query(Self self, QuerySpec spec, supervisor_state::Origin origin, std::string request_id) {
  supervisor_state::Query q;
  q.origin = origin;
  q.spec = std::make_shared<const QuerySpec>(std::move(spec));
  q.request_id = std::move(request_id);
  self->state.queries.push_back(std::move(q));
  start_query(self, self->state.queries.size() - 1);
}

// Stops a collection or event query for good; `then` runs once it has
// handed over its last batch (it leaves the list when it has ended).
void retire(Self self, uint64_t id, std::function<void()> then) {
  auto* q = find_query(self, id);
  if (!q) return then();
  q->retired = true;
  if (!q->actor) {  // waiting to restart
    end_query(self, id, q->origin == supervisor_state::Origin::collection
                            ? supervisor_state::Ended::How::cancelled
                            : supervisor_state::Ended::How::removed);
    return then();
  }
  self->request(q->actor, caf::infinite, hand_over_atom::value)
      .then([then](uint64_t) { then(); }, [then](caf::error&) { then(); });
}

// The collector's request as a query this agent can run, or ConfigError
// naming `what` ("collect" or "event table") and the artifact.
QuerySpec checked_query(Self self, const CollectSpec& request, Lane lane) {
  auto spec = collected_query(request, lane);
  if (self->state.make_source.check) try {
      self->state.make_source.check(spec);
    } catch (const std::exception& e) {
      throw ConfigError((lane == Lane::EVENTS ? "event table " : "collect ") +
                        (request.artifact.empty() ? std::string("VQL") : request.artifact) + ": " + e.what());
    }
  return spec;
}

std::string hex(const std::string& bytes) {
  std::string out;
  for (unsigned char c : bytes) out += fmt::format("{:02x}", c);
  return out;
}

// A request is run once: one sent again (its answer lost, or queued at the
// collector across a restart) carries the same request id and is answered
// with its flow id, whether it still runs or ended recently. A new request
// may reuse the flow id of an ended one (a collector whose state was reset),
// but not that of a query still here.
void collect(Self self, const CollectSpec& request, ControlAnswer& answer) {
  auto& st = self->state;
  auto* q = find_query(self, request.flow_id);
  if (!request.request_id.empty()) {
    for (auto& r : st.queries)
      if (r.request_id == request.request_id) return answer.answer({{}, r.spec->id, {}});
    for (auto& r : st.recent)
      if (r.request_id == request.request_id) return answer.answer({{}, r.id, {}});
  } else if (q && q->origin == supervisor_state::Origin::collection && q->request_id.empty()) {
    return answer.answer({{}, request.flow_id, {}});  // an older collector's request sent again
  }
  if (request.flow_id < kFirstFlowId)
    return answer.answer({"collect: flow id " + std::to_string(request.flow_id) +
                              " is below 4294967296, where configured queries' ids are",
                          0, {}});
  if (q)
    return answer.answer({"collect: flow id " + std::to_string(request.flow_id) + " is already used by " +
                              q->spec->name + " (" + q->spec->artifact + ")",
                          0, {}});
  try {
    auto spec = checked_query(self, request, Lane::RESULTS);
    spdlog::info("collection {} ({}) started{}", spec.name, request.artifact,
                 request.request_id.empty() ? "" : ", request " + hex(request.request_id));
    add_query(self, std::move(spec), supervisor_state::Origin::collection, request.request_id);
    answer.answer({{}, request.flow_id, {}});
  } catch (const ConfigError& e) {
    answer.answer({e.what(), 0, {}});
  }
}

// Stops a collection (if this agent still runs it) and then deletes
// whatever of it the buffer holds, including appends waiting for space.
// A configured query or an event query is refused: only the configuration,
// or the event table, stops those. A flow that ended recently, or one this
// agent does not know (from before it restarted) of which the buffer holds
// rows, has its rows deleted; one that is none of these is refused.
void cancel(Self self, uint64_t flow_id, std::shared_ptr<ControlAnswer> answer) {
  using Origin = supervisor_state::Origin;
  auto purge = [self, flow_id, answer](CancelOutcome outcome) {
    auto& st = self->state;
    if (!st.buffer) return answer->answer({"the buffer is gone", 0, {}});
    self->request(st.buffer, caf::infinite, purge_atom::value, flow_id)
        .then(
            [flow_id, answer, outcome](uint64_t n) {
              if (n == 0 && outcome == CancelOutcome::not_running)
                return answer->answer({"no such flow " + std::to_string(flow_id), 0, {}});
              answer->answer({{}, n, {}, outcome});
            },
            [self, answer](caf::error& e) { answer->answer({self->system().render(e), 0, {}}); });
  };
  auto refuse = [&](Origin origin, const std::string& name) {
    answer->answer({"flow " + std::to_string(flow_id) + " is " +
                        (origin == Origin::config
                             ? "the configured query " + name + ": only the agent's configuration stops it"
                             : "the event query " + name + ": change the event table to stop it"),
                    0, {}});
  };
  if (auto* q = find_query(self, flow_id)) {
    if (q->origin != Origin::collection) return refuse(q->origin, q->spec->name);
    if (q->retired) return purge(CancelOutcome::stopped);  // a cancel sent again
    spdlog::info("query {} cancelled by the collector", q->spec->name);
    return retire(self, flow_id, [purge] { purge(CancelOutcome::stopped); });
  }
  if (auto* r = find_ended(self, flow_id)) {
    if (r->origin != Origin::collection) return refuse(r->origin, r->name);
    return purge(CancelOutcome::already_finished);
  }
  if (flow_id < kFirstFlowId)  // never a collection's: rows of configured queries are not the collector's to delete
    return answer->answer({"no such flow " + std::to_string(flow_id), 0, {}});
  purge(CancelOutcome::not_running);
}

// Makes the collector's event table the set of event-table queries running:
// entries already running (same flow id) go on untouched. Checks every
// entry before changing anything.
void set_event_table(Self self, const std::vector<CollectSpec>& table, ControlAnswer& answer) {
  using Origin = supervisor_state::Origin;
  std::vector<std::pair<QuerySpec, std::string>> wanted;  // with its request id
  std::string errors;
  for (auto& entry : table) try {
      wanted.emplace_back(checked_query(self, entry, Lane::EVENTS), entry.request_id);
    } catch (const ConfigError& e) {
      errors += (errors.empty() ? "" : "; ") + std::string(e.what());
    }
  for (auto& [w, request_id] : wanted)
    if (auto* q = find_query(self, w.id); q && (q->origin != Origin::event_table || q->retired))
      errors += (errors.empty() ? "" : "; ") + std::string("flow id ") + std::to_string(w.id) +
                " is already used by " + q->spec->name;
    else if (w.id < kFirstFlowId)
      errors += (errors.empty() ? "" : "; ") + std::string("flow id ") + std::to_string(w.id) +
                " is below 4294967296, where configured queries' ids are";
  if (!errors.empty()) return answer.answer({errors, 0, {}});
  std::vector<uint64_t> drop;
  for (auto& q : self->state.queries) {
    bool keep = std::any_of(wanted.begin(), wanted.end(), [&](auto& w) { return w.first.id == q.spec->id; });
    if (q.origin == Origin::event_table && !q.retired && !keep) {
      spdlog::info("event query {} ({}) removed from the event table", q.spec->name, q.spec->artifact);
      drop.push_back(q.spec->id);
    }
  }
  for (uint64_t id : drop) retire(self, id, [] {});
  for (auto& [w, request_id] : wanted) {
    if (find_query(self, w.id)) continue;  // running already
    spdlog::info("event query {} ({}) started", w.name, w.artifact);
    add_query(self, std::move(w), Origin::event_table, request_id);
  }
  answer.answer({{}, table.size(), {}});
}

// The query the operator names, by name or by id.
supervisor_state::Query* find_named(Self self, const std::string& name) {
  for (auto& q : self->state.queries)
    if (q.spec->name == name || std::to_string(q.spec->id) == name) return &q;
  return nullptr;
}

// The operator's suspend or resume, passed to the running query.
template <class Atom>
caf::result<std::string> operate(Self self, Atom atom, const std::string& name) {
  auto* q = find_named(self, name);
  bool suspend = std::is_same<Atom, suspend_atom>::value;
  if (!q) return caf::make_error(caf::sec::runtime_error, "no query named " + name);
  if (!q->actor)
    return caf::make_error(caf::sec::runtime_error, "query " + name + " is not running" +
                                                        (q->halt == supervisor_state::Query::Halt::finished    ? " (it finished)"
                                                         : q->halt == supervisor_state::Query::Halt::cancelled ? " (it was cancelled)"
                                                                                                          : ""));
  auto rp = self->make_response_promise<std::string>();
  std::string what = std::string(suspend ? "suspended " : "resumed ") + q->spec->name;
  self->request(q->actor, std::chrono::seconds(10), atom)
      .then([rp, what, suspend](bool changed) mutable {
              rp.deliver(changed ? what : what + " (it was " + (suspend ? "suspended" : "running") + " already)");
            },
            [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
  return rp;
}

caf::result<std::string> operator_restart(Self self, const std::string& name) {
  auto& st = self->state;
  auto* q = find_named(self, name);
  if (st.stopping) return caf::make_error(caf::sec::runtime_error, "the agent is shutting down");
  if (!q) return caf::make_error(caf::sec::runtime_error, "no query named " + name);
  if (q->retired) return caf::make_error(caf::sec::runtime_error, "query " + name + " is being cancelled");
  if (!q->actor) {  // finished, cancelled, or waiting out its backoff
    q->halt = supervisor_state::Query::Halt::none;
    spdlog::info("query {} restarted by the operator", q->spec->name);
    start_query(self, static_cast<size_t>(q - st.queries.data()));
    return "restarted " + q->spec->name;
  }
  q->restart_now = true;
  self->request(q->actor, caf::infinite, hand_over_atom::value).then([](uint64_t) {}, [](caf::error&) {});
  return "restarting " + q->spec->name + " (it hands over its last batch first)";
}

// The operator's cancel: the query stops (handing over its last batch), then
// every row of it the buffer holds is deleted, appends waiting for space
// included. A configured query stays listed, stopped, until the operator
// restarts it; a collection or event query ends as a cancel from the
// collector ends it.
caf::result<std::string> operator_cancel(Self self, const std::string& name) {
  using Halt = supervisor_state::Query::Halt;
  auto& st = self->state;
  auto* q = find_named(self, name);
  if (st.stopping) return caf::make_error(caf::sec::runtime_error, "the agent is shutting down");
  if (!q) return caf::make_error(caf::sec::runtime_error, "no query named " + name);
  if (q->retired) return caf::make_error(caf::sec::runtime_error, "query " + name + " is being cancelled");
  auto rp = self->make_response_promise<std::string>();
  uint64_t id = q->spec->id;
  std::string what = "cancelled " + q->spec->name;
  auto purge = [self, id, what, rp]() mutable {
    auto& st = self->state;
    if (!st.buffer) {
      rp.deliver(caf::make_error(caf::sec::runtime_error, "the buffer is gone"));
      return;
    }
    self->request(st.buffer, caf::infinite, purge_atom::value, id)
        .then([rp, what](uint64_t n) mutable { rp.deliver(what + "; " + std::to_string(n) + " buffered records of it deleted"); },
              [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
  };
  spdlog::info("query {} cancelled by the operator; its buffered rows are deleted", q->spec->name);
  if (q->origin != supervisor_state::Origin::config) {
    retire(self, id, purge);
    return rp;
  }
  q->halt = Halt::cancelled;
  q->restart_now = false;
  if (!q->actor) {
    purge();
    return rp;
  }
  self->request(q->actor, caf::infinite, hand_over_atom::value)
      .then([purge](uint64_t) mutable { purge(); }, [purge](caf::error&) mutable { purge(); });
  return rp;
}

// The operator's link reconnect or buffer compaction, passed on.
caf::result<std::string> operator_reconnect(Self self) {
  if (!self->state.link) return caf::make_error(caf::sec::runtime_error, "the link is gone");
  auto rp = self->make_response_promise<std::string>();
  self->request(self->state.link, std::chrono::seconds(10), reconnect_atom::value)
      .then([rp](std::string& s) mutable { rp.deliver(s); }, [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
  return rp;
}

caf::result<std::string> operator_compact(Self self) {
  if (!self->state.buffer) return caf::make_error(caf::sec::runtime_error, "the buffer is gone");
  auto rp = self->make_response_promise<std::string>();
  self->request(self->state.buffer, caf::infinite, compact_atom::value)
      .then([rp](uint64_t before, uint64_t after) mutable {
              rp.deliver("compacted the buffer's file: " + std::to_string(before) + " -> " + std::to_string(after) +
                         " bytes");
            },
            [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
  return rp;
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

supervisor_self_actor::behavior_type supervisor(instrumented<supervisor_self_actor, supervisor_state> self,
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
      [=](shutdown_atom) {
        begin_shutdown(self);
        advance_shutdown(self);
      },
      [=](control_atom, ControlCall& call) { on_control(self, call); },
      [=](internal_atom, restart_atom, uint64_t id) {
        auto& st = self->state;
        if (st.stopping) return;
        for (size_t i = 0; i < st.queries.size(); ++i)
          if (st.queries[i].spec->id == id && !st.queries[i].retired && !st.queries[i].actor &&
              st.queries[i].halt == supervisor_state::Query::Halt::none)
            start_query(self, i);
      },
      [=](suspend_atom a, const std::string& name) { return operate(self, a, name); },
      [=](resume_atom a, const std::string& name) { return operate(self, a, name); },
      [=](restart_atom, const std::string& name) { return operator_restart(self, name); },
      [=](cancel_atom, const std::string& name) { return operator_cancel(self, name); },
      [=](reconnect_atom) { return operator_reconnect(self); },
      [=](compact_atom) { return operator_compact(self); },
      [=](status_atom) { return status_of(self); },
  };
}

}  // namespace outpost
