#include "actors/buffer_actor.hpp"

#include <spdlog/spdlog.h>

#include "actors/status.hpp"
#include "persistence/record_format.hpp"

namespace outpost {
namespace {

using Self = buffer_actor::stateful_pointer<buffer_state>;

// Bounds one transaction so that a huge backlog of appends does not hold the
// write lock (and the link's acks) for long.
constexpr size_t kMaxRecordsPerCommit = 10000;
constexpr uint64_t kMaxBytesPerCommit = 4ull << 20;
constexpr auto kDiskFullRetry = std::chrono::seconds(1);
constexpr auto kAckDelay = std::chrono::milliseconds(50);
// A commit's records of a lane up to this size go to the link with the
// notification: live rows skip a read (a thread hop and a transaction).
// Bigger commits are a backlog, which the link reads in upload-sized pieces.
constexpr uint64_t kFreshBytes = 64 << 10;

// What one commit tells the link, per lane.
struct Committed {
  uint64_t last = 0;  // 0: nothing of that lane
  uint64_t bytes = 0;
  std::vector<persistence::StoredRecord> fresh;  // while bytes <= kFreshBytes

  void add(uint64_t seq, const RecordRef& r) {
    last = seq;
    bytes += r.encoded->size();
    if (bytes > kFreshBytes) return fresh.clear();
    auto words = kj::heapArray<capnp::word>(r.encoded->words());
    fresh.push_back({seq, r.query_id, r.created_ns, kj::mv(words), r.encoded->size()});
  }
};

void notify_link(Self self, std::array<Committed, schemas::kLaneCount>& lanes) {
  if (!self->state.link) return;
  for (size_t i = 0; i < lanes.size(); ++i) {
    auto& c = lanes[i];
    if (!c.last) continue;
    StoredRecords fresh;
    if (c.bytes <= kFreshBytes)
      fresh = std::make_shared<const std::vector<persistence::StoredRecord>>(std::move(c.fresh));
    self->send(self->state.link, committed_atom::value, static_cast<Lane>(i), c.last, fresh);
  }
}

void retry_later(Self self) {
  if (self->state.flush_scheduled) return;
  self->state.flush_scheduled = true;
  self->delayed_send(self, kDiskFullRetry, flush_atom::value);
}

// Appends already in the mailbox are handled before this flush, so they
// all land in the transaction it starts.
void schedule_flush(Self self) {
  auto& st = self->state;
  if (st.flush_scheduled || st.blocked) return;
  st.flush_scheduled = true;
  self->send(self, flush_atom::value);
}

// Commits waiting appends in FIFO order, as many per transaction as fit.
// Unless `all`, one transaction per call, the next one after whatever
// arrived meanwhile: the link's reads and acks must not wait behind a
// backlog of commits, each with its fsync.
void commit_waiting(Self self, bool all) {
  auto& st = self->state;
  // Control and event rows go first, so that a flood of bulk appends (a big
  // collection) does not hold fresh events for several commits. Each lane
  // keeps its order.
  std::stable_partition(st.waiting.begin(), st.waiting.end(), [](const buffer_state::Waiting& w) {
    return w.lane == Lane::CONTROL || w.lane == Lane::EVENTS;
  });
  while (!st.waiting.empty()) {
    uint64_t free = st.store->free_bytes(), bytes = 0;
    size_t n = 0;
    while (n < st.waiting.size() && n < kMaxRecordsPerCommit &&
           bytes + st.waiting[n].bytes <= std::min(free, kMaxBytesPerCommit))
      bytes += st.waiting[n++].bytes;
    if (n == 0) {
      auto& head = st.waiting.front();
      if (head.bytes > st.store->options().limit_bytes) {
        head.promise.deliver(caf::make_error(
            caf::sec::runtime_error, "record of " + std::to_string(head.bytes) +
                                         " bytes can never fit the buffer limit of " +
                                         std::to_string(st.store->options().limit_bytes)));
        st.waiting.pop_front();
        continue;
      }
      if (!st.blocked) ++st.blocked_episodes;
      st.blocked = true;  // producers wait here until acks free space
      st.last_error = "the buffer is full (limit " +
                      std::to_string(st.store->options().limit_bytes) + " bytes)";
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
      if (!st.blocked) ++st.blocked_episodes;
      st.blocked = true;
      retry_later(self);
      return;
    }
    st.blocked = false;
    ++st.commits;
    std::array<Committed, schemas::kLaneCount> committed;
    for (size_t i = 0; i < n; ++i) {
      uint64_t seq = result.first_seq + i;
      auto& w = st.waiting.front();
      committed[static_cast<size_t>(w.lane)].add(seq, w.record);
      w.promise.deliver(seq);
      st.waiting.pop_front();
    }
    notify_link(self, committed);
    if (!all) {
      if (!st.waiting.empty()) schedule_flush(self);
      return;
    }
  }
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
  put_count(s, "limit_bytes", stats.limit_bytes);
  caf::put(s, "fill_percent", 100.0 * stats.live_bytes / stats.limit_bytes);
  put_count(s, "pending_appends", st.waiting.size());
  caf::put(s, "blocked", st.blocked);
  put_count(s, "blocked_episodes", st.blocked_episodes);
  put_count(s, "appends", st.appends);
  put_count(s, "commits", st.commits);
  put_count(s, "store_commits", stats.commits);  // every write transaction, acks included
  put_count(s, "acks", st.acks);
  put_count(s, "quarantined", stats.quarantined.records);
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

bool try_commit(Self self, bool all = false) {
  try {
    commit_waiting(self, all);
    return true;
  } catch (const persistence::StoreError& e) {
    spdlog::error("buffer: commit failed: {}", e.what());
    self->state.last_error = e.what();
    return false;
  }
}

// Applies the gathered acks, one transaction per lane, and answers them with
// the bytes their lane freed; freed space lets waiting appends in.
void apply_acks(Self self) {
  auto& st = self->state;
  std::array<uint64_t, schemas::kLaneCount> freed{};
  std::string error;
  for (size_t i = 0; i < st.ack_through.size(); ++i) {
    if (!st.ack_through[i]) continue;
    try {
      freed[i] = st.store->ack(static_cast<Lane>(i), st.ack_through[i]);
    } catch (const persistence::StoreError& e) {
      spdlog::error("buffer: ack failed: {}", e.what());
      error = std::string("ack: ") + e.what();
    }
    st.ack_through[i] = 0;
  }
  for (auto& a : st.pending_acks) {
    if (error.empty())
      a.promise.deliver(freed[static_cast<size_t>(a.lane)]);
    else
      a.promise.deliver(caf::make_error(caf::sec::runtime_error, error));
    ++st.acks;
  }
  st.pending_acks.clear();
  bool any = std::any_of(freed.begin(), freed.end(), [](uint64_t f) { return f > 0; });
  if (any && !st.waiting.empty()) {
    st.blocked = false;
    if (!try_commit(self)) retry_later(self);
  }
}

// Commits what fits; the appends that still wait can only be refused, as
// nothing will free space before the agent exits.
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
  st.blocked = false;
  return refused;
}

}  // namespace

buffer_actor::behavior_type buffer(buffer_actor::stateful_pointer<buffer_state> self,
                                   std::shared_ptr<persistence::BufferStore> store) {
  self->state.store = std::move(store);
  return {
      [=](append_atom, Lane lane, RecordRef record) -> caf::result<uint64_t> {
        auto& st = self->state;
        ++st.appends;
        uint64_t bytes = persistence::record_format::accounted_bytes(record.encoded->size());
        auto promise = self->make_response_promise<uint64_t>();
        st.waiting.push_back({lane, std::move(record), bytes, promise});
        schedule_flush(self);
        return promise;
      },
      [=](flush_atom) {
        self->state.flush_scheduled = false;
        // On failure nothing else may come to retry: the producers are paused.
        if (!try_commit(self)) retry_later(self);
      },
      [=](read_atom, Lane lane, uint64_t after, uint64_t max,
          uint64_t max_bytes) -> caf::result<StoredRecords> {
        return guarded("read", [&]() -> caf::result<StoredRecords> {
          auto got = self->state.store->read(lane, after, max, max_bytes);
          return StoredRecords{
              std::make_shared<const std::vector<persistence::StoredRecord>>(std::move(got.records))};
        });
      },
      [=](ack_atom, Lane lane, uint64_t through) -> caf::result<uint64_t> {
        auto& st = self->state;
        auto& pending = st.ack_through[static_cast<size_t>(lane)];
        pending = std::max(pending, through);
        auto promise = self->make_response_promise<uint64_t>();
        st.pending_acks.push_back({lane, promise});
        if (st.blocked) {
          apply_acks(self);  // producers wait for exactly this space: no delay
        } else if (!st.acks_scheduled) {
          st.acks_scheduled = true;
          self->delayed_send(self, kAckDelay, ack_atom::value);
        }
        return promise;
      },
      [=](ack_atom) {
        self->state.acks_scheduled = false;
        apply_acks(self);
      },
      [=](quarantine_atom, Lane lane, std::vector<uint64_t>& seqs) {
        self->state.store->quarantine(lane, seqs);
      },
      [=](purge_atom, uint64_t query_id) -> caf::result<uint64_t> {
        return guarded("purge", [&]() -> caf::result<uint64_t> {
          auto& st = self->state;
          // Its appends still waiting for space are refused: they came before the cancel.
          uint64_t refused = 0;
          for (auto it = st.waiting.begin(); it != st.waiting.end();) {
            if (it->record.query_id != query_id) {
              ++it;
              continue;
            }
            it->promise.deliver(caf::make_error(caf::sec::runtime_error, "query cancelled"));
            it = st.waiting.erase(it);
            ++refused;
          }
          uint64_t purged = st.store->purge(query_id);
          spdlog::info("buffer: purged {} records and {} waiting appends of query {}", purged,
                       refused, query_id);
          // Space was freed: unblock even with nothing waiting, or the next
          // append would wait for a flush that is never scheduled.
          if (purged || refused) {
            st.blocked = false;
            if (!st.waiting.empty() && !try_commit(self)) retry_later(self);
          }
          return purged + refused;
        });
      },
      [=](subscribe_atom, link_actor link) { self->state.link = std::move(link); },
      [=](settle_atom) { return settle(self); },
      [=](stop_atom) {
        settle(self);
        self->quit();
      },
      [=](status_atom) { return status_of(self); },
  };
}

}  // namespace outpost
