#pragma once
// The collector's storage threads. RPC handlers (on the kj event loop)
// submit uploads; a render thread turns their records into JSON lines, and
// the store thread takes rendered uploads (pick_group), stores them as one
// group into the backend (row_store.hpp: with jsonl one fdatasync and one
// short LMDB commit; with jetstream one wait for every ack) and resolves each
// caller's promise back on the caller's loop. The loop never waits for the
// backend's I/O on the upload path; the next group renders
// while this one syncs.
//
// Memory: everything uploads hold is counted against one budget, across all
// connections: the bytes read from a connection (MemoryCharge, from the
// read), which its upload takes over when submitted, and the JSON rendered
// from it, until the upload is answered. Over the budget, connections stop
// reading (room()), so agents' TCP windows fill and they wait; nothing
// accepted is refused or dropped. The render thread waits too while over
// budget and something is being stored. So the worker holds at most the
// budget, plus a read chunk per connection and one upload's JSON, except
// that when no upload is in the worker reads go on (else connections that
// hold partly read messages could wait on each other for ever).

#include <kj/async.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "net/collector/row_store.hpp"

namespace outpost::net {

// Bounds one group so that a flood of uploads still commits regularly, and
// so that a live row never waits behind much more than this much backlog.
inline constexpr size_t kMaxUploadsPerGroup = 256;
inline constexpr uint64_t kMaxGroupBytes = 4 << 20;
inline constexpr uint64_t kMaxBulkBytesWithUrgent = 1 << 20;

// Which rendered uploads (in arrival order) the next group takes, by index:
// every urgent one (control, events), then bulk ones in order while a byte
// budget lasts, at least one. The budget is smaller when urgent ones are in
// the group, as their fresh rows wait for its fsync. Only whole lanes are
// reordered, so each agent's uploads of one lane keep their call order.
struct UploadSize {
  Lane lane;
  uint64_t bytes;
};
std::vector<size_t> pick_group(const std::vector<UploadSize>& waiting);

inline constexpr uint64_t kDefaultMemoryBudget = 256 << 20;
inline constexpr size_t kReadChunk = 64 << 10;  // a gated connection reads at most this at once

class StorageWorker;

// Bytes counted against a worker's memory budget until released (or
// destroyed). Move-only; any thread; never blocks but on the worker's mutex.
class MemoryCharge {
 public:
  MemoryCharge() = default;
  explicit MemoryCharge(StorageWorker& worker) : worker_(&worker) {}
  MemoryCharge(MemoryCharge&& other) noexcept : worker_(other.worker_), bytes_(other.bytes_) { other.bytes_ = 0; }
  MemoryCharge& operator=(MemoryCharge&& other) noexcept;
  ~MemoryCharge() { release(); }

  void add(uint64_t bytes);
  void release();
  uint64_t bytes() const { return bytes_; }

 private:
  StorageWorker* worker_ = nullptr;
  uint64_t bytes_ = 0;
};

class StorageWorker {
 public:
  explicit StorageWorker(RowStore& store, uint64_t memory_budget = kDefaultMemoryBudget);
  ~StorageWorker();  // stop()
  // Stores what was submitted, then joins the threads; submit() must not be
  // called after. From the thread that made the worker; blocks on storage.
  void stop();
  StorageWorker(const StorageWorker&) = delete;
  StorageWorker& operator=(const StorageWorker&) = delete;

  // From a thread with a kj event loop; never blocks but on a mutex. The
  // upload's records must stay valid until the promise resolves. `charge`
  // holds the bytes read for it (empty: the upload's bytes are charged
  // here); the upload holds them until answered. Resolves with a result
  // (stored, or refused: a gap); rejects (FAILED) when storing this upload
  // failed.
  kj::Promise<UploadResult> submit(Upload upload, MemoryCharge charge = {});

  // From a thread with a kj event loop: resolves when a connection may read
  // more (below the budget, or no upload in the worker). Never blocks.
  kj::Promise<void> room();

  struct Stats {
    uint64_t groups = 0;
    uint64_t uploads = 0;
    StoreReport records;
    uint64_t failures = 0;      // uploads that failed (alone or in a failed group)
    uint64_t held_bytes = 0;    // counted against the budget now
    uint64_t peak_bytes = 0;    // the most ever counted at once
  };
  Stats stats() const;  // any thread
  uint64_t memory_budget() const { return budget_; }
  RowStore& rows() const { return store_; }  // the backend it stores into

 private:
  friend class MemoryCharge;
  struct Job {
    Upload upload;
    MemoryCharge charge;
    kj::Own<kj::CrossThreadPromiseFulfiller<UploadResult>> done;
  };
  void render_loop();
  void store_loop();
  std::vector<Job> take_group();  // under mutex_
  void fail_group(std::vector<Job>& group, const char* why);
  void finished(std::vector<Job>& group);  // not under mutex_: releases their memory
  void charge(uint64_t bytes);
  void release(uint64_t bytes);  // not under mutex_
  void wake_readers();           // not under mutex_
  bool reading_allowed() const { return held_ < budget_ || jobs_ == 0; }  // under mutex_

  RowStore& store_;
  const uint64_t budget_;
  mutable std::mutex mutex_;
  std::condition_variable wake_render_, wake_store_;
  std::deque<Job> queue_;     // submitted, to render
  std::deque<Job> rendered_;  // to store
  bool storing_ = false;      // the store thread holds a group
  size_t jobs_ = 0;           // submitted, not answered
  uint64_t held_ = 0;
  std::vector<kj::Own<kj::CrossThreadPromiseFulfiller<void>>> readers_;  // waiting in room()
  bool stopping_ = false;
  bool render_done_ = false;  // the render thread has left: nothing more comes to rendered_
  Stats stats_;
  std::thread render_thread_, store_thread_;
};

}  // namespace outpost::net
