#include "queries/process_tracker.hpp"

#include <algorithm>
#include <mutex>
#include <tuple>

#include "schemas/codec.hpp"

namespace outpost::vql {
namespace {

// What an entry costs besides its strings and data: the struct, its nodes
// in the table, the eviction order and the pid links.
constexpr size_t kEntryOverhead = sizeof(TrackedProcess) + 3 * 64;

size_t approx_bytes(const Value& v) {
  size_t n = sizeof(Value);
  if (auto s = v.as_string()) return n + (s->size() > 15 ? s->capacity() : 0);
  if (auto l = v.as_list()) {
    n += 32;  // the shared block
    for (auto& item : *l) n += approx_bytes(item);
    return n;
  }
  if (auto d = v.as_dict()) {
    n += 32;
    for (auto& [k, item] : d->items()) n += sizeof(std::string) + (k.size() > 15 ? k.capacity() : 0) + approx_bytes(item);
    return n;
  }
  return n;
}

// `data` within kMaxDataBytes of memory (approx_bytes): strings cut, other
// values that do not fit dropped, DataTruncated set.
Row bounded(const Row& data) {
  if (approx_bytes(Value(data)) <= ProcessTracker::kMaxDataBytes) return data;
  Row out;
  size_t left = ProcessTracker::kMaxDataBytes - 256;  // room for the dict, DataTruncated and cut strings' overhead
  for (auto& [key, value] : data.items()) {
    size_t overhead = sizeof(std::string) + key.size() + sizeof(Value);
    size_t size = overhead + approx_bytes(value);
    if (size <= left) {
      out.set(key, value);
      left -= size;
    } else if (auto s = value.as_string(); s && overhead < left) {
      size_t keep = std::min(s->size(), left - overhead);
      while (keep > 0 && (static_cast<unsigned char>((*s)[keep]) & 0xC0) == 0x80) --keep;  // whole UTF-8 characters
      out.set(key, s->substr(0, keep));
      left -= overhead + keep;
    }
  }
  out.set("DataTruncated", true);
  return out;
}

size_t entry_bytes(const TrackedProcess& p) {
  size_t n = kEntryOverhead + 3 * p.id.capacity() + p.parent_id.capacity() + approx_bytes(Value(p.data));
  for (auto& child : p.children) n += sizeof(std::string) + (child.size() > 15 ? child.capacity() : 0);
  return n;
}

bool ended(const TrackedProcess& p) { return p.end.ns != 0; }

// A start more than 2 s after `known`'s: another process with the pid (ids
// count seconds; an exec's time given as start is later by its own delay).
bool started_later(Timestamp start, Timestamp known) {
  return start.ns != 0 && known.ns != 0 && start.ns > known.ns + 2'000'000'000;
}

// A copy of `v` sharing no dict or list with it (set() changes a dict in place).
Value copy_of(const Value& v) {
  if (auto d = v.as_dict()) {
    Dict out;
    for (auto& [k, item] : d->items()) out.set(k, copy_of(item));
    return out;
  }
  if (auto l = v.as_list()) {
    List out;
    out.reserve(l->size());
    for (auto& item : *l) out.push_back(copy_of(item));
    return out;
  }
  return v;
}

}  // namespace

std::string tracker_id(const std::string& pid, Timestamp start) {
  int64_t seconds = start.ns > 0 ? start.ns / 1'000'000'000 : 0;
  return pid + "-" + std::to_string(seconds);
}

Value tracker_data(const TrackedProcess& p) {
  Row data;
  for (auto& [k, item] : p.data.items()) data.set(k, copy_of(item));
  data.set("Pid", p.id);
  data.set("Ppid", p.parent_id);
  data.set("StartTime", p.start);
  data.set("EndTime", p.end);
  return data;
}

Value tracker_entry(const TrackedProcess& p) {
  Dict e;
  e.set("Id", p.id);
  e.set("ParentId", p.parent_id);
  e.set("StartTime", p.start);
  e.set("EndTime", p.end);
  e.set("Data", tracker_data(p));
  e.set("Children", List(p.children.begin(), p.children.end()));
  return e;
}

// The table: entries by id, the bare pids' links to their latest process,
// and the eviction order (exited processes by end, then live ones by when
// last seen). Every change to an entry goes through modify(), which keeps
// the order and the byte count.
class ProcessTracker::Table final : public ProcessView {
 public:
  explicit Table(const TrackerOptions& options) : options_(options) {}

