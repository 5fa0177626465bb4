#pragma once
// Shared sensors: one actor per distinct event source and parameters
// (watch_processes(period=1) is one /proc scan per second however many
// queries use it), fanning its events out to every subscriber's queue.
//
// A queue is bounded. When a subscriber does not take its events (its query
// is paused at a full buffer) and the queue is full, further events are
// counted, not queued; the query reports the count as a status record
// (dropped_at_source) when it pulls again. It is the only loss Outpost
// allows, and it is never silent. Other subscribers are not affected.
//
// A source that loses events itself (a kernel ring buffer that was full)
// counts them, and every subscriber reports the count the same way.
//
// The sensor lives while it has subscribers: the last one leaving stops it.

#include <caf/actor_system.hpp>

#include <chrono>
#include <map>
#include <mutex>

#include "actors/instrumented.hpp"
#include "actors/interfaces.hpp"
#include "queries/kernel_process.hpp"
#include "queries/plugin.hpp"

namespace outpost::vql {

inline constexpr size_t kDefaultQueueEvents = 1000;
// Each sensor has a thread: distinct arguments (watch_directory on 10,000
// paths) must not make an agent start 10,000 of them.
inline constexpr size_t kMaxSensors = 256;

// Which of a sensor's events a subscriber wants (all when empty).
using EventFilter = std::function<bool(const Row&)>;

// One subscriber's queue: the sensor pushes, the query's stream takes.
class Subscription {
 public:
  explicit Subscription(size_t capacity = kDefaultQueueEvents, EventFilter filter = {})
      : capacity_(capacity), filter_(std::move(filter)) {}

  // Sensor side: queues the event (unless filtered out), or counts it as
  // dropped when full.
  void push(const std::shared_ptr<const Row>& event);
  // Events the source itself lost: reported as dropped too. The filter
  // cannot tell whether they were wanted, so they count for every subscriber.
  void add_dropped(uint64_t events);
  // The source is gone (`error` empty) or failed: the stream ends after
  // the events already queued.
  void close(std::string error = {});

  // Whether the filter takes `event`. Any thread.
  bool wants(const Row& event) const { return !filter_ || filter_(event); }

  // Query side.
  size_t take(std::vector<Row>& out, size_t max);
  uint64_t take_dropped();
  // Once the queue is empty: true and the error (empty when the source just ended).
  bool ended(std::string& error) const;
  // Arms `wake` for the next push or close; false (not armed) if events
  // are already waiting, so that none is missed between take and wait.
  bool wait(std::function<void()> wake);

 private:
  mutable std::mutex mutex_;
  // A vector from `head_` rather than a deque: an empty deque still holds
  // ~600 bytes, and a query's subscription is empty most of the time.
  std::vector<std::shared_ptr<const Row>> queue_;
  size_t head_ = 0;
  size_t capacity_;
  EventFilter filter_;  // read without the lock: set once, before sharing
  uint64_t dropped_ = 0;
  bool closed_ = false;
  std::string error_;
  std::function<void()> wake_;
};
// The query's side owns it; the sensor holds it weakly and fills it while it lives.
using SubscriptionPtr = std::shared_ptr<Subscription>;

// What a sensor looks at. Each scan returns the events since the last one
// (the first may only take a baseline); it runs on the sensor's own thread.
class Scanner {
 public:
  virtual ~Scanner() noexcept(false) = default;  // as RowStream's (plugin.hpp)
  // Between two scans; zero: scan() waits for events itself (up to a second,
  // so that the sensor's messages are served), and interrupt() ends the wait.
  virtual std::chrono::milliseconds period() const = 0;
  virtual void scan(std::vector<Row>& events) = 0;  // throws on failure: subscribers' queries fail
  virtual bool finished() const { return false; }    // the source is gone for good
  // Events the source lost since the last call (counted as dropped by every
  // subscriber). Sensor's thread.
  virtual uint64_t take_lost() { return 0; }
  // Ends a scan() waiting, now or at its next wait. Any thread.
  virtual void interrupt() const {}
  // What the sensor's status shows about its source. Sensor's thread.
  virtual void describe(caf::settings&) const {}
  // Events this source turned out unable to give (known once a scan opened
  // it): a row standing for each, in the shape subscribers' filters read,
  // and why. A subscriber whose filter takes one fails with the reason
  // rather than wait for events that cannot come. Sensor's thread.
  struct Refusal {
    Row example;
    std::string why;
  };
  virtual const std::vector<Refusal>& refusals() const {
    static const std::vector<Refusal> none;
    return none;
  }
};
using ScannerFactory = std::function<std::unique_ptr<Scanner>()>;

// The subscriptions made since the sensor last looked. SensorHub::subscribe
// adds (any thread); the sensor takes them after each scan, before it hands
// out the scan's events, so that a query gets every event after subscribe()
// returned, also those a scan underway then reads. Never blocks but on its
// own short lock.
class Arrivals {
 public:
  void add(std::weak_ptr<Subscription> s);
  std::vector<std::weak_ptr<Subscription>> take();

