#pragma once
// The agent's crash-safe row buffer: one LMDB environment, one queue per lane.
//
// Contract (see README "Buffer store"): records get a store-wide sequence
// number that is never reused; append() writes a whole batch in one
// transaction or nothing; accounting is exact after any crash; an append over
// the limit is refused whole; a corrupt record is quarantined, never returned;
// an unreadable environment is set aside and a fresh one started; a damaged
// one is checked and salvaged in child processes (persistence/recovery.hpp):
// what can be read is kept, what cannot is counted, the file is set aside.
//
// Threads: one owner thread (the buffer actor's) calls the non-const
// methods, one at a time; it alone writes and alone replaces the environment
// (reopen, compaction, salvage), under env_mutex_ held exclusively. The const
// methods but free_bytes() may be called from any thread, concurrently with
// each other and with the owner: they never reopen, and hold env_mutex_
// shared. Each method says what it may block on.

#include <capnp/common.h>
#include <kj/array.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <mutex>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <shared_mutex>
#include <vector>

#include "persistence/buffered_record.hpp"
#include "persistence/files.hpp"
#include "persistence/lmdb.hpp"
#include "persistence/meta.hpp"
#include "persistence/record_format.hpp"
#include "schemas/codec.hpp"

namespace outpost::persistence {

using schemas::kLaneCount;
using schemas::Lane;

enum class SyncPolicy {
  full,  // fsync at every commit: an answered append survives power loss
  none,  // MDB_NOSYNC: survives kill -9 (the page cache has it), not power loss
};

struct StoreOptions {
  std::filesystem::path dir;
  uint64_t limit_bytes = 1ull << 30;
  SyncPolicy sync = SyncPolicy::full;
  // A drained store whose file is larger than this is compacted.
  uint64_t compact_threshold_bytes = 64ull << 20;
  // LMDB's map size; 0 derives it from the limit with ample headroom so that
  // MDB_MAP_FULL does not happen in normal operation. Tests set it small.
  uint64_t map_size_bytes = 0;
};

struct RecordIn {
  uint64_t query_id = 0;
  int64_t created_ns = 0;
  kj::ArrayPtr<const kj::byte> payload;
};

struct LaneBatch {
  Lane lane;
  kj::ArrayPtr<const RecordIn> records;
};

enum class AppendOutcome {
  ok,
  full,       // over the limit (or LMDB's map is full): retry after acks free space
  too_large,  // the batch alone exceeds the limit: it can never be stored
  disk_full,  // the file system refused the write (ENOSPC, EDQUOT, EFBIG, short write)
};
const char* to_string(AppendOutcome outcome);

struct AppendResult {
  AppendOutcome outcome = AppendOutcome::ok;
  uint64_t first_seq = 0;  // inclusive range of the batch's seqs; 0 when nothing written
  uint64_t last_seq = 0;
  std::string reason;  // set when not ok
  bool ok() const { return outcome == AppendOutcome::ok; }
};

struct ReadResult {
  std::vector<BufferedRecord> records;
  uint64_t quarantined = 0;  // corrupt records met on the way and moved aside
  std::vector<uint64_t> corrupt;  // read_concurrently: skipped, for the owner to quarantine()
};

struct LaneStats {
  LaneCounters live;
  std::optional<int64_t> oldest_created_ns;
};

// Losses since open, the open's included: for status and alerts.
struct DamageStats {
  uint64_t salvages = 0;  // damaged files salvaged into fresh ones
  uint64_t salvaged = 0;  // records kept by those salvages
  uint64_t lost = 0;      // records known lost
  bool lost_unknown = false;
  std::string last;       // the last damage, described
};

struct StoreStats {
  std::array<LaneStats, kLaneCount> lanes;
  uint64_t records = 0;
  uint64_t live_bytes = 0;
  uint64_t limit_bytes = 0;
  LaneCounters quarantined;
  uint64_t next_seq = 0;
  uint64_t file_bytes = 0;
  uint64_t commits = 0;      // write transactions committed since open
  uint64_t compactions = 0;  // since open
  DamageStats damage;
};

struct OpenReport {
  std::optional<std::filesystem::path> set_aside_to;  // where an unreadable or damaged file went
  std::string reason;                                 // why it was set aside or rebuilt
  bool meta_rebuilt = false;                          // accounting recomputed by a scan
  bool checked = false;    // walked in a child process before use (unclean close, changed file)
  uint64_t salvaged = 0;   // records copied out of a damaged file into a fresh one
  uint64_t lost = 0;       // records known lost to damage (or to an emptied file)
  bool lost_unknown = false;  // records were lost and how many is not known
};

// Where a sliced purge stands; start with a default one.
struct PurgeCursor {
  size_t lane = 0;
  uint64_t after_seq = 0;
  bool done = false;
};

// A full scan: what the meta record should say, and how many records fail
// their checksum. For tests and crash checks.
struct Verification {
  Meta recomputed;
  uint64_t corrupt = 0;
  bool meta_matches = false;
};

class BufferStore {
 public:
  // Throws StoreLocked when another process owns the directory, StoreError
  // when the directory cannot be used at all (permissions, disk). After an
  // unclean close, or when the data file changed since a clean one, blocks
  // while a child process checks it (and salvages it when damaged): a full
  // read of the file. The constructing thread is the owner until it hands
  // the store over (e.g. to the actor that owns it, which orders the two).
  explicit BufferStore(StoreOptions options);
  ~BufferStore();  // owner; records a clean close (fsync)
  BufferStore(const BufferStore&) = delete;
  BufferStore& operator=(const BufferStore&) = delete;