  const TrackedProcess* find(const std::string& id) const override {
    if (auto it = entries_.find(id); it != entries_.end()) return &it->second;
    auto link = links_.find(id);
    if (link == links_.end()) return nullptr;
    auto it = entries_.find(link->second);
    return it == entries_.end() ? nullptr : &it->second;
  }
  void each(const std::function<void(const TrackedProcess&)>& f) const override {
    for (auto& [id, p] : entries_) f(p);
  }

  // The latest process with this pid, live or not.
  TrackedProcess* by_pid(const std::string& pid) {
    auto link = links_.find(pid);
    return link == links_.end() ? nullptr : get(link->second);
  }
  TrackedProcess* live_by_pid(const std::string& pid) {
    TrackedProcess* p = by_pid(pid);
    return p && !ended(*p) ? p : nullptr;
  }
  TrackedProcess* get(const std::string& id) {
    auto it = entries_.find(id);
    return it == entries_.end() ? nullptr : &it->second;
  }
  // The parent's id as the tracker knows it: its latest process, else "<ppid>-?".
  std::string parent_of(const std::string& ppid) const {
    if (ppid.empty() || ppid.back() == '?') return ppid;
    auto link = links_.find(ppid);
    return link != links_.end() ? link->second : ppid + "-?";
  }

  TrackedProcess& add(std::string id, const std::string& pid, Timestamp now) {
    auto [it, fresh] = entries_.try_emplace(id);
    TrackedProcess& p = it->second;
    if (fresh) {
      p.id = std::move(id);
      p.seen = now;
      p.touched = ++clock_;
      order_.insert(key(p));
      bytes_ += entry_bytes(p);
    }
    link(pid, p);
    return p;
  }

  // The bare pid names `p` from now on; the process it named before, if
  // still taken as live, is not (its pid is another's now): it ended when
  // last seen.
  void link(const std::string& pid, TrackedProcess& p) {
    auto& target = links_[pid];
    if (target == p.id) return;
    if (TrackedProcess* before = get(target); before && !ended(*before))
      modify(*before, [](TrackedProcess& b) { b.end = b.seen; });
    target = p.id;
  }

  template <typename F>
  void modify(TrackedProcess& p, F change) {
    order_.erase(key(p));
    bytes_ -= entry_bytes(p);
    change(p);
    bytes_ += entry_bytes(p);
    order_.insert(key(p));
  }

  // modify(), and `p` seen as of `now` (last in the eviction order of live processes).
  template <typename F>
  void modify_seen(TrackedProcess& p, Timestamp now, F change) {
    modify(p, [&](TrackedProcess& q) {
      change(q);
      q.seen = now;
      q.touched = ++clock_;
    });
  }

  // Processes not known to have ended and not seen since the change count
  // was `since` (a sync's start): ended when last seen.
  void end_unseen(uint64_t since) {
    for (auto& [id, p] : entries_)
      if (!ended(p) && p.touched <= since) modify(p, [](TrackedProcess& q) { q.end = q.seen; });
  }
  uint64_t changes() const { return clock_; }

  void set_parent(TrackedProcess& p, const std::string& parent_id) {
    if (p.parent_id == parent_id) return;
    if (TrackedProcess* old = get(p.parent_id); old && old != &p)
      modify(*old, [&](TrackedProcess& o) { o.children.erase(std::remove(o.children.begin(), o.children.end(), p.id), o.children.end()); });
    modify(p, [&](TrackedProcess& q) { q.parent_id = parent_id; });
    TrackedProcess* parent = get(parent_id);
    if (parent && parent != &p && std::find(parent->children.begin(), parent->children.end(), p.id) == parent->children.end())
      modify(*parent, [&](TrackedProcess& q) { q.children.push_back(p.id); });
  }

