#pragma once
// The agent's crash-safe row buffer: one LMDB environment, one queue per lane.
//
// Contract (see README "Buffer store"): records get a store-wide sequence
// number that is never reused; append() writes a whole batch in one
// transaction or nothing; accounting is exact after any crash; an append over
// the limit is refused whole; a corrupt record is quarantined, never returned;
// an unreadable environment is set aside and a fresh one started.
//
// Not thread-safe: one owner (the buffer actor) calls it from one thread.

#include <capnp/common.h>
#include <kj/array.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <shared_mutex>
#include <vector>

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

struct StoredRecord {
  uint64_t seq = 0;
  uint64_t query_id = 0;
  int64_t created_ns = 0;
  kj::Array<capnp::word> words;  // the payload, copied to word-aligned memory
  size_t size = 0;               // payload bytes (words may be padded)
  kj::ArrayPtr<const kj::byte> payload() const { return words.asBytes().slice(0, size); }
};

struct ReadResult {
  std::vector<StoredRecord> records;
  uint64_t quarantined = 0;  // corrupt records met on the way and moved aside
  std::vector<uint64_t> corrupt;  // read_concurrently: skipped, for the owner to quarantine()
};

struct LaneStats {
  LaneCounters live;
  std::optional<int64_t> oldest_created_ns;
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
};

struct OpenReport {
  std::optional<std::filesystem::path> set_aside_to;  // where an unreadable store went
  std::string reason;                                 // why it was set aside or rebuilt
  bool meta_rebuilt = false;                          // accounting recomputed by a scan
};

// A full scan: what the meta record should say, and how many records fail
// their checksum. For tests, crash checks and outpostctl.
struct Verification {
  Meta recomputed;
  uint64_t corrupt = 0;
  bool meta_matches = false;
};

class BufferStore {
 public:
  // Throws StoreLocked when another process owns the directory, StoreError
  // when the directory cannot be used at all (permissions, disk).
  explicit BufferStore(StoreOptions options);
  ~BufferStore();
  BufferStore(const BufferStore&) = delete;
  BufferStore& operator=(const BufferStore&) = delete;

  AppendResult append(Lane lane, kj::ArrayPtr<const RecordIn> records);
  // Group commit across lanes: all batches in one transaction, all or none.
  // Seqs are handed out in order: batch i starts where batch i-1 ended.
  AppendResult append(kj::ArrayPtr<const LaneBatch> batches);
  uint64_t free_bytes() const { return options_.limit_bytes - std::min(options_.limit_bytes, meta_.live_bytes()); }
  // Records with seq > after_seq, in seq order; at least one record when any
  // is there, even one larger than max_bytes.
  ReadResult read(Lane lane, uint64_t after_seq, size_t max_records, size_t max_bytes);
  // Deletes records with seq <= through_seq; returns the accounted bytes freed.
  uint64_t ack(Lane lane, uint64_t through_seq);
  // Deletes every record of the query, in every lane; returns how many.
  // The one call another thread may make while the owner writes (LMDB
  // readers never wait for the writer): the same records as read(), except
  // that corrupt ones are skipped and listed in `corrupt` for the owner to
  // quarantine(). Throws StoreError while the environment is unusable; the
  // owner's read() then reopens it.
  ReadResult read_concurrently(Lane lane, uint64_t after_seq, size_t max_records,
                               size_t max_bytes) const;
  // Moves corrupt records aside (best effort: logged if it cannot).
  void quarantine(Lane lane, const std::vector<uint64_t>& seqs);

  uint64_t purge(uint64_t query_id);

  StoreStats stats() const;
  Verification verify() const;
  const OpenReport& open_report() const { return report_; }
  const StoreOptions& options() const { return options_; }
  std::filesystem::path data_file() const;

 private:
  void reopen();         // takes env_mutex_
  void reopen_locked();  // under env_mutex_, exclusively
  void open_env();
  const lmdb::Env& env() const;
  void set_aside(const std::string& reason);
  lmdb::Txn begin(bool read_only) const;
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

  StoreOptions options_;
  DirLock lock_;
  // Replaced (reopen, compaction) under an exclusive lock; read_concurrently
  // holds it shared. Everything else runs on the owner's thread.
  mutable std::shared_mutex env_mutex_;
  std::unique_ptr<lmdb::Env> env_;
  std::array<MDB_dbi, kLaneCount> lane_dbs_{};
  MDB_dbi quarantine_db_ = 0;
  MDB_dbi meta_db_ = 0;
  Meta meta_;              // as last committed
  uint64_t seq_floor_ = 0;  // as last written to SEQ_FLOOR; next_seq never passes it
  OpenReport report_;
  uint64_t commits_ = 0;
  uint64_t compactions_ = 0;
};

}  // namespace outpost::persistence
