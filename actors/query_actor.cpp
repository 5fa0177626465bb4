#include "actors/query_actor.hpp"

#include <spdlog/spdlog.h>

#include "actors/status.hpp"
#include "persistence/record_format.hpp"

namespace outpost {
namespace {

using Self = instrumented<query_self_actor, query_state>;

// Rows per pull: small enough that one message is short work for a worker.
constexpr size_t kPullBudget = 256;

void schedule_pull(Self self, std::chrono::nanoseconds delay = {}) {
  auto& st = self->state;
  if (st.pull_scheduled || st.paused || st.budget_wait || !st.budget || st.source_done ||
      st.stopping || st.suspended)
    return;
  st.pull_scheduled = true;
  st.asleep = delay.count() > 0;
  if (!st.asleep)
    self->send(self, pull_atom::value);
  else
    self->send(st.waker, sleep_atom::value, caf::timespan{delay});
}

// The query waits for its appends' answers: the buffer is to commit what
// waits now rather than group it with later appends.
void hurry_buffer(Self self) {
  auto& st = self->state;
  if (st.in_flight > 0) self->send(st.buffer, commit_atom::value);
}

void maybe_quit(Self self) {
  auto& st = self->state;
  // Rows the source accepted wait for the budget, which the hand-over needs.
  bool empty = (!st.batch || st.batch->row_count() == 0) && !st.held &&
               (st.budget || !st.source->holds_accepted_rows());
  if ((st.stopping || st.source_done) && empty) hurry_buffer(self);
  if ((st.stopping || st.source_done) && st.in_flight == 0 && empty) {
    spdlog::info("query {} stopped: {} rows produced, {} rows committed", st.spec->name,
                 st.rows_produced, st.rows_committed);
    self->quit();
  }
}

void resume(Self self) {
  auto& st = self->state;
  st.paused = false;
  st.paused_total += query_state::Clock::now() - st.paused_since;
  schedule_pull(self);
}

// The next batch starts with room for about as much as the last one took:
// idle queries then hold a few hundred bytes each, busy ones one segment.
unsigned next_batch_words(size_t last_words, size_t batch_bytes) {
  size_t cap = std::max<size_t>(std::min<size_t>(batch_bytes, schemas::kMaxRecordBytes) / sizeof(capnp::word), 32);
  return static_cast<unsigned>(std::clamp<size_t>(last_words + last_words / 8 + 8, 32, cap));
}

void send_batch(Self self);

// Waits until the budget has room for `bytes`; false if it has already.
bool wait_for_budget(Self self, uint64_t bytes) {
  auto& st = self->state;
  st.budget_wait = st.budget->wait_for(bytes, [weak = caf::actor_cast<caf::weak_actor_ptr>(self)] {
    if (auto strong = caf::actor_cast<caf::actor>(weak.lock())) caf::anon_send(strong, budget_atom::value);
  });
  if (!st.budget_wait) return false;
  ++st.budget_waits;
  self->send(st.buffer, commit_atom::value);  // its answers free budget, whoever's appends they are
  return true;
}

// A record's bytes as the buffer's store accounts them (its overhead per
// record included), so that the shutdown reserve, sized by the budget, holds
// every record the budget let through.
uint64_t budget_bytes(const RecordRef& record) {
  return persistence::record_format::accounted_bytes(record.encoded->size());
}

// Hands one record to the buffer; `rows` of the query's are in it. Its
// bytes count in the budget until the buffer answers; `reserved` says the
// caller took them already, else they are taken whatever the budget.
void append(Self self, Lane lane, RecordRef record, uint64_t rows, bool reserved = false) {
  auto& st = self->state;
  uint64_t bytes = budget_bytes(record);
  if (!reserved) st.budget->reserve(bytes);
  st.reserved += bytes;
  ++st.in_flight;
  if (st.in_flight >= st.spec->max_in_flight && !st.paused) {
    st.paused = true;  // stop pulling until the buffer answers
    ++st.pauses;
    st.paused_since = query_state::Clock::now();
  }
  bool hurry = st.paused;
  record.rows = rows;
  if (auto* m = self->metrics()) m->add_out(rows, record.encoded->size());
  // No timeout: a full buffer holds the answer for as long as it stays full.
  self->request(st.buffer, caf::infinite, append_atom::value, lane, std::move(record))
      .then(
          [=](uint64_t) {
            auto& st = self->state;
            st.reserved -= bytes;
            st.budget->release(bytes);
            --st.in_flight;
            st.rows_committed += rows;
            if (st.paused && st.in_flight < st.spec->max_in_flight) {
              resume(self);
              if (st.batch_due) send_batch(self);
            }
            if (st.in_flight == 0) send_batch(self);  // what came in meanwhile
            maybe_quit(self);
          },
          [=](caf::error& err) {
            auto& st = self->state;
            st.reserved -= bytes;
            st.budget->release(bytes);
            auto level = st.stopping ? spdlog::level::warn : spdlog::level::err;
            spdlog::log(level, "query {}: {} rows not stored: {}", st.spec->name,
                        st.rows_produced - st.rows_committed, self->system().render(err));
            self->quit(err);
          });
  if (hurry) hurry_buffer(self);
}

// Rows the writer refused, each alone bigger than a record may be: counted,
// logged, and reported to the collector in a log record on the control lane.
// The query goes on with its next rows.
void report_refused(Self self, const schemas::RowBatchWriter::Refused& refused) {
  if (refused.rows == 0) return;
  auto& st = self->state;
  st.rows_refused += refused.rows;
  std::string text = "query " + st.spec->name + ": refused " + std::to_string(refused.rows) +
                     " row(s) bigger than the record limit of " +
                     std::to_string(schemas::kMaxRecordBytes) + " bytes (the largest " +
                     std::to_string(refused.largest_bytes) + " bytes)";
  spdlog::error("{}", text);
  RecordRef record{std::make_shared<const schemas::Encoded>(
                       schemas::encode_log(st.spec->id, schema::LogMessage::Level::ERROR, text)),
                   st.spec->id, schemas::now_ns()};
  append(self, Lane::CONTROL, std::move(record), 0);
}

// Sends the held batch if the budget has room for it (or the query is
// stopping: its last rows go whatever the budget); false while it waits.
bool send_held(Self self) {
  auto& st = self->state;
  if (!st.held) return true;
  if (st.budget_wait && !st.stopping) return false;
  uint64_t bytes = budget_bytes(st.held->record);
  bool reserved = !st.stopping && st.budget->try_reserve(bytes);
  if (!reserved && !st.stopping) {
    if (wait_for_budget(self, bytes)) return false;
    return send_held(self);  // room came meanwhile
  }
  auto held = std::move(st.held);
  append(self, held->lane, std::move(held->record), held->rows, reserved);
  return true;
}

// Sends the batch, and the rows it carried over to the next one if its
// record limit cut it; a batch the budget has no room for is held until it has.
void send_batch(Self self) {
  auto& st = self->state;
  if (!send_held(self)) return;
  while (st.batch && st.batch->row_count() > 0) {
    report_refused(self, st.batch->take_refused());
    auto carried = st.batch->take_carried();
    uint64_t rows = st.batch->row_count();
    if (rows > 0) {
      RecordRef record{std::make_shared<const schemas::Encoded>(st.batch->finish()), st.spec->id,
                       st.batch_created_ns};
      st.next_batch_words = next_batch_words(record.encoded->words().size(), st.spec->batch_bytes);
      ++st.batches_sent;
      st.held = std::make_unique<query_state::Held>(query_state::Held{st.spec->lane, std::move(record), rows});
    }
    st.batch = std::move(carried);
    if (!send_held(self)) break;  // the carried rows wait with it
  }
  if (st.batch && st.batch->row_count() == 0) st.batch.reset();
  ++st.generation;
  st.timer_armed = st.batch_due = false;
}

// Events the source missed are reported in a status record of their own,
// after the rows that came before the loss (a full queue keeps its older
// events and counts the newer ones).
void report_dropped(Self self, uint64_t dropped) {
  auto& st = self->state;
  send_batch(self);
  st.dropped_at_source += dropped;
  if (auto* m = self->metrics()) {
    m->dropped.fetch_add(dropped, std::memory_order_relaxed);
    m->dropped_last_wall_ns.store(wall_ns(), std::memory_order_relaxed);
  }
  spdlog::warn("query {}: its source dropped {} events while it was paused", st.spec->name, dropped);
  RecordRef record{std::make_shared<const schemas::Encoded>(schemas::encode_dropped(st.spec->id, dropped)),
                   st.spec->id, schemas::now_ns()};
  append(self, Lane::CONTROL, std::move(record), 0);
}

// The records a source encoded itself, after the rows before them. Row
// batches go through the budget as the query's own do.
void append_records(Self self, PullResult& result) {
  auto& st = self->state;
  for (auto& r : result.records) {
    send_batch(self);  // the rows before it go first
    RecordRef record{std::make_shared<const schemas::Encoded>(std::move(r.encoded)), st.spec->id,
                     r.created_ns ? r.created_ns : schemas::now_ns()};
    st.rows_produced += r.rows;
    if (r.rows == 0 || st.held) {  // held: the source gave more than one batch in a pull
      append(self, r.lane, std::move(record), r.rows);
      continue;
    }
    ++st.batches_sent;
    st.held = std::make_unique<query_state::Held>(query_state::Held{r.lane, std::move(record), r.rows});
    send_held(self);
  }
}

void pull(Self self) {
  auto& st = self->state;
  st.pull_scheduled = st.asleep = false;
  // A source may wake the query before the buffer's budget came (a host's push): the budget's pull comes.
  if (!st.budget || st.paused || st.budget_wait || st.source_done || st.stopping || st.suspended) return;
  // No new batch while the budget is used up: its rows would only wait.
  if (!st.batch && st.budget->used_up() && wait_for_budget(self, 1)) return;
  if (!st.batch)
    st.batch = std::make_unique<schemas::RowBatchWriter>(
        st.spec->id, st.spec->artifact.c_str(), st.spec->name.c_str(), st.spec->lane, st.source->columns(),
        st.next_batch_words);
  size_t before = st.batch->row_count();
  size_t budget = std::min(kPullBudget, st.spec->batch_rows - std::min(before, st.spec->batch_rows));
  int64_t pulled_ns = schemas::now_ns();
  PullResult result = st.source->pull(*st.batch, std::max<size_t>(budget, 1));
  report_refused(self, st.batch->take_refused());
  size_t rows = st.batch->row_count();
  st.rows_produced += rows - before;
  if (rows == 0) st.batch.reset();  // a sleeping source holds no batch
  if (before == 0 && rows > 0) st.batch_created_ns = pulled_ns;  // its first row's time
  if (result.dropped) report_dropped(self, result.dropped);
  append_records(self, result);
  rows = st.batch ? st.batch->row_count() : 0;
  bool full = rows > 0 && (result.cut || rows >= st.spec->batch_rows || st.batch->full() ||
                           st.batch->encoded_size() >= st.spec->batch_bytes);
  // With no append in flight, waiting would only add latency: batches grow
  // from what comes while an append is being committed, so they are small
  // at low rates and big at high ones. The delay bounds a batch's wait for
  // a slow commit.
  if (full || st.in_flight == 0) {
    send_batch(self);
  } else if (rows > 0 && !st.timer_armed) {
    st.timer_armed = true;
    self->delayed_send(self, st.spec->batch_delay, internal_atom::value, batch_due_atom::value, st.generation);
  }
  switch (result.state) {
    case PullResult::State::more: schedule_pull(self); break;
    case PullResult::State::wait: schedule_pull(self, result.wait); break;
    case PullResult::State::parked: break;  // the source wakes us
    case PullResult::State::done:
      st.source_done = true;
      send_batch(self);
      maybe_quit(self);
      break;
  }
}

// At the hand-over: the rows a source holds for someone else go to the
// buffer too (the query is stopping: whatever the budget).
void drain_accepted(Self self) {
  auto& st = self->state;
  if (!st.budget) return;  // again once it comes
  while (st.source->holds_accepted_rows()) {
    if (!st.batch)
      st.batch = std::make_unique<schemas::RowBatchWriter>(st.spec->id, st.spec->artifact.c_str(),
                                                           st.spec->name.c_str(), st.spec->lane,
                                                           st.source->columns(), st.next_batch_words);
    size_t before = st.batch->row_count();
    PullResult result = st.source->pull(*st.batch, kPullBudget);
    report_refused(self, st.batch->take_refused());
    st.rows_produced += st.batch->row_count() - before;
    append_records(self, result);  // may send the batch
    if (st.batch && (result.cut || st.batch->row_count() >= st.spec->batch_rows || st.batch->full()))
      send_batch(self);
  }
}

caf::settings status_of(Self self) {
  auto& st = self->state;
  caf::settings s;
  caf::put(s, "name", st.spec->name);
  put_count(s, "id", st.spec->id);
  caf::put(s, "lane", std::string(schemas::lane_name(st.spec->lane)));
  caf::put(s, "state", std::string(st.stopping          ? "stopping"
                                   : st.suspended       ? "suspended"
                                   : st.source_done     ? "finishing"
                                   : st.paused          ? "paused"
                                   : st.budget_wait ? "awaiting budget"
                                                        : "running"));
  caf::put(s, "paused", st.paused);
  put_count(s, "rows_produced", st.rows_produced);
  put_count(s, "rows_committed", st.rows_committed);
  put_count(s, "batches_sent", st.batches_sent);
  put_count(s, "in_flight", st.in_flight);
  put_count(s, "pauses", st.pauses);
  put_count(s, "dropped_at_source", st.dropped_at_source);
  put_count(s, "rows_refused", st.rows_refused);
  put_count(s, "budget_waits", st.budget_waits);
  auto paused = st.paused_total;
  if (st.paused) paused += query_state::Clock::now() - st.paused_since;
  put_count(s, "paused_ms_total",
            std::chrono::duration_cast<std::chrono::milliseconds>(paused).count());
  return s;
}

}  // namespace

query_self_actor::behavior_type query(instrumented<query_self_actor, query_state> self,
                                      std::shared_ptr<const QuerySpec> spec, buffer_actor buffer,
                                      waker_actor waker, const SourceFactory& make_source) {
  // A throwing source ends this actor with the exception's text as the exit
  // reason, which is what the supervisor logs before restarting it.
  self->set_exception_handler([](caf::scheduled_actor*, std::exception_ptr& eptr) -> caf::error {
    try {
      std::rethrow_exception(eptr);
    } catch (const std::exception& e) {
      return caf::make_error(caf::sec::runtime_error, e.what());
    } catch (...) {
      return caf::make_error(caf::sec::runtime_error, "unknown exception");
    }
  });
  auto& st = self->state;
  if (auto* m = self->metrics()) m->set_name(spec->name);
  st.spec = std::move(spec);
  st.buffer = std::move(buffer);
  st.waker = std::move(waker);
  st.source = make_source(*st.spec);
  st.source->set_wake([weak = caf::actor_cast<caf::weak_actor_ptr>(self)] {
    if (auto strong = caf::actor_cast<caf::actor>(weak.lock())) caf::anon_send(strong, pull_atom::value);
  });
  self->request(st.buffer, caf::infinite, budget_atom::value)
      .then(
          [=](PendingBudgetPtr budget) {
            self->state.budget = std::move(budget);
            if (!self->state.stopping) return schedule_pull(self);
            drain_accepted(self);  // handed over before it could
            send_batch(self);
            maybe_quit(self);
          },
          [=](caf::error& err) { self->quit(err); });
  return {
      [=](pull_atom) { pull(self); },
      [=](budget_atom) {
        auto& st = self->state;
        st.budget_wait = 0;
        if (st.held) send_batch(self);
        schedule_pull(self);
        maybe_quit(self);
      },
      [=](internal_atom, batch_due_atom, uint64_t generation) {
        auto& st = self->state;
        if (generation != st.generation) return;
        if (st.paused)
          st.batch_due = true;  // sent once the buffer answers
        else
          send_batch(self);
      },
      [=](hand_over_atom) -> uint64_t {
        auto& st = self->state;
        st.stopping = true;
        drain_accepted(self);
        send_batch(self);
        uint64_t awaiting_commit = st.rows_produced - st.rows_committed;
        maybe_quit(self);
        return awaiting_commit;
      },
      [=](suspend_atom) {
        auto& st = self->state;
        if (st.suspended || st.stopping) return false;
        st.suspended = true;
        spdlog::info("query {} suspended by the operator", st.spec->name);
        if (!st.paused) send_batch(self);  // what it has so far is delivered
        return true;
      },
      [=](resume_atom) {
        auto& st = self->state;
        if (!st.suspended) return false;
        st.suspended = false;
        spdlog::info("query {} resumed by the operator", st.spec->name);
        schedule_pull(self);
        return true;
      },
      [=](status_atom) { return status_of(self); },
  };
}

}  // namespace outpost
