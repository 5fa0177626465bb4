#include "queries/sensors.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "actors/status.hpp"

namespace outpost::vql {

void Subscription::push(const std::shared_ptr<const Row>& event) {
  if (filter_ && !filter_(*event)) return;
  std::function<void()> wake;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return;
    if (queue_.size() - head_ >= capacity_) {
      ++dropped_;
    } else {
      queue_.push_back(event);
    }
    wake = std::move(wake_);
    wake_ = nullptr;
  }
  if (wake) wake();  // outside the lock: it sends a message
}

void Subscription::add_dropped(uint64_t events) {
  if (events == 0) return;
  std::function<void()> wake;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return;
    dropped_ += events;
    wake = std::move(wake_);  // so that the query reports them now
    wake_ = nullptr;
  }
  if (wake) wake();
}

void Subscription::close(std::string error) {
  std::function<void()> wake;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return;
    closed_ = true;
    error_ = std::move(error);
    wake = std::move(wake_);
    wake_ = nullptr;
  }
  if (wake) wake();
}

size_t Subscription::take(std::vector<Row>& out, size_t max) {
  std::lock_guard<std::mutex> lock(mutex_);
  size_t n = 0;
  for (; n < max && head_ < queue_.size(); ++n) out.push_back(*queue_[head_++]);
  if (head_ == queue_.size()) {
    head_ = 0;
    queue_.clear();
    if (queue_.capacity() > 64) queue_.shrink_to_fit();  // after a burst, give the memory back
  } else if (head_ > queue_.size() / 2) {  // never drained: drop what was taken, keep it bounded
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(head_));
    head_ = 0;
  }
  return n;
}

uint64_t Subscription::take_dropped() {
  std::lock_guard<std::mutex> lock(mutex_);
  return std::exchange(dropped_, 0);
}

bool Subscription::ended(std::string& error) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!closed_ || head_ < queue_.size()) return false;
  error = error_;
  return true;
}

bool Subscription::wait(std::function<void()> wake) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (head_ < queue_.size() || closed_) return false;
  wake_ = std::move(wake);
  return true;
}

void Arrivals::add(std::weak_ptr<Subscription> s) {
  std::lock_guard<std::mutex> lock(mutex_);
  subs_.push_back(std::move(s));
}

std::vector<std::weak_ptr<Subscription>> Arrivals::take() {
  std::lock_guard<std::mutex> lock(mutex_);
  return std::exchange(subs_, {});
}

namespace {

// Why `s` cannot be served ("" when it can): it wants an event `scanner` refuses.
std::string refused(const Scanner& scanner, const Subscription& s) {
  for (auto& r : scanner.refusals())
    if (s.wants(r.example)) return r.why;
  return "";
}

// The subscribers that arrived join; those the sensor cannot serve (it ended,
// or they want an event its source refuses) are closed with why.
void take_arrivals(sensor_state& st) {
  for (auto& w : st.arrivals->take()) {
    auto s = w.lock();
    if (!s) continue;  // its query ended first
    if (st.ended) {
      s->close(st.error);
    } else if (auto why = refused(*st.scanner, *s); !why.empty()) {
      s->close(why);
    } else {
      st.subscribers.push_back(std::move(w));
    }
  }
}

}  // namespace

sensor_self_actor::behavior_type sensor(instrumented<sensor_self_actor, sensor_state> self, std::string key,
                                        std::shared_ptr<Scanner> scanner, std::shared_ptr<Arrivals> arrivals) {
  if (auto* m = self->metrics()) m->set_name(key);
  self->state.key = std::move(key);
  self->state.scanner = std::move(scanner);
  self->state.arrivals = std::move(arrivals);
  self->send(self, internal_atom::value, tick_atom::value);
  return {
      // A query restarted after this sensor failed, while another query still holds it, hears
      // the error here rather than wait forever: an ended sensor scans no more.
      [=](subscribe_atom) { take_arrivals(self->state); },
      [=](internal_atom, tick_atom) {
        auto& st = self->state;
        std::vector<Row> events;
        try {
          st.scanner->scan(events);
        } catch (const std::exception& e) {
          st.error = e.what();
          spdlog::error("sensor {}: {}", st.key, st.error);
        }
        take_arrivals(st);  // after the scan: what it read may be newer than their subscribe()
        ++st.scans;
        st.events += events.size();
        uint64_t lost = st.scanner->take_lost();
        st.lost += lost;
        // Shared, so that 10,000 subscribers hold one copy until they take it.
        std::vector<std::shared_ptr<const Row>> shared;
        shared.reserve(events.size());
        for (auto& e : events) shared.push_back(std::make_shared<const Row>(std::move(e)));
        bool ended = st.ended = !st.error.empty() || st.scanner->finished();
        auto& subs = st.subscribers;
        subs.erase(std::remove_if(subs.begin(), subs.end(),
                                  [&](const std::weak_ptr<Subscription>& w) {
                                    auto s = w.lock();
                                    if (!s) return true;  // its query ended
                                    if (auto why = refused(*st.scanner, *s); !why.empty()) {
                                      s->close(why);
                                      return true;
                                    }
                                    for (auto& e : shared) s->push(e);
                                    if (lost) s->add_dropped(lost);
                                    st.delivered += shared.size();
                                    if (ended) s->close(st.error);
                                    return false;
                                  }),
                   subs.end());
        if (ended) return;
        if (auto period = st.scanner->period(); period.count() > 0)
          self->delayed_send(self, period, internal_atom::value, tick_atom::value);
        else
          self->send(self, internal_atom::value, tick_atom::value);
      },
      [=](status_atom) {
        auto& st = self->state;
        caf::settings s;
        caf::put(s, "key", st.key);
        put_count(s, "subscribers", st.subscribers.size());
        put_count(s, "scans", st.scans);
        put_count(s, "events", st.events);
        put_count(s, "delivered", st.delivered);
        put_count(s, "lost", st.lost);
        st.scanner->describe(s);
        caf::put(s, "error", st.error);
        return s;
      },
  };
}

