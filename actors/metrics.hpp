#pragma once
// What every actor counts about itself, always, and what an inspector turns
// on only while it watches (histograms, traces).
//
// Threads: an ActorMetrics is written by its actor's handlers (one thread at a
// time, CAF's rule) and by the senders that enqueue to it (`enqueued`, and the
// mailbox stamps while watched). Every counter is an atomic, so any thread may
// read any field at any time without a lock; a snapshot is exact per field,
// not across fields. Nothing here allocates or locks per message unless the
// registry is watched or tracing. The name and last error take a small lock:
// they change when an actor starts or fails, not per message.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace outpost {

// What an actor is doing, as the debug tool shows it. Set by the actor when
// it changes; `running` otherwise.
enum class ActorState : uint8_t {
  running,
  waiting_for_space,  // a query paused by unanswered appends or the pending budget; the buffer stalled
  sleeping,           // a query waiting for its next period or for a parked source
  suspended,          // a query the operator suspended (outpostctl suspend)
  offline,            // a link that is not delivering
  backing_off,        // a link waiting to reconnect
  handing_over,       // a query sending its last batch before it ends
  exited,
};
const char* to_string(ActorState s);

// Monotonic nanoseconds (durations, "since" times) and wall-clock nanoseconds (shown to people).
int64_t steady_ns();
int64_t wall_ns();

// Counts of durations by power of two: bucket i holds [2^i, 2^(i+1)) ns, the
// last one everything longer (~9 minutes).
class Histogram {
 public:
  static constexpr size_t kBuckets = 40;
  void add(uint64_t ns) {
    size_t i = ns ? static_cast<size_t>(63 - __builtin_clzll(ns)) : 0;
    buckets_[i < kBuckets ? i : kBuckets - 1].fetch_add(1, std::memory_order_relaxed);
  }
  void reset();
  std::vector<uint64_t> counts() const;

 private:
  std::array<std::atomic<uint64_t>, kBuckets> buckets_{};
};

// What an actor keeps only once an inspector has watched or traced it (then
// until it ends): histograms, and the enqueue stamps of messages in its
// mailbox. Idle queries by the thousand would otherwise carry ~700 bytes each.
struct Observed {
  Histogram handling, mailbox;
  // Senders' threads stamp; the handler takes the stamp back out.
  void stamp(const void* message, int64_t at_ns, uint64_t flow);
  bool take_stamp(const void* message, int64_t* at_ns, uint64_t* flow);
  void clear_stamps();

 private:
  std::mutex mutex_;
  std::unordered_map<const void*, std::pair<int64_t, uint64_t>> stamps_;
};

// A mailbox holding more than this many messages is a backlog; one that stays
// over it for the configured time is a warning.
inline constexpr uint64_t kBacklogMessages = 1000;

struct ActorMetrics {
  ActorMetrics(uint64_t id, const char* kind, uint64_t parent, bool detached);
  ~ActorMetrics();
  ActorMetrics(const ActorMetrics&) = delete;
  ActorMetrics& operator=(const ActorMetrics&) = delete;

  const uint64_t id;
  const char* const kind;  // the state's name: buffer, query, link, ...
  const uint64_t parent;   // the actor that spawned it; 0 for the agent's top level
  const bool detached;     // on a thread of its own (a long handler blocks nobody else)
  const int64_t start_wall_ns;

  std::atomic<uint64_t> enqueued{0};
  std::atomic<uint64_t> handled{0};
  std::atomic<uint64_t> handling_ns{0};
  std::atomic<uint64_t> handling_max_ns{0};
  std::atomic<int64_t> busy_since_ns{0};     // steady; a handler is running since then (0: none)
  std::atomic<int64_t> backlog_since_ns{0};  // steady; the mailbox is over kBacklogMessages since then
  // Rows and encoded bytes of the records that reached the actor (appended to
  // the buffer) and that it passed on (appended by a query, read from the
  // buffer, sent by a link).
  std::atomic<uint64_t> rows_in{0}, rows_out{0};
  std::atomic<uint64_t> bytes_in{0}, bytes_out{0};
  std::atomic<uint64_t> slow_handlings{0};    // handlings longer than the registry's slow threshold
  std::atomic<int64_t> slow_last_wall_ns{0};
  std::atomic<uint64_t> dropped{0};  // events or rows lost at this actor (a sensor's full queue)
  std::atomic<int64_t> dropped_last_wall_ns{0};
  std::atomic<int64_t> state_since_ns{0};  // steady

  uint64_t mailbox_size() const {
    uint64_t e = enqueued.load(std::memory_order_relaxed), h = handled.load(std::memory_order_relaxed);
    return e > h ? e - h : 0;
  }
  ActorState state() const { return static_cast<ActorState>(state_.load(std::memory_order_relaxed)); }
  // The actor's thread. Cheap when the state does not change.
  void set_state(ActorState s) {
    if (state_.load(std::memory_order_relaxed) == static_cast<uint8_t>(s)) return;
    state_.store(static_cast<uint8_t>(s), std::memory_order_relaxed);
    state_since_ns.store(steady_ns(), std::memory_order_relaxed);
  }
  void add_out(uint64_t rows, uint64_t bytes) {
    rows_out.fetch_add(rows, std::memory_order_relaxed);
    bytes_out.fetch_add(bytes, std::memory_order_relaxed);
  }
  void add_in(uint64_t rows, uint64_t bytes) {
    rows_in.fetch_add(rows, std::memory_order_relaxed);
    bytes_in.fetch_add(bytes, std::memory_order_relaxed);
  }

  // Any thread; takes the lock.
  void set_name(std::string name);
  std::string name() const;
  void set_error(std::string error);
  std::pair<std::string, int64_t> last_error() const;  // text and wall-clock ns; empty when none

  // Null until the actor is first watched or traced. Any thread.
  Observed* observed() const { return observed_.load(std::memory_order_acquire); }
  // Makes it (once, whoever calls first). Any thread.
  Observed& observe();

 private:
  std::atomic<uint8_t> state_{0};
  std::atomic<Observed*> observed_{nullptr};  // owned
  mutable std::mutex mutex_;
  std::string name_, error_;
  int64_t error_wall_ns_ = 0;
};

}  // namespace outpost