 private:
  std::mutex mutex_;
  std::vector<std::weak_ptr<Subscription>> subs_;
};

struct sensor_state {
  static inline const char* name = "sensor";
  std::string key;
  std::shared_ptr<Scanner> scanner;
  std::shared_ptr<Arrivals> arrivals;
  std::vector<std::weak_ptr<Subscription>> subscribers;
  uint64_t scans = 0;
  uint64_t events = 0;     // events seen
  uint64_t delivered = 0;  // events queued, summed over subscribers
  uint64_t lost = 0;       // lost by the source
  std::string error;
  bool ended = false;  // failed or finished: a late subscriber is closed at once
};

sensor_self_actor::behavior_type sensor(instrumented<sensor_self_actor, sensor_state> self, std::string key,
                                        std::shared_ptr<Scanner> scanner, std::shared_ptr<Arrivals> arrivals);

// How the agent's sensors reach the kernel (agent configuration `sensors`).
struct SensorSettings {
  ProcessSourceOptions process_events;  // its ring buffer size is the network programs' too
  std::string accept_tracepoint = "sys_exit";  // as NetSourceOptions' (kernel_net.hpp)
};

class ProcessTracker;  // process_tracker.hpp

// The process tracker a query installed with process_tracker(), if any:
// every query of the agent reads it. Any thread.
class TrackerSlot {
 public:
  std::shared_ptr<ProcessTracker> get() const;
  // Replaces the one installed (the last installed is read, as upstream).
  void install(std::shared_ptr<ProcessTracker> tracker);
  // Removes `tracker` if it is still the one installed.
  void uninstall(const ProcessTracker* tracker);

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<ProcessTracker> tracker_;
};

// Starts sensors on demand and stops each when its last subscriber leaves.
class SensorHub {
 public:
  explicit SensorHub(caf::actor_system& system, SensorSettings settings = {});
  ~SensorHub();  // stops every sensor; streams still held end

  // The events of sensor `key` (made by `make` unless running) that pass
  // `filter`, as a stream for a query in `env`. Throws what `make` throws.
  std::unique_ptr<RowStream> subscribe(const std::string& key, const ScannerFactory& make, Env& env,
                                       size_t queue_events = kDefaultQueueEvents, EventFilter filter = {});
  size_t running() const;
  caf::actor_system& system() const;  // where the sensors run
  const SensorSettings& settings() const;
  // Shared with the queries that install a tracker, which may outlive the hub.
  const std::shared_ptr<TrackerSlot>& trackers() const { return trackers_; }

  struct Core;  // shared with the streams, which may outlive the hub

 private:
  std::shared_ptr<Core> core_;
  std::shared_ptr<TrackerSlot> trackers_ = std::make_shared<TrackerSlot>();
};

// A sensor's key: the plugin's name and its arguments, canonically.
std::string sensor_key(const Args& args);

}  // namespace outpost::vql