struct SensorHub::Core {
  Core(caf::actor_system& system, SensorSettings settings) : system(system), settings(std::move(settings)) {}
  caf::actor_system& system;
  const SensorSettings settings;
  mutable std::mutex mutex;
  struct Entry {
    sensor_actor actor;
    std::shared_ptr<Scanner> scanner;  // to interrupt a scan that waits for events
    std::shared_ptr<Arrivals> arrivals = std::make_shared<Arrivals>();
    size_t subscribers = 0;
  };
  std::map<std::string, Entry> sensors;
  bool stopped = false;

  void leave(const std::string& key) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = sensors.find(key);
    if (it == sensors.end() || --it->second.subscribers > 0) return;
    caf::anon_send_exit(it->second.actor, caf::exit_reason::user_shutdown);
    it->second.scanner->interrupt();
    sensors.erase(it);
  }
};

namespace {

class SubscriberStream : public RowStream {
 public:
  SubscriberStream(std::shared_ptr<SensorHub::Core> core, std::string key, SubscriptionPtr sub, Env& env)
      : core_(std::move(core)), key_(std::move(key)), sub_(std::move(sub)), env_(env) {}
  ~SubscriberStream() override { core_->leave(key_); }

  Step next(std::vector<Row>& out, size_t budget) override {
    size_t n = sub_->take(out, budget);
    env_.dropped_events += sub_->take_dropped();
    if (n > 0) return Step::more();
    std::string error;
    if (sub_->ended(error)) {
      if (!error.empty()) throw QueryError(key_ + ": " + error);
      return Step::done();
    }
    if (!env_.wake) return Step::after(std::chrono::milliseconds(100));  // nobody to wake: poll
    return sub_->wait(env_.wake) ? Step::parked() : Step::more();
  }

 private:
  std::shared_ptr<SensorHub::Core> core_;
  std::string key_;
  SubscriptionPtr sub_;
  Env& env_;
};

}  // namespace

SensorHub::SensorHub(caf::actor_system& system, SensorSettings settings)
    : core_(std::make_shared<Core>(system, std::move(settings))) {}

caf::actor_system& SensorHub::system() const { return core_->system; }

const SensorSettings& SensorHub::settings() const { return core_->settings; }

SensorHub::~SensorHub() {
  std::lock_guard<std::mutex> lock(core_->mutex);
  for (auto& [key, entry] : core_->sensors) {
    caf::anon_send_exit(entry.actor, caf::exit_reason::user_shutdown);
    entry.scanner->interrupt();
  }
  core_->sensors.clear();
  core_->stopped = true;
}

std::unique_ptr<RowStream> SensorHub::subscribe(const std::string& key, const ScannerFactory& make, Env& env,
                                                size_t queue_events, EventFilter filter) {
  auto sub = std::make_shared<Subscription>(queue_events, std::move(filter));
  std::lock_guard<std::mutex> lock(core_->mutex);
  if (core_->stopped) throw QueryError(key + ": the agent is stopping");
  if (!core_->sensors.count(key) && core_->sensors.size() >= kMaxSensors)
    throw QueryError(key + ": " + std::to_string(kMaxSensors) +
                     " sensors run already (one per distinct event plugin and arguments)");
  auto& entry = core_->sensors[key];
  if (!entry.actor) {
    try {
      entry.scanner = make();
      entry.actor = core_->system.spawn<caf::detached>(sensor, key, entry.scanner, entry.arrivals);
    } catch (...) {
      core_->sensors.erase(key);
      throw;
    }
  }
  ++entry.subscribers;
  entry.arrivals->add(sub);  // from now on: the sensor's next hand-out includes it
  caf::anon_send(entry.actor, subscribe_atom::value);
  entry.scanner->interrupt();  // a scan waiting for events would delay a refusal by up to a second
  return std::make_unique<SubscriberStream>(core_, key, std::move(sub), env);
}

size_t SensorHub::running() const {
  std::lock_guard<std::mutex> lock(core_->mutex);
  return core_->sensors.size();
}

std::shared_ptr<ProcessTracker> TrackerSlot::get() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return tracker_;
}

void TrackerSlot::install(std::shared_ptr<ProcessTracker> tracker) {
  std::lock_guard<std::mutex> lock(mutex_);
  tracker_ = std::move(tracker);
}

void TrackerSlot::uninstall(const ProcessTracker* tracker) {
  std::shared_ptr<ProcessTracker> gone;  // destroyed outside the lock
  std::lock_guard<std::mutex> lock(mutex_);
  if (tracker_.get() == tracker) gone = std::move(tracker_);
}

std::string sensor_key(const Args& args) {
  auto values = args.values();  // the same arguments in another order: the same sensor
  std::sort(values.begin(), values.end(), [](auto& a, auto& b) { return a.first < b.first; });
  Dict d;
  for (auto& [name, value] : values)
    if (!value.is_null()) d.set(name, value);
  std::string key = args.callee() + "(";
  append_json(key, Value(std::move(d)));
  return key + ")";
}

}  // namespace outpost::vql
