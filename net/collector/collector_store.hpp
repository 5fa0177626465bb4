#pragma once
// The collector's durable store: rows as JSON lines under
//   <datadir>/<agent>/<artifact>/<YYYY-MM-DD>.jsonl
// (what people grep and load), and an LMDB environment in
// <datadir>/.collector/ that holds what makes them exactly-once:
//
//   marks: <agent> '\0' <lane byte>  -> u64  highest seq stored for that lane
//   files: <path relative to datadir> -> u64  length of the file at the last checkpoint
//   agents: <agent>                   -> u64  last time it uploaded (ns), or
//                                        u64 0, u64 when met (ns): met, never uploaded
//   tables: <agent>                   -> EventTable (protocol.capnp), encoded
//   requests: <agent> '\0' <u64 BE>   -> PendingRequest, encoded: for when it connects
//   meta: "next_flow"                 -> u64  every flow id given out is below it
//   meta: "files_sealed_before"       -> "YYYY-MM-DD"  see Pruning below
//   meta: "journal_end"               -> u64  how much of the journal is committed
//
// A store writes a group of uploads' lines to their files and the same
// writes (file, offset, bytes) to the journal (group_journal.hpp), fdatasyncs
// the journal only, then commits the new marks and the journal's end in one
// short write transaction: one sync per group, however many agents and files
// it touched. A checkpoint (every checkpoint_bytes of journal or
// checkpoint_interval) syncs the file system once (syncfs), commits every
// written file's length with a journal end of 0, and starts the journal
// over. At start (and before the next group after a failed one) every file
// is cut back to its checkpointed length and the committed journal written
// again at its offsets. So a record is in the files iff its lane's mark
// covers it, across a crash at any point. This needs a single writer of
// `marks`, `files` and the journal: store(), checkpoint() and prune() are
// called from one thread (the storage thread).
//
// Pruning (prune()): a `files` entry of a day older than files_keep_days is
// removed once the file holds exactly its committed length, and the day is
// recorded in meta "files_sealed_before": a .jsonl file of an earlier day
// that has no entry is complete at its size (repair leaves it alone; a late
// row for that day first records its size, then appends). An `agents` entry
// silent for agents_keep_days is removed (the agents command stops listing
// it); its marks stay, as exactly-once needs them when it comes back.
//
// Threads: every function may be called from any thread, and blocks on
// LMDB's writer lock (write transactions are short: store() and prune() run
// no file I/O in one; only a repair does, at open over every row file, and
// after a failed group over the files written since the last checkpoint)
// and briefly while the map grows. store(), checkpoint() and prune() also block on file I/O,
// fdatasync and syncfs: call them from the storage thread only, never from
// an event loop.

#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <shared_mutex>
#include <string>
#include <vector>

#include <kj/io.h>

#include "net/collector/admin_state.hpp"
#include "net/collector/row_store.hpp"
#include "persistence/files.hpp"
#include "persistence/lmdb.hpp"
#include "schemas/codec.hpp"
#include "schemas/protocol.capnp.h"

namespace outpost::net {

class GroupJournal;

struct RepairReport {
  uint64_t files_cut = 0;      // files that had uncommitted bytes at the end
  uint64_t bytes_cut = 0;
  uint64_t files_short = 0;    // files shorter than committed: damaged outside Outpost
  uint64_t files_kept = 0;     // with a damaged journal: bytes beyond what it vouches for, kept
};

struct CollectorStoreOptions {
  uint64_t map_size = 1ull << 30;      // the LMDB map at start; it grows on MDB_MAP_FULL
  uint64_t max_map_size = 64ull << 30;  // and never beyond this nor the file system's size
  int files_keep_days = 7;              // `files` entries of days older than this are pruned
  int agents_keep_days = 365;           // `agents` entries silent this long are pruned
  // A checkpoint follows a group once the journal holds this much, or this
  // long after the last one.
  uint64_t checkpoint_bytes = 64ull << 20;
  std::chrono::milliseconds checkpoint_interval{5000};
  size_t max_open_files = 1024;  // row and upload files kept open across groups
  // Tests: called in store() after the data is durable, before the marks commit.
  std::function<void()> after_data_sync;
};

// A full file system shows up as ENOSPC from write, or as EIO from LMDB
// (its short write) or fdatasync: an EIO where less than 1 MiB is left is
// taken for ENOSPC, so that disk full reads the same every time.
int disk_full_as_enospc(int err, const std::filesystem::path& where);

class CollectorStore final : public RowStore, public AdminState {
 public:
  // Opens (and repairs) the store; throws StoreLocked, StoreError. Any
  // thread, before the others start: it walks every .jsonl file under the
  // datadir and cuts and fsyncs those longer than committed.
  explicit CollectorStore(const std::filesystem::path& datadir, CollectorStoreOptions options = {});
  ~CollectorStore();
  CollectorStore(const CollectorStore&) = delete;
  CollectorStore& operator=(const CollectorStore&) = delete;

  const char* backend() const override { return "jsonl"; }

  // Any thread: a read transaction, which waits only while the map grows.
  AgentProgress progress(const std::string& agent) const override;

