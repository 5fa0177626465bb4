#include "net/collector/storage_worker.hpp"

#include <algorithm>
#include <spdlog/spdlog.h>

#include "persistence/errors.hpp"
#include "schemas/codec.hpp"

namespace outpost::net {

uint64_t bytes_of(const Upload& up) {
  uint64_t bytes = 0;
  for (auto& r : up.records) bytes += r.data.size();
  return bytes;
}

// Control and events lanes first, then the bulk lanes.
bool urgent(Lane lane) { return lane == Lane::CONTROL || lane == Lane::EVENTS; }

MemoryCharge& MemoryCharge::operator=(MemoryCharge&& other) noexcept {
  if (this != &other) {
    release();
    worker_ = other.worker_;
    bytes_ = other.bytes_;
    other.bytes_ = 0;
  }
  return *this;
}

void MemoryCharge::add(uint64_t bytes) {
  if (!worker_ || bytes == 0) return;
  worker_->charge(bytes);
  bytes_ += bytes;
}

void MemoryCharge::release() {
  if (bytes_ == 0) return;
  uint64_t bytes = bytes_;
  bytes_ = 0;
  worker_->release(bytes);
}

StorageWorker::StorageWorker(RowStore& store, uint64_t memory_budget)
    : store_(store), budget_(memory_budget), render_thread_([this] { render_loop(); }),
      store_thread_([this] { store_loop(); }) {}

StorageWorker::~StorageWorker() { stop(); }

void StorageWorker::stop() {
  if (!render_thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_render_.notify_one();
  wake_store_.notify_one();
  render_thread_.join();  // renders what was submitted,
  store_thread_.join();   // which is then stored
}

kj::Promise<UploadResult> StorageWorker::submit(Upload upload, MemoryCharge charge) {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<UploadResult>();
  if (charge.bytes() == 0) {
    charge = MemoryCharge(*this);
    charge.add(bytes_of(upload));
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++jobs_;
    queue_.push_back({std::move(upload), std::move(charge), kj::mv(paf.fulfiller)});
  }
  wake_render_.notify_one();
  return kj::mv(paf.promise);
}

kj::Promise<void> StorageWorker::room() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (reading_allowed()) return kj::READY_NOW;
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  readers_.push_back(kj::mv(paf.fulfiller));
  return kj::mv(paf.promise);
}

void StorageWorker::charge(uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  held_ += bytes;
  stats_.peak_bytes = std::max(stats_.peak_bytes, held_);
}

void StorageWorker::release(uint64_t bytes) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    held_ -= bytes;
  }
  wake_render_.notify_one();
  wake_readers();
}

void StorageWorker::wake_readers() {
  std::vector<kj::Own<kj::CrossThreadPromiseFulfiller<void>>> wake;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (readers_.empty() || !reading_allowed()) return;
    wake.swap(readers_);
  }
  for (auto& reader : wake) reader->fulfill();  // a cancelled one ignores it
}

StorageWorker::Stats StorageWorker::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  Stats stats = stats_;
  stats.held_bytes = held_;
  return stats;
}

std::vector<size_t> pick_group(const std::vector<UploadSize>& waiting) {
  std::vector<size_t> group;
  for (size_t i = 0; i < waiting.size() && group.size() < kMaxUploadsPerGroup; ++i)
    if (urgent(waiting[i].lane)) group.push_back(i);
  size_t urgent_uploads = group.size();
  uint64_t budget = urgent_uploads ? kMaxBulkBytesWithUrgent : kMaxGroupBytes, bytes = 0;
  for (size_t i = 0; i < waiting.size() && group.size() < kMaxUploadsPerGroup; ++i) {
    if (urgent(waiting[i].lane)) continue;
    // In order: stop at the first that does not fit.
    if (group.size() > urgent_uploads && bytes + waiting[i].bytes > budget) break;
    bytes += waiting[i].bytes;
    group.push_back(i);
  }
  return group;
}

std::vector<StorageWorker::Job> StorageWorker::take_group() {
  std::vector<UploadSize> waiting;
  waiting.reserve(rendered_.size());
  for (auto& job : rendered_) waiting.push_back({job.upload.lane, bytes_of(job.upload)});
  auto picked = pick_group(waiting);
  std::vector<Job> group;
  group.reserve(picked.size());
  for (size_t i : picked) group.push_back(std::move(rendered_[i]));
  std::sort(picked.begin(), picked.end());
  for (auto it = picked.rbegin(); it != picked.rend(); ++it) rendered_.erase(rendered_.begin() + *it);
  return group;
}

// Nothing of these uploads was committed: every caller hears why, the
// agents resend, and the storage thread goes on.
void StorageWorker::fail_group(std::vector<Job>& group, const char* why) {
  spdlog::error("collector: storing {} uploads failed: {}", group.size(), why);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.failures += group.size();
  }
  for (auto& job : group) job.done->reject(KJ_EXCEPTION(FAILED, "collector storage failed", why));
}

