#include "net/storage_worker.hpp"

#include <spdlog/spdlog.h>

#include "persistence/errors.hpp"

namespace outpost::net {

// Bounds one group so that a flood of uploads still commits regularly.
constexpr size_t kMaxUploadsPerGroup = 256;

StorageWorker::StorageWorker(CollectorStore& store) : store_(store), thread_([this] { run(); }) {}

StorageWorker::~StorageWorker() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

kj::Promise<UploadResult> StorageWorker::submit(Upload upload) {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<UploadResult>();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back({std::move(upload), kj::mv(paf.fulfiller)});
  }
  wake_.notify_one();
  return kj::mv(paf.promise);
}

StorageWorker::Stats StorageWorker::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void StorageWorker::run() {
  for (;;) {
    std::vector<Job> group;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and nothing left
      while (!queue_.empty() && group.size() < kMaxUploadsPerGroup) {
        group.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    std::vector<Upload> uploads;
    uploads.reserve(group.size());
    for (auto& job : group) uploads.push_back(std::move(job.upload));
    StoreReport report;
    try {
      auto results = store_.store(uploads, &report);
      for (size_t i = 0; i < group.size(); ++i) group[i].done->fulfill(std::move(results[i]));
    } catch (const persistence::StoreError& e) {
      spdlog::error("collector: storing {} uploads failed: {}", group.size(), e.what());
      for (auto& job : group)
        job.done->reject(KJ_EXCEPTION(FAILED, "collector storage failed", e.what()));
      std::lock_guard<std::mutex> lock(mutex_);
      ++stats_.failures;
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
