#pragma once
// The process tracker: the agent's process tree, kept from process events
// (process_tracker()'s update query: exec and exit from watch_ebpf in
// Linux.Events.TrackProcesses) and full syncs (its sync query: pslist()),
// with exited processes kept until they expire or make room. Velociraptor's
// process_tracker_* functions read it.
//
// Ids are Velociraptor's: a process is "<pid>-<start, Unix seconds>" (a pid
// reused later is another process); the bare pid names the latest process
// with that pid; a parent the tracker never saw is "<ppid>-?".
//
// Memory is bounded: at most `max_size` processes, each with at most
// kMaxDataBytes of data in memory (longer strings cut, larger values
// dropped, and `DataTruncated` set), and no more child ids than processes in
// all. An entry costs about 900 bytes with Linux.Events.TrackProcesses'
// data and at most about 5 KiB (bytes() counts it).
//
// Threads: one owner (the query that installed the tracker) applies
// updates; any thread reads. Reads take a shared lock, updates an exclusive
// one for the time of one update (a sync: one lock per process, then one to
// end the processes it did not find).

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "queries/sensors.hpp"
#include "queries/value.hpp"

namespace outpost::vql {

// A process as the tracker and its fallback (pslist()) give it.
struct TrackedProcess {
  std::string id, parent_id;
  Timestamp start;
  Timestamp end;  // the epoch: running (Go's zero time upstream)
  Row data;       // the update's data; Pid, Ppid, StartTime, EndTime are added when read
  std::vector<std::string> children;  // ids
  // Tracker only: the wall time it was last seen (an update, a sync), and
  // its place in the eviction order.
  Timestamp seen;
  uint64_t touched = 0;
};

// What the process_tracker_* functions read: the tracker's table (under its
// lock) or the fallback's snapshot.
class ProcessView {
 public:
  virtual ~ProcessView() = default;
  // By id, or by bare pid (the latest process with it).
  virtual const TrackedProcess* find(const std::string& id) const = 0;
  // Every process, in an order the view chooses.
  virtual void each(const std::function<void(const TrackedProcess&)>& f) const = 0;
};

// One row of the update or sync query, as Velociraptor's tracker reads it.
struct TrackerUpdate {
  std::string id;         // the pid, as text
  std::string parent_id;  // the parent's pid; empty: not given
  std::string type;       // "start", "exit"; others are ignored (a sync reads no type)
  Timestamp start, end;   // the epoch: not given
  Row data;
};

struct TrackerOptions {
  size_t max_size = 10'000;                      // processes kept, live and exited
  std::chrono::seconds max_expiry{24 * 3600};    // an exited process is kept this long at most
};

class ProcessTracker {
 public:
  // Data beyond this (bytes of memory, estimated) is cut.
  static constexpr size_t kMaxDataBytes = 4096;
  // Update rows a process_tracker_updates() query may have waiting.
  static constexpr size_t kUpdateQueue = 10'000;

  explicit ProcessTracker(TrackerOptions options);
  ~ProcessTracker();  // ends every process_tracker_updates() stream

  // ---- owner's thread only
  // A start or an exit, as of `now` (wall time): applied and sent to
  // subscribers. Other types are sent only.
  void update(const TrackerUpdate& u, Timestamp now);
  // When a sync query began: its wall time, and the tracker's count of
  // changes then. Which processes the sync missed is decided by the count,
  // not by the wall clock, which may be moved back or forth meanwhile.
  struct SyncStart {
    Timestamp time;
    uint64_t changes = 0;
  };
  SyncStart sync_start() const;
  // Every live process, listed by a sync that began at `began`: replaces
  // what the tracker knew of them; a process not in it, not known to have
  // ended and not updated since `began` is taken as ended when it was last
  // seen (an empty `live` changes nothing). Subscribers get
  // {UpdateType: "sync", Data: {id: entry}}.
  void sync(const std::vector<TrackerUpdate>& live, SyncStart began);
  // The same for a sync that began now.
  void sync(const std::vector<TrackerUpdate>& live, Timestamp now) { sync(live, SyncStart{now, sync_start().changes}); }

  // ---- any thread
  // `f` reads the table under the tracker's shared lock.
  void read(const std::function<void(const ProcessView&)>& f) const;
  // Update rows from now on ({Id, ParentId, UpdateType, StartTime, EndTime,
  // Data}: Velociraptor's Go names); kUpdateQueue waiting at most, the rest
  // counted as dropped.
  SubscriptionPtr subscribe() const;
  size_t size() const;
  size_t bytes() const;     // what the table holds, estimated
  uint64_t evicted() const;  // processes removed to stay within max_size
  const TrackerOptions& options() const { return options_; }

 private:
  class Table;
  void publish(Row row) const;

  const TrackerOptions options_;
  mutable std::shared_mutex mutex_;
  std::unique_ptr<Table> table_;
  mutable std::mutex subscribers_mutex_;
  mutable std::vector<std::weak_ptr<Subscription>> subscribers_;
};

// Velociraptor's id of a process: "<pid>-<start seconds>", "-0" without a start.
std::string tracker_id(const std::string& pid, Timestamp start);

// An entry as process_tracker_get() gives it: {Id, ParentId, StartTime,
// EndTime, Data, Children}; Data with Pid, Ppid, StartTime and EndTime the
// tracker's. Copies: nothing shared with the table.
Value tracker_entry(const TrackedProcess& p);
Value tracker_data(const TrackedProcess& p);

}  // namespace outpost::vql
