#include "actors/registry.hpp"

#include <caf/atom.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/mailbox_element.hpp>
#include <caf/type_nr.hpp>

#include "actors/instrumented.hpp"
#include "actors/interfaces.hpp"
#include "schemas/codec.hpp"
#include "schemas/json.hpp"

namespace outpost {

void TraceRecorder::start(const TraceLimits& limits) {
  std::lock_guard<std::mutex> lock(mutex_);
  limits_ = limits;
  events_.clear();
  events_.reserve(std::min<uint64_t>(limits.max_events, 100000));
  ended_by_.clear();
  second_start_ns_ = steady_ns();
  deadline_ns_ = second_start_ns_ + limits.duration_ns;
  in_second_ = 0;
  payloads_.store(limits.payloads, std::memory_order_relaxed);
  active_.store(true, std::memory_order_relaxed);
}

bool TraceRecorder::wants(uint64_t actor) const {
  if (!active()) return false;
  std::lock_guard<std::mutex> lock(mutex_);
  return limits_.actors.empty() || limits_.actors.count(actor);
}

void TraceRecorder::stop_locked(const char* why) {
  if (!active_.load(std::memory_order_relaxed)) return;
  active_.store(false, std::memory_order_relaxed);
  ended_by_ = why;
}

void TraceRecorder::record(TraceEvent event) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!active_.load(std::memory_order_relaxed)) return;
  int64_t now = event.start_ns;
  if (now >= deadline_ns_) return stop_locked("deadline");
  if (now - second_start_ns_ >= 1'000'000'000) {
    second_start_ns_ = now;
    in_second_ = 0;
  }
  if (++in_second_ > limits_.max_per_second) return stop_locked("rate");
  events_.push_back(std::move(event));
  if (events_.size() >= limits_.max_events) stop_locked("count");
}

TraceRecorder::Result TraceRecorder::take() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (active_.load(std::memory_order_relaxed)) {
    // A quiet trace never sees a message past its deadline: say which it was.
    stop_locked(steady_ns() >= deadline_ns_ ? "deadline" : "taken");
  }
  Result r{std::move(events_), ended_by_};
  events_.clear();
  return r;
}

bool TraceRecorder::ended() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return !active_.load(std::memory_order_relaxed) || steady_ns() >= deadline_ns_;
}

ActorRegistry* ActorRegistry::of(const caf::actor_system& sys) {
  auto* cfg = dynamic_cast<const AgentSystemConfig*>(&sys.config());
  return cfg ? cfg->registry.get() : nullptr;
}

std::shared_ptr<ActorMetrics> ActorRegistry::enroll(caf::weak_actor_ptr actor, uint64_t id, const char* kind,
                                                    uint64_t parent, bool detached) {
  if (!counters_) return nullptr;
  auto m = std::make_shared<ActorMetrics>(id, kind, parent, detached);
  std::lock_guard<std::mutex> lock(mutex_);
  if (watching() || trace_.active()) m->observe();
  live_[id] = Entry{m, std::move(actor)};
  return m;
}

void ActorRegistry::exited(const std::shared_ptr<ActorMetrics>& m, std::string reason) {
  m->set_state(ActorState::exited);
  Exit e{m->id, m->parent, m->handled.load(), m->kind, m->name(), std::move(reason), wall_ns()};
  handled_by_exited_.fetch_add(e.handled, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(mutex_);
  live_.erase(m->id);
  exits_.push_back(std::move(e));
  if (exits_.size() > kExits) exits_.pop_front();
}

std::vector<ActorRegistry::Entry> ActorRegistry::live() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<Entry> out;
  out.reserve(live_.size());
  for (auto& [id, e] : live_) out.push_back(e);
  return out;
}

std::shared_ptr<ActorMetrics> ActorRegistry::find(uint64_t id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = live_.find(id);
  return it == live_.end() ? nullptr : it->second.metrics;
}

std::vector<ActorRegistry::Exit> ActorRegistry::exits() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {exits_.begin(), exits_.end()};
}

void ActorRegistry::add_watcher() {
  std::lock_guard<std::mutex> lock(watchers_mutex_);
  if (watchers_++ == 0) set_watching(true);
}