void StorageWorker::finished(std::vector<Job>& group) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    jobs_ -= group.size();
  }
  group.clear();  // releases their memory
  wake_render_.notify_one();
  wake_readers();
}

// Urgent lanes first, like the groups; each upload whole.
void StorageWorker::render_loop() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_render_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) {
        render_done_ = true;
        wake_store_.notify_one();
        return;
      }
      auto it = std::find_if(queue_.begin(), queue_.end(),
                             [](const Job& j) { return urgent(j.upload.lane); });
      if (it == queue_.end()) it = queue_.begin();
      job = std::move(*it);
      queue_.erase(it);
    }
    auto& up = job.upload;
    try {
      up.rendered.reserve(up.records.size());
      for (auto& r : up.records) {
        {
          // Over the budget, wait for what is being stored to be answered.
          std::unique_lock<std::mutex> lock(mutex_);
          wake_render_.wait(lock, [&] { return held_ < budget_ || (!storing_ && rendered_.empty()); });
        }
        up.rendered.push_back(render_record(up.agent, up.lane, r));
        auto& last = up.rendered.back();
        job.charge.add(last.lines.size() + last.file.size() + last.blob_file.size());
      }
    } catch (const std::exception& e) {  // bad_alloc: this upload fails, the agent resends it
      std::vector<Job> failed;
      failed.push_back(std::move(job));
      fail_group(failed, e.what());
      finished(failed);
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      rendered_.push_back(std::move(job));
    }
    wake_store_.notify_one();
  }
}

void StorageWorker::store_loop() {
  // Pruning runs here, the one writer of `files` (the admin writer also adds
  // `agents` entries): at start and hourly.
  // The journal is checkpointed by store() as it grows, and here once the
  // uploads pause for a second and when stopping, so that a restart has
  // little to write again. While checkpoints fail (a full state map, say),
  // the idle ones back off to once a minute.
  auto next_prune = std::chrono::steady_clock::now();
  std::chrono::seconds idle{1};
  auto checkpoint = [this, &idle] {
    try {
      store_.checkpoint();
      idle = std::chrono::seconds(1);
    } catch (const std::exception& e) {
      idle = std::min<std::chrono::seconds>(idle * 2, std::chrono::seconds(60));
      spdlog::error("collector: checkpoint failed (the journal keeps the rows; next idle try in {} s): {}",
                    idle.count(), e.what());
    }
  };
  for (;;) {
    std::vector<Job> group;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      auto until = next_prune;
      if (store_.journal_bytes() > 0) until = std::min(until, std::chrono::steady_clock::now() + idle);
      bool woken = wake_store_.wait_until(lock, until, [&] { return render_done_ || !rendered_.empty(); });
      if (rendered_.empty() && render_done_) {  // stopping, and nothing left
        lock.unlock();
        checkpoint();
        return;
      }
      if (!rendered_.empty()) {
        group = take_group();
        storing_ = true;
      } else if (!woken && store_.journal_bytes() > 0) {
        lock.unlock();
        checkpoint();
      }
    }
    if (std::chrono::steady_clock::now() >= next_prune) {
      next_prune = std::chrono::steady_clock::now() + std::chrono::hours(1);
      try {
        store_.prune(schemas::now_ns());
      } catch (const std::exception& e) {
        spdlog::error("collector: pruning the collector's state failed: {}", e.what());
      }
    }
    if (group.empty()) continue;
    std::vector<Upload> uploads;
    uploads.reserve(group.size());
    for (auto& job : group) uploads.push_back(std::move(job.upload));
    StoreReport report;
    std::vector<UploadResult> results;
    bool group_failed = true;
    try {
      results = store_.store(uploads, &report);
      group_failed = false;
    } catch (const std::exception& e) {  // StoreError, filesystem_error, bad_alloc
      fail_group(group, e.what());
    } catch (const kj::Exception& e) {
      fail_group(group, e.getDescription().cStr());
    }
    {  // counted before anyone is answered: an answer's reader sees its upload in the stats
      std::lock_guard<std::mutex> lock(mutex_);
      storing_ = false;
      if (!group_failed) {
        ++stats_.groups;
        stats_.uploads += group.size();
        stats_.failures += static_cast<uint64_t>(std::count_if(
            results.begin(), results.end(), [](auto& r) { return r.status == UploadStatus::failed; }));
        stats_.records.stored += report.stored;
        stats_.records.duplicates += report.duplicates;
        stats_.records.malformed += report.malformed;
      }
    }
    if (!group_failed)
      for (size_t i = 0; i < group.size(); ++i) {
        if (results[i].status == UploadStatus::failed)
          group[i].done->reject(KJ_EXCEPTION(FAILED, "collector storage failed", results[i].error));
        else
          group[i].done->fulfill(std::move(results[i]));
      }
    finished(group);
  }
}

}  // namespace outpost::net
