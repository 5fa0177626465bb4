#pragma once
// Rows the host pushes into a query (`source: {type: host}`). The host's
// thread encodes them into the query's batches as it pushes (so a host
// cannot push faster than it encodes); the query actor takes the batches
// and appends them as its own, through the pending budget. Batches wait
// here only while the query cannot append (its appends unanswered, the
// budget used up): the buffer at its limit, so would_block is the buffer's
// backpressure, seen by the host.

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "actors/agent_config.hpp"
#include "actors/source.hpp"
#include "outpost/outpost.hpp"

namespace outpost {

// One host query's rows. Lives as long as the agent runs, across restarts of
// its query. Every member may be called from any thread; each takes the
// queue's lock and blocks on nothing else, except wait_writable.
class PushQueue {
 public:
  PushQueue(const QuerySpec& spec, WritableCallback on_writable);
  ~PushQueue();

  // The host: ok, would_block (queue_rows rows wait), too_large (the row
  // alone is bigger than a record) or not_running (closed).
  Errc push(const Row& row);
  // The host: ok once there is room, not_running once closed, would_block at the timeout.
  Errc wait_writable(std::chrono::milliseconds timeout);
  // The agent is stopping: pushes are refused, waiters return; the rows
  // stay for the query's hand-over.
  void close();
  bool empty() const;

  // The query's thread: what to call when a row comes to an empty queue
  // (a new source of a restarted query replaces the old one's).
  void set_wake(std::function<void()> wake);
  // The query's thread: the oldest batch, or the one being filled when no
  // other waits; none when the queue is empty (the next push wakes the
  // query). Tells the waiting host once half the queue is free again after a
  // would_block.
  std::optional<PullResult::Record> take();

 private:
  void finish_open();  // lock held

  const QuerySpec spec_;
  const WritableCallback on_writable_;
  mutable std::mutex mutex_;
  std::condition_variable writable_;
  std::unique_ptr<schemas::RowBatchWriter> open_;  // the batch being filled
  std::vector<std::string> columns_;               // its columns
  int64_t open_since_ns_ = 0;
  std::deque<PullResult::Record> ready_;
  uint64_t rows_ = 0;  // in open_ and ready_
  std::function<void()> wake_;
  bool refused_ = false;  // would_block was answered since the queue last had room
  bool closed_ = false;
};

// The query's source: the batches of its PushQueue.
class HostSource : public Source {
 public:
  explicit HostSource(std::shared_ptr<PushQueue> queue) : queue_(std::move(queue)) {}
  std::vector<std::string> columns() const override { return {}; }  // it adds no row to the query's batch
  void set_wake(std::function<void()> wake) override { queue_->set_wake(std::move(wake)); }
  PullResult pull(schemas::RowBatchWriter& batch, size_t max_rows) override;
  bool holds_accepted_rows() const override { return !queue_->empty(); }

 private:
  std::shared_ptr<PushQueue> queue_;
};

}  // namespace outpost
