#include "net/storage_worker.hpp"

#include <spdlog/spdlog.h>

#include "persistence/errors.hpp"

namespace outpost::net {

uint64_t bytes_of(const Upload& up) {
  uint64_t bytes = 0;
  for (auto& r : up.records) bytes += r.data.size();
  return bytes;
}

// Control and events lanes first, then the bulk lanes.
bool urgent(Lane lane) { return lane == Lane::CONTROL || lane == Lane::EVENTS; }

StorageWorker::StorageWorker(CollectorStore& store)
    : store_(store), render_thread_([this] { render_loop(); }), store_thread_([this] { store_loop(); }) {}

StorageWorker::~StorageWorker() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_render_.notify_one();
  render_thread_.join();  // renders what was submitted,
  store_thread_.join();   // which is then stored
}

kj::Promise<UploadResult> StorageWorker::submit(Upload upload) {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<UploadResult>();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back({std::move(upload), kj::mv(paf.fulfiller)});
  }
  wake_render_.notify_one();
  return kj::mv(paf.promise);
}

StorageWorker::Stats StorageWorker::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
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

// Nothing of the group was committed: every caller hears why, the agents
// resend, and the storage thread goes on.
void StorageWorker::fail_group(std::vector<Job>& group, const char* why) {
  spdlog::error("collector: storing {} uploads failed: {}", group.size(), why);
  for (auto& job : group) job.done->reject(KJ_EXCEPTION(FAILED, "collector storage failed", why));
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.failures;
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
      for (auto& r : up.records) up.rendered.push_back(render_record(up.agent, up.lane, r));
    } catch (const std::exception& e) {  // bad_alloc: this upload fails, the agent resends it
      std::vector<Job> failed;
      failed.push_back(std::move(job));
      fail_group(failed, e.what());
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
  for (;;) {
    std::vector<Job> group;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_store_.wait(lock, [&] { return render_done_ || !rendered_.empty(); });
      if (rendered_.empty()) return;  // stopping, and nothing left
      group = take_group();
    }
    std::vector<Upload> uploads;
    uploads.reserve(group.size());
    for (auto& job : group) uploads.push_back(std::move(job.upload));
    StoreReport report;
    try {
      auto results = store_.store(uploads, &report);
      for (size_t i = 0; i < group.size(); ++i) group[i].done->fulfill(std::move(results[i]));
    } catch (const std::exception& e) {  // StoreError, filesystem_error, bad_alloc
      fail_group(group, e.what());
      continue;
    } catch (const kj::Exception& e) {
      fail_group(group, e.getDescription().cStr());
      continue;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.groups;
    stats_.uploads += group.size();
    stats_.records.stored += report.stored;
    stats_.records.duplicates += report.duplicates;
    stats_.records.malformed += report.malformed;
  }
}

}  // namespace outpost::net