  // Exited processes older than max_expiry, then the first in the order
  // while there are more than max_size.
  void trim(Timestamp now) {
    int64_t expired = now.ns - std::chrono::duration_cast<std::chrono::nanoseconds>(options_.max_expiry).count();
    while (!order_.empty()) {
      auto& [live, at, id] = *order_.begin();
      bool expire = !live && at < expired;
      if (!expire && entries_.size() <= options_.max_size) break;
      if (!expire) ++evicted_;
      remove(std::string(id));
    }
  }

  size_t size() const { return entries_.size(); }
  size_t bytes() const { return bytes_; }
  uint64_t evicted() const { return evicted_; }

 private:
  // Exited first (by end), then live (by when last seen).
  using Key = std::tuple<bool, int64_t, std::string>;
  static Key key(const TrackedProcess& p) {
    return ended(p) ? Key{false, p.end.ns, p.id} : Key{true, static_cast<int64_t>(p.touched), p.id};
  }

  void remove(const std::string& id) {
    auto it = entries_.find(id);
    if (it == entries_.end()) return;
    TrackedProcess& p = it->second;
    if (TrackedProcess* parent = get(p.parent_id))
      modify(*parent, [&](TrackedProcess& q) { q.children.erase(std::remove(q.children.begin(), q.children.end(), id), q.children.end()); });
    order_.erase(key(p));
    bytes_ -= entry_bytes(p);
    auto dash = id.rfind('-');
    if (auto link = links_.find(id.substr(0, dash)); link != links_.end() && link->second == id) links_.erase(link);
    entries_.erase(it);
  }

  const TrackerOptions& options_;
  std::unordered_map<std::string, TrackedProcess> entries_;
  std::unordered_map<std::string, std::string> links_;  // bare pid -> id
  std::set<Key> order_;
  size_t bytes_ = 0;
  uint64_t clock_ = 0;
  uint64_t evicted_ = 0;
};

ProcessTracker::ProcessTracker(TrackerOptions options)
    : options_(options), table_(std::make_unique<Table>(options_)) {}

ProcessTracker::~ProcessTracker() {
  std::lock_guard<std::mutex> lock(subscribers_mutex_);
  for (auto& weak : subscribers_)
    if (auto sub = weak.lock()) sub->close();
}

void ProcessTracker::update(const TrackerUpdate& u, Timestamp now) {
  if (u.type == "start" || u.type == "exit") {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    Table& t = *table_;
    if (u.type == "start") {
      // A live process with this pid is this one (a pid is not reused
      // while its process lives): an exec, or a process the sync found
      // before it exec'd; it keeps its id. Unless this one started later:
      // then that one's exit was lost, and it ended when last seen.
      TrackedProcess* p = t.live_by_pid(u.id);
      if (p && started_later(u.start, p->start)) p = nullptr;
      if (!p) p = &t.add(tracker_id(u.id, u.start), u.id, now);
      t.modify_seen(*p, now, [&](TrackedProcess& q) {
        if (q.start.ns == 0) q.start = u.start;
        q.end = Timestamp{};  // an ended one only when its pid came back within its second
        q.data = bounded(u.data);
      });
      if (!u.parent_id.empty()) t.set_parent(*p, t.parent_of(u.parent_id));
    } else {
      TrackedProcess* p = t.live_by_pid(u.id);
      if (!p) p = t.get(u.id);
      if (p && !ended(*p)) t.modify(*p, [&](TrackedProcess& q) { q.end = u.end.ns != 0 ? u.end : now; });
    }
    t.trim(now);
  }
  if (!u.type.empty()) {
    Dict row;
    row.set("Id", u.id);
    row.set("ParentId", u.parent_id);
    row.set("UpdateType", u.type);
    row.set("StartTime", u.start);
    row.set("EndTime", u.end);
    row.set("Data", u.data);
    publish(std::move(row));
  }
}

ProcessTracker::SyncStart ProcessTracker::sync_start() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return {Timestamp{schemas::now_ns()}, table_->changes()};
}

