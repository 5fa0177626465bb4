#include "actors/buffer_actor.hpp"

#include <spdlog/spdlog.h>

#include <cstring>

#include "actors/status.hpp"
#include "persistence/record_format.hpp"

namespace outpost {
namespace {

using Self = instrumented<buffer_self_actor, buffer_state>;

// Bounds one transaction so that a huge backlog of appends does not hold the
// write lock (and the link's acks) for long.
constexpr size_t kMaxRecordsPerCommit = 10000;
constexpr uint64_t kMaxBytesPerCommit = 4ull << 20;  // a bigger record goes alone
constexpr auto kDiskFullRetry = std::chrono::seconds(1);
constexpr auto kAckDelay = std::chrono::milliseconds(50);
// A commit's records of a lane up to this size go to the link with the
// notification: live rows skip a read (a thread hop and a transaction).
// Bigger commits are a backlog, which the link reads in upload-sized pieces.
constexpr uint64_t kFreshBytes = 64 << 10;
// Records a purge looks at per message: the buffer's other work waits for one slice only.
constexpr size_t kPurgeSlice = 10000;

// What one commit tells the link, per lane.
struct Committed {
  uint64_t last = 0;  // 0: nothing of that lane
  uint64_t bytes = 0;
  std::vector<persistence::BufferedRecord> fresh;  // while bytes <= kFreshBytes

