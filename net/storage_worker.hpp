#pragma once
// The collector's storage threads. RPC handlers (on the kj event loop)
// submit uploads; a render thread turns their records into JSON lines, and
// the store thread takes every rendered upload waiting when it wakes, stores
// them as one group (one fdatasync per file, one LMDB commit) and resolves
// each caller's promise back on the caller's loop. fsync never blocks the
// loop, and the next group renders while this one syncs.

#include <kj/async.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "net/collector_store.hpp"

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

class StorageWorker {
 public:
  explicit StorageWorker(CollectorStore& store);
  ~StorageWorker();  // stores what was submitted, then joins
  StorageWorker(const StorageWorker&) = delete;
  StorageWorker& operator=(const StorageWorker&) = delete;

  // From a thread with a kj event loop. The upload's records must stay valid
  // until the promise resolves. Rejects (FAILED) when storage fails.
  kj::Promise<UploadResult> submit(Upload upload);

  struct Stats {
    uint64_t groups = 0;
    uint64_t uploads = 0;
    StoreReport records;
    uint64_t failures = 0;
  };
  Stats stats() const;

 private:
  struct Job {
    Upload upload;
    kj::Own<kj::CrossThreadPromiseFulfiller<UploadResult>> done;
  };
  void render_loop();
  void store_loop();
  std::vector<Job> take_group();  // under mutex_
  void fail_group(std::vector<Job>& group, const char* why);

  CollectorStore& store_;
  mutable std::mutex mutex_;
  std::condition_variable wake_render_, wake_store_;
  std::deque<Job> queue_;     // submitted, to render
  std::deque<Job> rendered_;  // to store
  bool stopping_ = false;
  bool render_done_ = false;  // the render thread has left: nothing more comes to rendered_
  Stats stats_;
  std::thread render_thread_, store_thread_;
};

}  // namespace outpost::net
