#include "net/collector/jetstream_admin.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>

#include "net/collector/flat_message.hpp"
#include "persistence/errors.hpp"
#include "schemas/protocol.capnp.h"
#include "schemas/codec.hpp"

namespace outpost::net {

using persistence::StoreError;

namespace {

constexpr int kMaxAttempts = 16;  // compare-and-set rounds against other collectors' writes

uint64_t parse_u64(const std::string& text) {
  try {
    size_t used = 0;
    uint64_t v = std::stoull(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  throw StoreError("jetstream admin state: \"" + text.substr(0, 40) + "\" is not a number");
}

// A queue of `entries` (key and encoded request) as stored. An emptied one
// is kept until forget_silent_agents deletes it if still unchanged (a plain
// delete would lose a request another collector queued meanwhile).
std::string encode_queue(uint64_t next_key, const std::vector<AdminState::Queued>& entries) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<protocol::RequestQueue>();
  root.setNextKey(next_key);
  auto list = root.initEntries(static_cast<unsigned>(entries.size()));
  for (size_t i = 0; i < entries.size(); ++i) {
    list[i].setKey(entries[i].key);
    list[i].setRequest(kj::arrayPtr(reinterpret_cast<const kj::byte*>(entries[i].encoded.data()),
                                    entries[i].encoded.size()));
  }
  return encode<protocol::RequestQueue>(root.asReader());
}

std::vector<AdminState::Queued> decode_queue(const std::string& bytes, uint64_t* next_key) {
  std::vector<AdminState::Queued> out;
  if (next_key) *next_key = 1;
  if (bytes.empty()) return out;
  Decoded<protocol::RequestQueue> queue(bytes);
  if (next_key) *next_key = queue.get().getNextKey();
  for (auto e : queue.get().getEntries()) {
    auto data = e.getRequest();
    out.push_back({e.getKey(), std::string(reinterpret_cast<const char*>(data.begin()), data.size())});
  }
  return out;
}

}  // namespace

JetStreamAdminState::JetStreamAdminState(JetStreamAdminOptions options) : options_(std::move(options)) {
  NatsOptions opts = nats_options(options_.nats, options_.request_timeout);
  nc_ = nats_connect(options_.nats, opts.get(), options_.connect_timeout, "jetstream admin state");
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = options_.retry_after.count();  // a request unanswered this long is asked again (retrying)
  if (natsStatus s = natsConnection_JetStream(&js_, nc_.get(), &jo); s != NATS_OK)
    fail("no JetStream context", s);
  auto deadline = std::chrono::steady_clock::now() + options_.connect_timeout;
  for (int attempt = 0;; ++attempt) {
    natsStatus s = open_bucket(&kv_, js_, options_.bucket, options_.replicas);
    if (s == NATS_OK) break;
    if (std::chrono::steady_clock::now() >= deadline) fail("cannot open key-value bucket " + options_.bucket, s);
    if (attempt % 10 == 0)
      spdlog::warn("collector: cannot open key-value bucket {} yet: {} (trying again)", options_.bucket,
                   nats_status_text(s));
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

JetStreamAdminState::~JetStreamAdminState() {
  if (kv_) kvStore_Destroy(kv_);
  if (nc_) natsConnection_Close(nc_.get());
  if (js_) jsCtx_Destroy(js_);
}

void JetStreamAdminState::fail(const std::string& what, natsStatus s) const {
  throw StoreError("jetstream admin state (bucket " + options_.bucket + " on " + nats_where(options_.nats) +
                   "): " + what + ": " + nats_status_text(s));
}

JetStreamAdminState::Value JetStreamAdminState::get(const std::string& key) const {
  kvEntry* raw = nullptr;
  natsStatus s = retrying(options_.request_timeout, [&] { return kvStore_Get(&raw, kv_, key.c_str()); });
  NatsOwned<kvEntry> entry(raw);
  Value out;
  if (s == NATS_NOT_FOUND) return out;
  if (s != NATS_OK) fail("cannot read " + key, s);
  out.found = true;
  out.bytes.assign(static_cast<const char*>(kvEntry_Value(raw)), static_cast<size_t>(kvEntry_ValueLen(raw)));
  out.revision = kvEntry_Revision(raw);
  return out;
}

void JetStreamAdminState::put(const std::string& key, const std::string& bytes) {
  natsStatus s = retrying(options_.request_timeout, [&] {
    return bytes.empty() ? kvStore_Delete(kv_, key.c_str())
                         : kvStore_Put(nullptr, kv_, key.c_str(), bytes.data(), static_cast<int>(bytes.size()));
  });
  if (s != NATS_OK) fail("cannot write " + key, s);
}

void JetStreamAdminState::update(const std::string& key, const std::function<std::string(const Value&)>& change) {
  for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
    Value now = get(key);
    std::string next = change(now);
    uint64_t revision = 0;
    // A write sent again after no answer that had landed fails its
    // compare-and-set: read again, `change` sees it (it must tell its own write).
    natsStatus s = retrying(options_.request_timeout, [&] {
      int size = static_cast<int>(next.size());
      return now.found ? kvStore_Update(&revision, kv_, key.c_str(), next.data(), size, now.revision)
                       : kvStore_Create(&revision, kv_, key.c_str(), next.data(), size);
    });
    if (s == NATS_OK) return;
    if (s != NATS_ERR) fail("cannot write " + key, s);  // NATS_ERR: another collector wrote it since
  }
  throw StoreError("jetstream admin state (bucket " + options_.bucket + "): " + key + " kept changing under " +
                   std::to_string(kMaxAttempts) + " attempts to write it");
}

std::vector<std::string> JetStreamAdminState::keys(const std::vector<std::string>& prefixes) const {
  kvKeysList list{};
  natsStatus s = retrying(options_.request_timeout, [&] { return kvStore_Keys(&list, kv_, nullptr); });
  std::vector<std::string> out;
  if (s == NATS_NOT_FOUND) return out;
  if (s != NATS_OK) fail("cannot list its keys", s);
  for (int i = 0; i < list.Count; ++i) {
    std::string key = list.Keys[i];
    for (auto& prefix : prefixes) {
      if (key.compare(0, prefix.size(), prefix) != 0) continue;
      std::string agent = subject_untoken(key.substr(prefix.size()));
      if (!agent.empty()) out.push_back(std::move(agent));
    }
  }
  kvKeysList_Destroy(&list);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

uint64_t JetStreamAdminState::next_flow_ids(uint64_t count) {
  uint64_t first = 0;
  update("flows", [&](const Value& now) {
    uint64_t clock = protocol::FIRST_FLOW_ID + static_cast<uint64_t>(schemas::now_ns()) / 1000;
    first = std::max(now.found ? parse_u64(now.bytes) : 0, clock);
    return std::to_string(first + count);
  });
  return first;
}

uint64_t JetStreamAdminState::flows_given_below() const {
  Value v = get("flows");
  return v.found ? parse_u64(v.bytes) : 0;
}

bool JetStreamAdminState::known_agent(const std::string& agent) const {
  std::string token = subject_token(agent);
  if (get("met." + token).found || get("table." + token).found) return true;
  return !decode_queue(get("queue." + token).bytes, nullptr).empty();  // an emptied queue says nothing
}

void JetStreamAdminState::remember_agent(const std::string& agent) {
  std::string key = "met." + subject_token(agent);
  if (get(key).found) return;
  put(key, std::to_string(schemas::now_ns()));
}

std::vector<std::string> JetStreamAdminState::agents_met() const { return keys({"met."}); }

void JetStreamAdminState::set_event_table(const std::string& agent, const std::string& encoded) {
  put("table." + subject_token(agent), encoded);
}

std::string JetStreamAdminState::event_table(const std::string& agent) const {
  return get("table." + subject_token(agent)).bytes;
}

void JetStreamAdminState::queue_request(const std::string& agent, const std::string& encoded) {
  update("queue." + subject_token(agent), [&](const Value& now) {
    uint64_t next_key = 1;
    auto entries = decode_queue(now.bytes, &next_key);
    // A new queue's keys start at the clock (µs), above those of a deleted
    // one: a removal of an old key asked again never takes a new request.
    if (!now.found) next_key = std::max<uint64_t>(1, static_cast<uint64_t>(schemas::now_ns()) / 1000);
    // Already there: this write landed, and its answer was lost (a collect
    // carries a random request id, so two requests are never the same bytes).
    if (std::any_of(entries.begin(), entries.end(), [&](const Queued& q) { return q.encoded == encoded; }))
      return encode_queue(next_key, entries);
    entries.push_back({next_key, encoded});
    return encode_queue(next_key + 1, entries);
  });
}

std::vector<AdminState::Queued> JetStreamAdminState::queued_requests(const std::string& agent) const {
  return decode_queue(get("queue." + subject_token(agent)).bytes, nullptr);
}

void JetStreamAdminState::remove_request(const std::string& agent, uint64_t key) {
  update("queue." + subject_token(agent), [&](const Value& now) {
    uint64_t next_key = 1;
    auto entries = decode_queue(now.bytes, &next_key);
    entries.erase(std::remove_if(entries.begin(), entries.end(), [&](const Queued& q) { return q.key == key; }),
                  entries.end());
    return encode_queue(next_key, entries);
  });
}

// One scan of the bucket's keys. An agent whose queue was emptied is among
// them until forget_silent_agents deletes the queue (see encode_queue).
std::vector<std::string> JetStreamAdminState::agents_with_requests() const { return keys({"table.", "queue."}); }

std::vector<JetStreamAdminState::Entry> JetStreamAdminState::entries() const {
  kvWatchOptions wo;
  kvWatchOptions_Init(&wo);
  wo.Timeout = options_.request_timeout.count();
  kvWatcher* raw = nullptr;
  const std::string keys = ">";
  natsStatus s = kvStore_Watch(&raw, kv_, keys.c_str(), &wo);
  if (s != NATS_OK) fail("cannot read " + keys, s);
  std::unique_ptr<kvWatcher, void (*)(kvWatcher*)> watcher(raw, kvWatcher_Destroy);
  std::vector<Entry> out;
  for (;;) {
    kvEntry* e = nullptr;
    s = kvWatcher_Next(&e, raw, options_.request_timeout.count());
    if (s != NATS_OK) fail("cannot read " + keys + " after " + std::to_string(out.size()) + " keys", s);
    if (!e) return out;  // every current value delivered
    NatsOwned<kvEntry> entry(e);
    out.push_back({kvEntry_Key(e),
                   std::string(static_cast<const char*>(kvEntry_Value(e)), static_cast<size_t>(kvEntry_ValueLen(e))),
                   kvEntry_Revision(e), kvEntry_Operation(e) != kvOp_Put});
  }
}

bool JetStreamAdminState::delete_unchanged(const std::string& key, uint64_t revision) {
  // What kvStore_Delete publishes, with the revision expected.
  std::string subject = kv_subject(options_.bucket, key);
  natsMsg* raw = nullptr;
  natsStatus s = natsMsg_Create(&raw, subject.c_str(), nullptr, nullptr, 0);
  NatsOwned<natsMsg> msg(raw);
  if (s == NATS_OK) s = natsMsgHeader_Set(raw, "KV-Operation", "DEL");
  if (s != NATS_OK) fail("cannot make the delete of " + key, s);
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.ExpectLastSubjectSeq = revision;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  s = retrying(options_.request_timeout, [&] {
    jsPubAck* ack = nullptr;
    natsStatus r = js_PublishMsg(&ack, js_, raw, &po, &jerr);
    if (ack) jsPubAck_Destroy(ack);
    return r;
  });
  if (s == NATS_OK) return true;
  // Written since (or deleted by a delete sent again whose answer was lost:
  // gone either way, and the next pass sees which).
  if (jerr == JSStreamWrongLastSequenceErr) return false;
  fail("cannot delete " + key, s);
}

void JetStreamAdminState::purge_marker(const std::string& key, uint64_t revision) {
  if (options_.before_purge) options_.before_purge(key);
  std::string subject = kv_subject(options_.bucket, key), stream = kv_stream(options_.bucket);
  jsOptions o;
  jsOptions_Init(&o);
  o.Wait = options_.request_timeout.count();
  o.Stream.Purge.Subject = subject.c_str();
  o.Stream.Purge.Sequence = revision + 1;  // up to but not including
  natsStatus s = retrying(options_.request_timeout, [&] { return js_PurgeStream(js_, stream.c_str(), &o, nullptr); });
  if (s != NATS_OK) fail("cannot purge the delete marker of " + key, s);
}

AdminState::Forgotten JetStreamAdminState::forget_silent_agents(const std::vector<std::string>& connected,
                                                                int64_t now_ns) {
  constexpr int64_t kDayNs = 86400ll * 1000000000;
  // Connected agents are seen: their met.* moves on once a day, so that a
  // connection older than the keep days does not look silent.
  std::map<std::string, int64_t> seen;
  for (auto& agent : connected) {
    auto it = seen_.find(agent);
    int64_t last = it == seen_.end() ? 0 : it->second;
    if (now_ns - last >= kDayNs) {
      put("met." + subject_token(agent), std::to_string(now_ns));
      last = now_ns;
    }
    seen[agent] = last;
  }
  seen_.swap(seen);
  Forgotten out;
  int64_t cutoff = now_ns - int64_t{options_.agents_keep_days} * kDayNs;
  for (auto& e : entries()) {
    if (e.deleted) {  // left by the pass before, or a removed event table
      purge_marker(e.key, e.revision);
      ++out.markers;
    } else if (e.key.rfind("met.", 0) == 0) {
      int64_t when = 0;
      try {
        when = static_cast<int64_t>(parse_u64(e.bytes));
      } catch (const StoreError&) {  // not ours: left alone
        continue;
      }
      if (when < cutoff && delete_unchanged(e.key, e.revision)) ++out.agents;
    } else if (e.key.rfind("queue.", 0) == 0) {
      if (decode_queue(e.bytes, nullptr).empty() && delete_unchanged(e.key, e.revision)) ++out.queues;
    }
  }
  // The markers of this pass stay until the next (not with
  // kvStore_PurgeDeletes: libnats 3.4's leaks every live entry it reads,
  // found by LeakSanitizer).
  return out;
}

}  // namespace outpost::net
