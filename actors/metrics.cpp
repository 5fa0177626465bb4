#include "actors/metrics.hpp"

#include <time.h>

namespace outpost {

const char* to_string(ActorState s) {
  switch (s) {
    case ActorState::running: return "running";
    case ActorState::waiting_for_space: return "waiting-for-space";
    case ActorState::sleeping: return "sleeping";
    case ActorState::suspended: return "suspended";
    case ActorState::offline: return "offline";
    case ActorState::backing_off: return "backing-off";
    case ActorState::handing_over: return "handing-over";
    case ActorState::exited: return "exited";
  }
  return "?";
}

static int64_t clock_ns(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}
int64_t steady_ns() { return clock_ns(CLOCK_MONOTONIC); }
int64_t wall_ns() { return clock_ns(CLOCK_REALTIME); }

void Histogram::reset() {
  for (auto& b : buckets_) b.store(0, std::memory_order_relaxed);
}

std::vector<uint64_t> Histogram::counts() const {
  std::vector<uint64_t> out;
  out.reserve(kBuckets);
  for (auto& b : buckets_) out.push_back(b.load(std::memory_order_relaxed));
  return out;
}

ActorMetrics::ActorMetrics(uint64_t id, const char* kind, uint64_t parent, bool detached)
    : id(id), kind(kind), parent(parent), detached(detached), start_wall_ns(wall_ns()) {
  state_since_ns.store(steady_ns(), std::memory_order_relaxed);
}

ActorMetrics::~ActorMetrics() { delete observed_.load(std::memory_order_acquire); }

Observed& ActorMetrics::observe() {
  Observed* o = observed_.load(std::memory_order_acquire);
  if (o) return *o;
  auto* fresh = new Observed;
  if (observed_.compare_exchange_strong(o, fresh, std::memory_order_acq_rel)) return *fresh;
  delete fresh;  // another thread made it first
  return *o;
}

void ActorMetrics::set_name(std::string name) {
  std::lock_guard<std::mutex> lock(mutex_);
  name_ = std::move(name);
}

std::string ActorMetrics::name() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return name_;
}

void ActorMetrics::set_error(std::string error) {
  std::lock_guard<std::mutex> lock(mutex_);
  error_ = std::move(error);
  error_wall_ns_ = wall_ns();
}

std::pair<std::string, int64_t> ActorMetrics::last_error() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {error_, error_wall_ns_};
}

void Observed::stamp(const void* message, int64_t at_ns, uint64_t flow) {
  std::lock_guard<std::mutex> lock(mutex_);
  stamps_[message] = {at_ns, flow};
}

bool Observed::take_stamp(const void* message, int64_t* at_ns, uint64_t* flow) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = stamps_.find(message);
  if (it == stamps_.end()) return false;
  *at_ns = it->second.first;
  *flow = it->second.second;
  stamps_.erase(it);
  return true;
}

void Observed::clear_stamps() {
  std::lock_guard<std::mutex> lock(mutex_);
  stamps_.clear();
}

}  // namespace outpost