  // Owner. Blocks on the commit's fsync.
  AppendResult append(Lane lane, kj::ArrayPtr<const RecordIn> records);
  // Group commit across lanes: all batches in one transaction, all or none.
  // Seqs are handed out in order: batch i starts where batch i-1 ended.
  AppendResult append(kj::ArrayPtr<const LaneBatch> batches);
  // Owner.
  uint64_t free_bytes() const { return options_.limit_bytes - std::min(options_.limit_bytes, meta_.live_bytes()); }
  // Owner. Records with seq > after_seq, in seq order; at least one record
  // when any is there, even one larger than max_bytes. Damaged pages make it
  // salvage the file (blocking on the child processes) and read again.
  ReadResult read(Lane lane, uint64_t after_seq, size_t max_records, size_t max_bytes);
  // Owner. Deletes records with seq <= through_seq; returns the accounted
  // bytes freed. Blocks on commits (their data fsync, not the meta page's).
  uint64_t ack(Lane lane, uint64_t through_seq);
  // Any thread (LMDB readers never wait for the writer); blocks only while
  // the owner replaces the environment. The same records as read(), except
  // that corrupt ones are skipped and listed in `corrupt` for the owner to
  // quarantine(). Throws StoreError while the environment is unusable or
  // damaged; the owner's read() then reopens or salvages it.
  ReadResult read_concurrently(Lane lane, uint64_t after_seq, size_t max_records,
                               size_t max_bytes) const;
  // Owner. Moves corrupt records aside (best effort: logged if it cannot).
  // Blocks on a commit.
  void quarantine(Lane lane, const std::vector<uint64_t>& seqs);

  // Owner. Deletes the query's records among the next `max_scan` records
  // from `at` (one transaction), advancing `at`; returns how many it deleted.
  // Repeat until at.done: a whole store is never scanned in one call.
  // Blocks on a commit (when it deleted any).
  uint64_t purge_slice(uint64_t query_id, PurgeCursor& at, size_t max_scan);
  // Owner. All of the query's records, in every lane: slices until done,
  // each with its commit.
  uint64_t purge(uint64_t query_id);

  // Owner. Rewrites the data file without its free pages (LMDB never shrinks
  // it), every record and the seq counter carried over. Blocks the owner for
  // as long as copying the live records takes, and read_concurrently only
  // while the file is swapped. Needs free disk for the copy: when it cannot
  // be made, nothing changed and `error` says why (a result, not a throw).
  struct Compaction {
    uint64_t before = 0, after = 0;  // the data file's bytes
    std::string error;               // empty: compacted
  };
  Compaction compact();

  // Any thread; never throws (what cannot be read is left out). Blocks only
  // while the owner replaces the environment.
  StoreStats stats() const;
  // Any thread: a full scan in a read transaction. Throws StoreError.
  Verification verify() const;
  // Any thread: fixed once constructed.
  const OpenReport& open_report() const { return report_; }
  const StoreOptions& options() const { return options_; }
  std::filesystem::path data_file() const;  // any thread: a path, no I/O

 private:
  void reopen();         // owner; takes env_mutex_
  void reopen_locked();  // owner, under env_mutex_ held exclusively
  void open_env();
  void check_before_open(const std::optional<CloseState>& last_close, bool existed);
  void salvage_locked(const std::string& why);  // owner, env_ closed, env_mutex_ exclusive
  void recover(const std::string& why);         // owner: salvage a damaged file in use
  template <class F>
  auto recovering(F f) -> decltype(f());        // owner: f, once more after a salvage
  void note_loss(std::optional<uint64_t> lost, const std::string& why);
  const lmdb::Env& env() const;  // throws while there is none; never reopens
  void set_aside(const std::string& reason);
  lmdb::Txn begin(bool read_only);  // owner: reopens after MDB_PANIC
  int commit(lmdb::Txn& txn, const Meta& next);
  template <class Write>
  int write_with_retry(Write write);
  int write_batches(kj::ArrayPtr<const LaneBatch> batches);
  struct Deleted {
    int rc = MDB_SUCCESS;
    uint64_t freed = 0;
    bool more = false;
  };
  Deleted delete_through(Lane lane, uint64_t through, size_t chunk);
  Meta rebuild_meta(const lmdb::Txn& txn) const;
  std::optional<record_format::Header> inspect(const lmdb::Txn& txn, const MDB_val& key,
                                               const MDB_val& value) const;
  ReadResult scan(const lmdb::Txn& txn, Lane lane, uint64_t after_seq, size_t max_records,
                  size_t max_bytes) const;
  void move_to_quarantine(Lane lane, const std::vector<uint64_t>& seqs);
  void compact_if_drained();
  std::string where(Lane lane) const;
  std::string disk_full_reason() const;
  Meta meta() const;  // any thread: meta_ as last committed

  StoreOptions options_;
  DirLock lock_;
  // Replaced (reopen, compaction, salvage) by the owner under an exclusive
  // lock; the const methods hold it shared. The owner's own transactions
  // need no lock: only the owner replaces env_.
  mutable std::shared_mutex env_mutex_;
  std::unique_ptr<lmdb::Env> env_;
  std::array<MDB_dbi, kLaneCount> lane_dbs_{};
  MDB_dbi quarantine_db_ = 0;
  MDB_dbi meta_db_ = 0;
  // Written by the owner under stats_mutex_, read by it without: as last
  // committed, and the losses so far.
  mutable std::mutex stats_mutex_;
  Meta meta_;
  DamageStats damage_;
  std::atomic<uint64_t> seq_floor_{0};  // as last written to SEQ_FLOOR; next_seq never passes it
  std::optional<uint64_t> clean_records_;  // the records a clean close left, if it was one
  OpenReport report_;  // written while opening only
  bool opening_ = true;
  std::atomic<uint64_t> commits_{0};
  std::atomic<uint64_t> compactions_{0};
};

}  // namespace outpost::persistence