  void add(uint64_t seq, const RecordRef& r) {
    last = seq;
    bytes += r.encoded->size();
    if (bytes > kFreshBytes) return fresh.clear();
    auto from = r.encoded->words();
    auto words = kj::heapArray<capnp::word>(from.size());  // word is not copyable: its bytes are
    std::memcpy(words.begin(), from.begin(), from.size() * sizeof(capnp::word));
    fresh.push_back({seq, r.query_id, r.created_ns, kj::mv(words), r.encoded->size(), r.rows});
  }
};

void notify_link(Self self, std::array<Committed, schemas::kLaneCount>& lanes) {
  if (!self->state.link) return;
  for (size_t i = 0; i < lanes.size(); ++i) {
    auto& c = lanes[i];
    if (!c.last) continue;
    BufferedRecords fresh;
    if (c.bytes <= kFreshBytes)
      fresh = std::make_shared<const std::vector<persistence::BufferedRecord>>(std::move(c.fresh));
    self->send(self->state.link, committed_atom::value, static_cast<Lane>(i), c.last, fresh);
  }
}

// The limit as configured: the store's, less the shutdown reserve.
uint64_t limit_of(Self self) {
  auto& st = self->state;
  uint64_t store_limit = st.store->options().limit_bytes;
  return store_limit - std::min(store_limit, st.options.shutdown_reserve);
}

// What may still be committed: under the configured limit, or under the
// store's when settling (the shutdown reserve included).
uint64_t free_of(Self self, bool settling) {
  auto& st = self->state;
  uint64_t free = st.store->free_bytes();
  if (settling) return free;
  return free - std::min(free, st.options.shutdown_reserve);
}

using Clock = std::chrono::steady_clock;

// Sends a commit_atom due at `at` (now or later) unless one due no later is
// on its way.
void send_commit(Self self, Clock::time_point at) {
  auto& st = self->state;
  if (st.commit_at && *st.commit_at <= at) return;
  st.commit_at = at;
  ++st.commits_in_flight;
  auto now = Clock::now();
  if (at <= now)
    self->send(self, commit_atom::value);
  else
    self->delayed_send(self, at - now, commit_atom::value);
}

// The store refused a commit: try again on a timer (the disk may free up
// on its own), or at the next ack.
void retry_later(Self self) {
  send_commit(self, Clock::now() + kDiskFullRetry);
}

// Whether the waiting appends are to be committed now rather than grouped
// with later ones (BufferOptions::commit_interval).
bool commit_due(Self self, Clock::time_point now) {
  auto& st = self->state;
  auto interval = st.options.commit_interval;
  uint64_t group_bytes = std::min<uint64_t>(kGroupCommitBytes, st.budget->limit() / 4);
  return interval.count() == 0 || st.hurried || now - st.last_commit >= interval ||
         st.waiting_bytes >= group_bytes || st.waiting.size() >= kMaxRecordsPerCommit;
}

// Appends already in the mailbox are handled before this commit, so they
// all land in the transaction it starts.
void schedule_commit(Self self) {
  auto& st = self->state;
  if (st.stalled || st.waiting.empty()) return;
  auto now = Clock::now();
  send_commit(self, commit_due(self, now) ? now : st.last_commit + st.options.commit_interval);
}

void pop_waiting(Self self) {
  auto& st = self->state;
  st.waiting_bytes -= st.waiting.front().bytes;
  st.waiting.pop_front();
}

// A full episode starts when the head of `waiting` does not fit under the
// limit, and ends when no append waits any more (not at each ack that lets a
// few in): it is logged once at each end.
void enter_full(Self self, Lane lane) {
  auto& st = self->state;
  if (st.full) return;
  st.full = true;
  ++st.full_episodes;
  uint64_t limit = limit_of(self);
  uint64_t live = st.store->options().limit_bytes - st.store->free_bytes();
  st.full_since = std::chrono::steady_clock::now();
  spdlog::warn("buffer: full ({} of {} bytes, {:.1f}%): appends wait for acks to free space, "
               "the first on the {} lane",
               live, limit, 100.0 * live / limit, schemas::lane_name(lane));
}

void leave_full(Self self) {
  auto& st = self->state;
  if (!st.full) return;
  st.full = false;
  auto held = std::chrono::steady_clock::now() - st.full_since;
  spdlog::info("buffer: no longer full, no append waits ({} of {} bytes) after {} ms",
               st.store->options().limit_bytes - st.store->free_bytes(), limit_of(self),
               std::chrono::duration_cast<std::chrono::milliseconds>(held).count());
}

// Commits waiting appends in FIFO order, as many per transaction as fit
// (kMaxBytesPerCommit bounds a transaction, except that a record bigger
// than that goes alone: every record up to kMaxRecordBytes must get in).
// Unless `settling`, one transaction per call, the next one after whatever
// arrived meanwhile: the link's reads and acks must not wait behind a
// backlog of commits, each with its fsync. Settling (shutdown) commits all
// that fit, the shutdown reserve included.
void commit_waiting(Self self, bool settling) {
  auto& st = self->state;
  // Blocked only while an append waits that could not go in: set again
  // below if the head still does not fit (a retry or an ack may find none).
  st.stalled = false;
  // Control and event rows go first, so that a flood of bulk appends (a big
  // collection) does not hold fresh events for several commits. Each lane
  // keeps its order.
  std::stable_partition(st.waiting.begin(), st.waiting.end(), [](const buffer_state::Waiting& w) {
    return w.lane == Lane::CONTROL || w.lane == Lane::EVENTS;
  });
  while (!st.waiting.empty()) {
    uint64_t free = free_of(self, settling), bytes = 0;
    size_t n = 0;
    while (n < st.waiting.size() && n < kMaxRecordsPerCommit) {
      uint64_t next = bytes + st.waiting[n].bytes;
      if (next > free || (n > 0 && next > kMaxBytesPerCommit)) break;
      bytes = next;
      ++n;
    }
    if (n == 0) {
      auto& head = st.waiting.front();
      if (head.bytes > limit_of(self)) {
        head.promise.deliver(caf::make_error(
            caf::sec::runtime_error, "record of " + std::to_string(head.bytes) +
                                         " bytes can never fit the buffer limit of " +
                                         std::to_string(limit_of(self))));
        pop_waiting(self);
        continue;
      }
      st.stalled = true;  // producers wait here until space frees (acks, a purge)
      enter_full(self, head.lane);
      st.last_error = "the buffer is full (limit " + std::to_string(limit_of(self)) + " bytes" +
                      (settling ? ", and its shutdown reserve of " +
                                      std::to_string(st.options.shutdown_reserve) + " bytes)"
                                : ")");
      return;
    }
    std::vector<persistence::RecordIn> records(n);
    std::vector<persistence::LaneBatch> batches(n);
    for (size_t i = 0; i < n; ++i) {
      auto& r = st.waiting[i].record;
      records[i] = {r.query_id, r.created_ns, r.encoded->bytes()};
      batches[i] = {st.waiting[i].lane, kj::arrayPtr(&records[i], 1)};
    }
    auto result = st.store->append(kj::arrayPtr(batches.data(), n));
    if (!result.ok()) {
      // The accounting said it fits, LMDB or the disk said no: wait for acks,
      // and retry on a timer in case the disk frees up on its own.
      if (st.last_error != result.reason) spdlog::error("buffer: append refused: {}", result.reason);
      st.last_error = result.reason;
      st.stalled = true;
      retry_later(self);
      return;
    }
    st.stalled = false;
    st.hurried = false;
    ++st.commits;
    st.last_commit = Clock::now();
    std::array<Committed, schemas::kLaneCount> committed;
    for (size_t i = 0; i < n; ++i) {
      uint64_t seq = result.first_seq + i;
      auto& w = st.waiting.front();
      committed[static_cast<size_t>(w.lane)].add(seq, w.record);
      w.promise.deliver(seq);
      pop_waiting(self);
    }
    notify_link(self, committed);
    if (!settling && !st.waiting.empty()) {
      schedule_commit(self);
      return;
    }
  }
  leave_full(self);  // nothing waits any more
}

caf::settings status_of(Self self) {
  auto& st = self->state;
  auto stats = st.store->stats();
  caf::settings s;
  int64_t now = schemas::now_ns();
  for (size_t i = 0; i < schemas::kLaneCount; ++i) {
    std::string lane = std::string("lanes.") + schemas::lane_name(static_cast<Lane>(i)) + ".";
    put_count(s, lane + "bytes", stats.lanes[i].live.bytes);
    put_count(s, lane + "records", stats.lanes[i].live.records);
    if (auto oldest = stats.lanes[i].oldest_created_ns)
      put_count(s, lane + "oldest_age_ms", std::max<int64_t>(0, now - *oldest) / 1000000);
  }
  put_count(s, "live_bytes", stats.live_bytes);
  uint64_t limit = limit_of(self);
  put_count(s, "limit_bytes", limit);
  put_count(s, "shutdown_reserve_bytes", st.options.shutdown_reserve);
  caf::put(s, "fill_percent", limit ? 100.0 * stats.live_bytes / limit : 100.0);
  put_count(s, "pending_appends", st.waiting.size());
  put_count(s, "pending_bytes", st.budget->pending());  // the queries' count: in the mailbox too
  put_count(s, "pending_budget", st.budget->limit());
  caf::put(s, "stalled", st.stalled);
  caf::put(s, "full", st.full);
  put_count(s, "full_episodes", st.full_episodes);
  put_count(s, "appends", st.appends);
  put_count(s, "commits", st.commits);
  put_count(s, "commit_interval_ms", st.options.commit_interval.count());
  put_count(s, "store_commits", stats.commits);  // every write transaction, acks included
  put_count(s, "acks", st.acks);
  put_count(s, "quarantined", stats.quarantined.records);
  put_count(s, "damage.salvaged", stats.damage.salvaged);  // records kept from damaged files
  put_count(s, "damage.lost", stats.damage.lost);
  if (stats.damage.lost_unknown) caf::put(s, "damage.lost_unknown", true);
  if (!stats.damage.last.empty()) caf::put(s, "damage.last", stats.damage.last);
  put_count(s, "file_bytes", stats.file_bytes);
  if (!st.last_error.empty()) caf::put(s, "last_error", st.last_error);
  return s;
}

// A store error fails the one request, logged; the actor and the store go on.
template <class F>
auto guarded(const char* what, F f) -> decltype(f()) {
  try {
    return f();
  } catch (const persistence::StoreError& e) {
    spdlog::error("buffer: {} failed: {}", what, e.what());
    return caf::make_error(caf::sec::runtime_error, std::string(what) + ": " + e.what());
  }
}

bool try_commit(Self self, bool settling = false) {
  try {
    commit_waiting(self, settling);
    return true;
  } catch (const persistence::StoreError& e) {
    spdlog::error("buffer: commit failed: {}", e.what());
    self->state.last_error = e.what();
    return false;
  }
}

// Applies the gathered acks, one transaction per lane, and answers them with
// the bytes their lane freed, or with their lane's error (the link retries
// it; other lanes are not affected). Freed space lets waiting appends in.
void apply_acks(Self self) {
  auto& st = self->state;
  std::array<uint64_t, schemas::kLaneCount> freed{};
  std::array<std::string, schemas::kLaneCount> errors;
  for (size_t i = 0; i < st.ack_through.size(); ++i) {
    if (!st.ack_through[i]) continue;
    try {
      freed[i] = st.store->ack(static_cast<Lane>(i), st.ack_through[i]);
    } catch (const persistence::StoreError& e) {
      spdlog::error("buffer: ack of the {} lane failed: {}", schemas::lane_name(static_cast<Lane>(i)),
                    e.what());
      errors[i] = std::string("ack: ") + e.what();
    }
    st.ack_through[i] = 0;
  }
  for (auto& a : st.pending_acks) {
    auto lane = static_cast<size_t>(a.lane);
    if (errors[lane].empty())
      a.promise.deliver(freed[lane]);
    else
      a.promise.deliver(caf::make_error(caf::sec::runtime_error, errors[lane]));
    ++st.acks;
  }
  st.pending_acks.clear();
  bool any = std::any_of(freed.begin(), freed.end(), [](uint64_t f) { return f > 0; });
  if (any && st.stalled) {
    st.stalled = false;  // even with nothing waiting, or the next append would wait for good
    if (!st.waiting.empty() && !try_commit(self)) retry_later(self);
  }  // not stalled: the appends waiting have their commit scheduled
}

// Commits what fits, the shutdown reserve included; the appends that still
// wait can only be refused, as nothing will free space before the agent exits.
uint64_t settle(Self self) {
  auto& st = self->state;
  apply_acks(self);
  try_commit(self, true);
  uint64_t refused = st.waiting.size();
  const std::string& why = st.last_error;
  for (auto& w : st.waiting)
    w.promise.deliver(caf::make_error(
        caf::sec::runtime_error, "not stored at shutdown: " + why));
  if (refused) spdlog::warn("buffer: refused {} appends at shutdown: {}", refused, why);
  st.waiting.clear();
  st.waiting_bytes = 0;
  st.stalled = false;
  leave_full(self);
  return refused;
}

}  // namespace

buffer_self_actor::behavior_type buffer(instrumented<buffer_self_actor, buffer_state> self,
                                        std::shared_ptr<persistence::BufferStore> store) {
  return buffer_with(self, std::move(store), BufferOptions{});
}

buffer_self_actor::behavior_type buffer_with(instrumented<buffer_self_actor, buffer_state> self,
                                             std::shared_ptr<persistence::BufferStore> store,
                                             BufferOptions options) {
  self->state.store = std::move(store);
  self->state.options = options;
  // No commit within the last interval: the first append is due at once
  // (the steady clock's epoch is the boot, which may be less than an interval ago).
  self->state.last_commit = Clock::now() - options.commit_interval;
  self->state.budget = std::make_shared<PendingBudget>(options.pending_budget);
  return {
      [=](append_atom, Lane lane, RecordRef record) -> caf::result<uint64_t> {
        auto& st = self->state;
        ++st.appends;
        if (record.encoded->size() > schemas::kMaxRecordBytes)  // its producer should have cut it
          return caf::make_error(caf::sec::runtime_error,
                                 "record of " + std::to_string(record.encoded->size()) +
                                     " bytes exceeds the record limit of " +
                                     std::to_string(schemas::kMaxRecordBytes));
        if (auto* m = self->metrics()) m->add_in(record.rows, record.encoded->size());
        uint64_t bytes = persistence::record_format::accounted_bytes(record.encoded->size());
        auto promise = self->make_response_promise<uint64_t>();
        st.waiting.push_back({lane, std::move(record), bytes, promise});
        st.waiting_bytes += bytes;
        schedule_commit(self);
        return promise;
      },
      [=](budget_atom) { return self->state.budget; },
      [=](commit_atom) {
        auto& st = self->state;
        auto now = Clock::now();
        // From a producer that waits for its appends' answers (paused,
        // stopping, out of budget): the waiting appends are due now, with
        // those already in the mailbox.
        if (self->current_sender() != static_cast<caf::abstract_actor*>(self)) {
          if (st.waiting.empty()) return;
          st.hurried = true;
          return schedule_commit(self);
        }
        if (--st.commits_in_flight == 0 || (st.commit_at && *st.commit_at <= now)) st.commit_at.reset();
        if (st.waiting.empty()) return;
        // Early (one due later was asked for meanwhile): wait for the due one.
        if (!st.stalled && !commit_due(self, now)) return schedule_commit(self);
        // On failure nothing else may come to retry: the producers are paused.
        if (!try_commit(self)) retry_later(self);
      },
      [=](read_atom, Lane lane, uint64_t after, uint64_t max,
          uint64_t max_bytes) -> caf::result<BufferedRecords> {
        return guarded("read", [&]() -> caf::result<BufferedRecords> {
          auto got = self->state.store->read(lane, after, max, max_bytes);
          if (auto* m = self->metrics()) m->add_out(count_rows(got.records), persistence::payload_bytes(got.records));
          return BufferedRecords{
              std::make_shared<const std::vector<persistence::BufferedRecord>>(std::move(got.records))};
        });
      },
      [=](ack_atom, Lane lane, uint64_t through) -> caf::result<uint64_t> {
        auto& st = self->state;
        auto& pending = st.ack_through[static_cast<size_t>(lane)];
        pending = std::max(pending, through);
        auto promise = self->make_response_promise<uint64_t>();
        st.pending_acks.push_back({lane, promise});
        if (st.stalled) {
          apply_acks(self);  // producers wait for exactly this space: no delay
        } else if (!st.acks_scheduled) {
          st.acks_scheduled = true;
          self->delayed_send(self, kAckDelay, internal_atom::value, ack_atom::value);
        }
        return promise;
      },
      [=](internal_atom, ack_atom) {
        self->state.acks_scheduled = false;
        apply_acks(self);
      },
      [=](quarantine_atom, Lane lane, std::vector<uint64_t>& seqs) {
        self->state.store->quarantine(lane, seqs);
      },
      [=](purge_atom, uint64_t query_id) -> caf::result<uint64_t> {
        auto& st = self->state;
        // Its appends still waiting for space are refused: they came before the cancel.
        uint64_t refused = 0;
        for (auto it = st.waiting.begin(); it != st.waiting.end();) {
          if (it->record.query_id != query_id) {
            ++it;
            continue;
          }
          it->promise.deliver(caf::make_error(caf::sec::runtime_error, "query cancelled"));
          st.waiting_bytes -= it->bytes;
          it = st.waiting.erase(it);
          ++refused;
        }
        if (refused) {  // the head that blocked may have been one of them
          st.stalled = false;
          if (st.waiting.empty())
            leave_full(self);
          else
            schedule_commit(self);
        }
        auto promise = self->make_response_promise<uint64_t>();
        st.purges.push_back({query_id, {}, refused, promise});
        if (st.purges.size() == 1) self->send(self, internal_atom::value, purge_atom::value);
        return promise;
      },
      [=](internal_atom, purge_atom) {
        auto& st = self->state;
        if (st.purges.empty()) return;
        auto& p = st.purges.front();
        uint64_t purged = 0;
        try {
          purged = st.store->purge_slice(p.query_id, p.at, kPurgeSlice);
          p.count += purged;
          if (p.at.done) {
            if (p.count)
              spdlog::info("buffer: purged {} records and waiting appends of query {}", p.count,
                           p.query_id);
            p.promise.deliver(p.count);
            st.purges.pop_front();
          }
        } catch (const persistence::StoreError& e) {
          spdlog::error("buffer: purge of query {} failed: {}", p.query_id, e.what());
          p.promise.deliver(caf::make_error(caf::sec::runtime_error, std::string("purge: ") + e.what()));
          st.purges.pop_front();
        }
        // Space was freed: unblock even with nothing waiting, or the next
        // append would wait for a commit that is never scheduled.
        if (purged) {
          st.stalled = false;
          if (!st.waiting.empty() && !try_commit(self)) retry_later(self);
        }
        if (!st.purges.empty()) self->send(self, internal_atom::value, purge_atom::value);
      },
      [=](set_link_atom, link_actor link) { self->state.link = std::move(link); },
      [=](settle_atom) { return settle(self); },
      [=](close_atom) {
        settle(self);
        self->quit();
      },
      [=](compact_atom) -> caf::result<uint64_t, uint64_t> {
        auto c = self->state.store->compact();
        if (!c.error.empty()) return caf::make_error(caf::sec::runtime_error, c.error);
        return {c.before, c.after};
      },
      [=](status_atom) -> caf::result<caf::settings> {
        return guarded("status", [&]() -> caf::result<caf::settings> { return status_of(self); });
      },
  };
}

}  // namespace outpost