  // Storage thread only. Stores a group of uploads with one fdatasync (of
  // the journal) and one commit, however many files it touched. Refuses (in
  // its result) an upload that leaves a gap after the mark or whose seqs do
  // not ascend; fails (in its result) one whose files cannot be opened or
  // written, cutting what it wrote, while the others are stored. Throws
  // StoreError (nothing committed) when the journal's write or fdatasync or
  // the commit fails, the map reached its limit, or the journal reached 4
  // checkpoints' worth because checkpoints fail (their error). After a
  // failure the next call first cuts what the failed group wrote to the
  // files written since the last checkpoint and writes the journal again.
  // Blocks on file I/O, fdatasync and a short write transaction.
  std::vector<UploadResult> store(const std::vector<Upload>& uploads, StoreReport* report = nullptr) override;

  // Storage thread only. Makes every row file durable with one syncfs of
  // the datadir's file system and starts the journal over (see the top of
  // this file); store() calls it on its own, the storage thread also when
  // idle. Throws StoreError (the journal keeps everything; after a failed
  // syncfs the next store() first writes it again). Blocks on syncfs and a
  // short write transaction.
  void checkpoint() override;
  uint64_t journal_bytes() const override;  // storage thread only: committed bytes since the last checkpoint

  // Storage thread only (see the top of this file). Short transactions,
  // a stat per pruned file.
  PruneReport prune(int64_t now_ns) override;

  uint64_t map_size() const;  // any thread

  const RepairReport& repair_report() const { return repair_; }

  struct AgentEntry {
    std::string id;
    int64_t last_upload_ns = 0;
    LaneMarks marks{};
  };
  std::vector<AgentEntry> agents() const;  // any thread, like marks()

  // The admin side (admin_state.hpp; requests are small and rare: the
  // writes commit at once). The writes wait for LMDB's writer lock (the
  // storage thread's short marks commit, with its sync) and while the map
  // grows; the const reads wait only while the map grows (an LMDB read
  // transaction of their own).
  uint64_t next_flow_ids(uint64_t count = 1) override;
  uint64_t flows_given_below() const override;
  bool known_agent(const std::string& agent) const override;
  void remember_agent(const std::string& agent) override;  // on its first connection
  std::vector<std::string> agents_met() const override;
  void set_event_table(const std::string& agent, const std::string& encoded) override;
  std::string event_table(const std::string& agent) const override;
  void queue_request(const std::string& agent, const std::string& encoded) override;
  std::vector<Queued> queued_requests(const std::string& agent) const override;
  void remove_request(const std::string& agent, uint64_t key) override;
  std::vector<std::string> agents_with_requests() const override;

 private:
  class Files;
  // A transaction, holding txns_ shared so that the map cannot move under it.
  // One at a time per thread: a thread that holds one must not begin another.
  struct Txn {
    std::shared_lock<std::shared_mutex> lock;
    persistence::lmdb::Txn txn;
  };
  Txn begin(bool read_only) const;
  // Runs fill in a write transaction and commits it; on MDB_MAP_FULL grows
  // the map and runs it again (fill must only touch the transaction).
  void write(const std::function<void(const persistence::lmdb::Txn&)>& fill);
  void grow();  // takes txns_ exclusively; throws StoreError at the limit
  // Cuts every row file (or those in `only`) beyond its checkpointed length,
  // or beyond the end of its lines in the committed journal (`journaled`) if
  // that is further; with `keep_beyond` (a damaged journal) records their
  // sizes instead.
  void repair(const std::map<std::string, uint64_t>& journaled, const std::set<std::string>* only,
              bool keep_beyond);
  void recover();
  std::vector<UploadResult> store_group(const std::vector<Upload>& uploads, StoreReport* report);
  void checkpoint_now();
  void try_checkpoint();  // a failure is logged
  // A .jsonl file whose `files` entry was pruned: complete at its size.
  bool sealed(const std::string& rel, const persistence::lmdb::Txn& txn) const;
  // The length a file holds for sure (its entry, or its size if sealed).
  uint64_t committed_length(const std::string& rel, uint64_t size);

  std::filesystem::path datadir_;
  CollectorStoreOptions options_;
  persistence::DirLock lock_;
  mutable std::shared_mutex txns_;  // shared: a transaction is open; exclusive: the map moves
  std::unique_ptr<persistence::lmdb::Env> env_;
  MDB_dbi marks_ = 0, files_ = 0, agents_ = 0, tables_ = 0, requests_ = 0, meta_ = 0;
  RepairReport repair_;
  // The storage thread's.
  kj::AutoCloseFd datadir_fd_;  // syncfs at checkpoints: open from the start, to see every writeback error
  std::unique_ptr<GroupJournal> journal_;
  std::unique_ptr<Files> row_files_;
  bool needs_recovery_ = false;  // a group or a checkpoint's sync failed: recover() before the next group
  std::chrono::steady_clock::time_point last_checkpoint_;  // the last attempt
  bool checkpoint_failed_ = false;  // the last attempt after a group failed
};

}  // namespace outpost::net