void ActorRegistry::remove_watcher() {
  std::lock_guard<std::mutex> lock(watchers_mutex_);
  if (watchers_ > 0 && --watchers_ == 0) set_watching(false);
}

void ActorRegistry::set_watching(bool on) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (on == watching()) return;
  if (on) {
    for (auto& [id, e] : live_) {  // the histograms start afresh
      auto& o = e.metrics->observe();
      o.handling.reset();
      o.mailbox.reset();
    }
  }
  watching_.store(on, std::memory_order_relaxed);
  if (!on && !trace_.active())
    for (auto& [id, e] : live_)
      if (auto* o = e.metrics->observed()) o->clear_stamps();
}

TraceRecorder::Result ActorRegistry::take_trace() {
  auto result = trace_.take();
  std::lock_guard<std::mutex> lock(mutex_);
  if (!watching())
    for (auto& [id, e] : live_)
      if (auto* o = e.metrics->observed()) o->clear_stamps();
  return result;
}

void ActorRegistry::start_trace(const TraceLimits& limits) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [id, e] : live_) e.metrics->observe();
  trace_.start(limits);
}

// (declared in actors/instrumented.hpp)
std::string describe_message(const caf::mailbox_element& x) {
  if (x.mid.is_response()) return "response";
  auto& c = x.content();
  if (c.empty()) return "empty";
  if (c.match_element<caf::atom_value>(0)) {
    auto first = c.get_as<caf::atom_value>(0);
    // An internal message is named by what it is: "tick (internal)".
    if (first == internal_atom::value && c.size() > 1 && c.match_element<caf::atom_value>(1))
      return caf::to_string(c.get_as<caf::atom_value>(1)) + " (internal)";
    return caf::to_string(first);
  }
  auto t = c.type(0);
  if (t.first != 0) return caf::numbered_type_names[t.first - 1];
  return t.second ? t.second->name() : "message";
}

namespace {

// Appends a record's JSON lines to `out`, up to kTracePayloadBytes in all.
void append_payload(std::string& out, kj::ArrayPtr<const capnp::word> words) {
  if (out.size() >= kTracePayloadBytes) return;
  try {
    schemas::append_json_lines(out, 0, schemas::RecordView(words).record());
  } catch (const std::exception& e) {
    out += std::string("(undecodable: ") + e.what() + ")\n";
  }
  if (out.size() > kTracePayloadBytes) {
    out.resize(kTracePayloadBytes);
    out += "...(cut)";
  }
}

}  // namespace

void describe_records(const caf::mailbox_element& x, bool payloads, uint64_t& bytes, std::string& payload) {
  auto& c = x.content();
  for (size_t i = 0; i < c.size(); ++i) {
    if (c.match_element<RecordRef>(i)) {
      auto& r = c.get_as<RecordRef>(i);
      if (!r.encoded) continue;
      bytes += r.encoded->size();
      if (payloads) append_payload(payload, r.encoded->words());
    } else if (c.match_element<BufferedRecords>(i)) {
      auto& records = c.get_as<BufferedRecords>(i);
      if (!records) continue;
      bytes += persistence::payload_bytes(*records);
      if (payloads)
        for (auto& r : *records) append_payload(payload, r.words);
    }
  }
}

void ask_statuses(caf::actor_system& sys, std::vector<ActorRegistry::Entry> actors, std::chrono::milliseconds timeout,
                  std::function<void(Statuses)> done) {
  sys.spawn([actors = std::move(actors), timeout, done = std::move(done)](caf::event_based_actor* self) {
    struct Pending {
      Statuses statuses;
      size_t left;
    };
    auto pending = std::make_shared<Pending>(Pending{{}, actors.size() + 1});
    auto one_less = [pending, done, self] {
      if (--pending->left > 0) return;
      done(std::move(pending->statuses));
      self->quit();
    };
    for (auto& e : actors) {
      auto strong = e.actor.lock();
      if (!strong) {
        one_less();
        continue;
      }
      uint64_t id = e.metrics->id;
      self->request(caf::actor_cast<caf::actor>(strong), timeout, status_atom::value)
          .then(
              [pending, id, one_less](caf::settings& s) {
                pending->statuses[id] = std::move(s);
                one_less();
              },
              [one_less](caf::error&) { one_less(); });
    }
    one_less();
  });
}

}  // namespace outpost
