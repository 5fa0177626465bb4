#pragma once
// What watch_ebpf()'s sensors share (kernel_events.cpp, net_events.cpp): a
// kernel event source as a sensor's scanner, and the System part of a row.

#include <caf/settings.hpp>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "queries/kernel_net.hpp"
#include "queries/sensors.hpp"

namespace outpost::vql {

// System {Timestamp, EventName, ProcessID, ...}, as Velociraptor's tracee
// rows have it; NULL where a field is unknown.
struct SystemFields {
  uint64_t time_ns = 0;
  const char* event = "";
  Value pid, tid, ppid, uid, gid;
  std::string comm;
  Value start;  // the process's start time
};
Dict system_row(const SystemFields& f, const std::string& host);
std::string host_name();

// The sensor of watch_ebpf()'s network events of `group` ("tcp", "dns",
// "tcp_data": net_events.cpp).
std::unique_ptr<Scanner> net_scanner(const std::string& group, const NetSourceOptions& options);

// A source (ProcessEventSource, NetEventSource) read by a sensor. It opens
// in the first scan, on the sensor's thread: loading programs (the kernel
// verifies them) takes a few hundred ms, which the subscribing query's
// worker should not wait for; a source that cannot start fails the sensor,
// and its queries, with the reasons. Later scans wait for events (up to a
// second, or until interrupt()).
template <typename Source, typename Event>
class KernelScanner final : public Scanner {
 public:
  static constexpr size_t kGatherEvents = 256;
  static constexpr std::chrono::milliseconds kGatherTime{5};
  using Open = std::function<std::unique_ptr<Source>()>;
  using Rows = std::function<void(const Event&, std::vector<Row>&)>;  // none, one or more rows per event
  using Backend = std::function<std::string(const Source&)>;
  using Refusals = std::function<std::vector<Refusal>(const Source&)>;

  KernelScanner(Open open, Rows rows, Backend backend, Refusals refusals = nullptr)
      : open_(std::move(open)),
        rows_(std::move(rows)),
        backend_of_(std::move(backend)),
        refusals_of_(std::move(refusals)) {}

  std::chrono::milliseconds period() const override { return std::chrono::milliseconds(0); }

  void scan(std::vector<Row>& events) override {
    if (!source_) {
      std::shared_ptr<Source> source(open_());
      backend_ = backend_of_(*source);
      if (refusals_of_) refusals_ = refusals_of_(*source);
      std::lock_guard<std::mutex> lock(mutex_);
      source_ = std::move(source);
      return;  // the messages that came meanwhile (subscriptions) first: an interrupt then was lost
    }
    raw_.clear();
    try {
      bool woken = !source_->read(raw_, 1000);  // an interrupt may still hand over events: kept
      // A few events: more are likely on their way (a storm, a build). Taking
      // them together costs one wakeup of this thread and of each query, not
      // one per event, for a delay nobody downstream of a buffer notices.
      if (!woken && !raw_.empty() && raw_.size() < kGatherEvents) {
        std::this_thread::sleep_for(kGatherTime);
        source_->read(raw_, 0);
      }
    } catch (...) {
      // The sensor fails with this; its programs are detached now, not when its last query leaves.
      std::lock_guard<std::mutex> lock(mutex_);
      source_.reset();
      throw;
    }
    events.reserve(events.size() + raw_.size());
    for (auto& e : raw_) rows_(e, events);
  }

  uint64_t take_lost() override { return source_ ? source_->take_lost() : 0; }
  void interrupt() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (source_) source_->interrupt();  // not open yet: the scan that opens it does not wait
  }
  void describe(caf::settings& s) const override {
    caf::put(s, "backend", backend_);
    std::string unavailable;
    for (auto& r : refusals_) unavailable += (unavailable.empty() ? "" : "; ") + r.why;
    if (!unavailable.empty()) caf::put(s, "unavailable", unavailable);
  }
  const std::vector<Refusal>& refusals() const override { return refusals_; }

 private:
  Open open_;
  Rows rows_;
  Backend backend_of_;
  Refusals refusals_of_;
  // Set once by the sensor's thread; read there, and by interrupt() from others.
  std::shared_ptr<Source> source_;
  mutable std::mutex mutex_;
  std::string backend_ = "starting";  // then the backend that opened (the sensor's error says when it failed)
  std::vector<Event> raw_;
  std::vector<Refusal> refusals_;  // set with source_
};

}  // namespace outpost::vql