void ProcessTracker::sync(const std::vector<TrackerUpdate>& live, SyncStart began) {
  if (live.empty()) return;  // a sync query that failed to list anything: nothing ended because of it
  Timestamp now = began.time;
  // The ids of this sync's processes by pid: a process the tracker has as
  // live with that pid is the same one (it keeps its id); else a new one.
  std::unordered_map<std::string, std::string> ids;
  for (auto& u : live) {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    Table& t = *table_;
    TrackedProcess* p = t.by_pid(u.id);
    // Ended while the sync ran, or ended with this start (a zombie pslist
    // still lists): the same process, and it stays ended.
    if (p && ended(*p) && (p->end.ns >= now.ns || !started_later(u.start, p->start))) {
      ids[u.id] = p->id;
      continue;
    }
    // Ended long before, or started later than the one the tracker has
    // (which then ended unseen): another process.
    if (p && (ended(*p) || started_later(u.start, p->start))) p = nullptr;
    if (!p) p = &t.add(tracker_id(u.id, u.start), u.id, now);
    t.link(u.id, *p);
    t.modify_seen(*p, now, [&](TrackedProcess& q) {
      if (u.start.ns != 0) q.start = u.start;
      q.end = Timestamp{};  // an ended one only when its pid came back within its second
      q.data = bounded(u.data);
    });
    ids[u.id] = p->id;
    t.trim(now);
  }
  for (auto& u : live) {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    Table& t = *table_;
    TrackedProcess* p = t.get(ids[u.id]);
    if (!p) continue;  // evicted: more live processes than max_size
    auto parent = ids.find(u.parent_id);
    if (parent != ids.end() && parent->second != p->id) {
      t.set_parent(*p, parent->second);
    } else if (p->parent_id.empty() || p->parent_id.back() == '?') {
      t.set_parent(*p, t.parent_of(u.parent_id));
    }
  }
  {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    table_->end_unseen(began.changes);
    table_->trim(now);
  }
  {
    std::lock_guard<std::mutex> subscribers(subscribers_mutex_);
    if (subscribers_.empty()) return;
  }
  // The sync's processes for subscribers: copied under the shared lock, the
  // row built outside any lock.
  std::vector<std::pair<std::string, Value>> entries;
  {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    entries.reserve(ids.size());
    for (auto& [pid, id] : ids)
      if (auto* p = table_->find(id)) entries.emplace_back(id, tracker_entry(*p));
  }
  Dict all;
  all.reserve(entries.size());
  for (auto& [id, entry] : entries) all.set(id, std::move(entry));
  Dict row;
  row.set("Id", "");
  row.set("ParentId", "");
  row.set("UpdateType", "sync");
  row.set("StartTime", Timestamp{});
  row.set("EndTime", Timestamp{});
  row.set("Data", std::move(all));
  publish(std::move(row));
}

void ProcessTracker::read(const std::function<void(const ProcessView&)>& f) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  f(*table_);
}

SubscriptionPtr ProcessTracker::subscribe() const {
  auto sub = std::make_shared<Subscription>(kUpdateQueue);
  std::lock_guard<std::mutex> lock(subscribers_mutex_);
  subscribers_.push_back(sub);
  return sub;
}

void ProcessTracker::publish(Row row) const {
  std::vector<SubscriptionPtr> subs;
  {
    std::lock_guard<std::mutex> lock(subscribers_mutex_);
    std::vector<std::weak_ptr<Subscription>> kept;
    for (auto& weak : subscribers_)
      if (auto sub = weak.lock()) {
        subs.push_back(std::move(sub));
        kept.push_back(weak);
      }
    subscribers_.swap(kept);
  }
  if (subs.empty()) return;
  auto shared = std::make_shared<const Row>(std::move(row));
  for (auto& sub : subs) sub->push(shared);
}

size_t ProcessTracker::size() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return table_->size();
}

size_t ProcessTracker::bytes() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return table_->bytes();
}

uint64_t ProcessTracker::evicted() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return table_->evicted();
}

}  // namespace outpost::vql
