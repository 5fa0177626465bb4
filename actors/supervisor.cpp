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
    if (st.stopping || !down.reason) {
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
      [=](restart_atom, uint64_t i) {
        if (!self->state.stopping && i < self->state.queries.size()) start_query(self, i);
      },
      [=](status_atom) {
        auto& st = self->state;
        caf::settings s;
        put_count(s, "queries", st.queries.size());
        put_count(s, "running", running(self));
        caf::put(s, "stopping", st.stopping);
        caf::put(s, "failed", st.failed);
        for (auto& q : st.queries) {
          std::string key = "query." + q.spec->name + ".";
          put_count(s, key + "restarts", q.restarts);
          caf::put(s, key + "running", static_cast<bool>(q.actor));
          caf::put(s, key + "finished", q.finished);
          if (!q.last_error.empty()) caf::put(s, key + "last_error", q.last_error);
        }
        return s;
      },
  };
}

}  // namespace outpost
