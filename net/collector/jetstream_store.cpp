#include "net/collector/jetstream_store.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <sstream>
#include <random>
#include <thread>
#include <utility>

#include "net/collector/collector_store.hpp"
#include "persistence/errors.hpp"
#include "schemas/wall_clock.hpp"

namespace outpost::net {

using persistence::StoreError;

namespace {

// JetStream's error for a write whose expected last revision is not the key's.
constexpr int kWrongLastSequence = JSStreamWrongLastSequenceErr;

std::string encode(const AgentProgress& p) {
  std::string out = "v1";
  for (auto m : p.marks) out += " " + std::to_string(m);
  out += " " + std::to_string(p.last_upload_ns);
  return out;
}

bool decode(const std::string& text, AgentProgress& p) {
  std::istringstream in(text);
  std::string version;
  if (!(in >> version) || version != "v1") return false;
  for (auto& m : p.marks)
    if (!(in >> m)) return false;
  if (!(in >> p.last_upload_ns)) return false;
  std::string rest;
  return !(in >> rest);
}

}  // namespace

std::string JetStreamStore::agent_subjects(const std::string& agent) const {
  return options_.subject_prefix + "." + subject_token(agent) + ".";
}

std::string JetStreamStore::where() const { return nats_where(options_.nats); }

JetStreamStore::JetStreamStore(JetStreamOptions options, CollectorStore& state)
    : options_(std::move(options)), state_(state) {
  std::random_device random;
  instance_ = fmt::format("{:08x}{:08x}", random(), random());
  NatsOptions opts = nats_options(options_.nats, options_.request_timeout);
  auto deadline = std::chrono::steady_clock::now() + options_.connect_timeout;
  nc_ = nats_connect(options_.nats, opts.get(), options_.connect_timeout, "jetstream storage");
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = options_.request_timeout.count();
  jo.PublishAsync.MaxPending = 1 << 17;
  jo.PublishAsync.StallWait = options_.request_timeout.count();
  jo.PublishAsync.AckHandler = &JetStreamStore::on_ack;
  jo.PublishAsync.AckHandlerClosure = this;
  if (natsStatus s = natsConnection_JetStream(&js_, nc_.get(), &jo); s != NATS_OK)
    throw StoreError("jetstream storage: " + where() + ": no JetStream context: " + nats_status_text(s));
  jsOptions kvo;
  jsOptions_Init(&kvo);
  kvo.Wait = options_.retry_after.count();
  if (natsStatus s = natsConnection_JetStream(&kv_js_, nc_.get(), &kvo); s != NATS_OK)
    throw StoreError("jetstream storage: " + where() + ": no JetStream context: " + nats_status_text(s));

  // A cluster electing leaders (a node just lost) answers these with
  // timeouts for a few seconds: tried again until connect_timeout.
  for (int attempt = 0;; ++attempt) {
    try {
      setup();
      break;
    } catch (const StoreError& e) {
      if (std::chrono::steady_clock::now() >= deadline) throw;
      if (attempt % 10 == 0) spdlog::warn("collector: {} (trying again)", e.what());
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }
}

void JetStreamStore::setup() {
  // The stream: made if missing, else taken as it is (replicas and limits as its maker chose).
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&si, js_, options_.stream.c_str(), nullptr, &jerr);
  NatsOwned<jsStreamInfo> info(si);
  if (s == NATS_NOT_FOUND) {
    std::string subjects = options_.subject_prefix + ".>";
    const char* list[] = {subjects.c_str()};
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = options_.stream.c_str();
    cfg.Subjects = list;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Replicas = options_.replicas;
    cfg.Duplicates = static_cast<int64_t>(options_.duplicate_window.count()) * 1000000;
    cfg.Discard = js_DiscardNew;  // a full stream refuses, never drops what it acknowledged
    s = js_AddStream(&si, js_, &cfg, nullptr, &jerr);
    info.reset(si);
    if (s != NATS_OK)
      throw StoreError("jetstream storage: cannot create stream " + options_.stream + " on " + where() + ": " +
                       nats_status_text(s) + " (JetStream error " + std::to_string(jerr) + ")");
    spdlog::info("collector: created JetStream stream {} ({} replicas, subjects {})", options_.stream,
                 options_.replicas, subjects);
  } else if (s != NATS_OK) {
    throw StoreError("jetstream storage: cannot read stream " + options_.stream + " on " + where() + ": " +
                     nats_status_text(s) + " (JetStream error " + std::to_string(jerr) + ")");
  }

  if (kv_) return;
  s = open_bucket(&kv_, kv_js_, options_.marks_bucket, options_.replicas);
  if (s != NATS_OK)
    throw StoreError("jetstream storage: cannot open key-value bucket " + options_.marks_bucket + " on " + where() +
                     ": " + nats_status_text(s));
}

JetStreamStore::~JetStreamStore() noexcept(false) {
  if (js_) {
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 1000;
    js_PublishAsyncComplete(js_, &po);
  }
  if (kv_) kvStore_Destroy(kv_);
  if (nc_) natsConnection_Close(nc_.get());
  if (js_) jsCtx_Destroy(js_);
  if (kv_js_) jsCtx_Destroy(kv_js_);
}

JetStreamStore::Entry JetStreamStore::read_entry(const std::string& agent) const {
  kvEntry* raw = nullptr;
  std::string key = subject_token(agent);
  natsStatus s = retrying(options_.request_timeout, [&] { return kvStore_Get(&raw, kv_, key.c_str()); });
  NatsOwned<kvEntry> entry(raw);
  if (s == NATS_NOT_FOUND) return Entry{};
  if (s != NATS_OK)
    throw StoreError("jetstream storage: cannot read the marks of " + agent + " from bucket " +
                     options_.marks_bucket + " on " + where() + ": " + nats_status_text(s));
  return entry_of(raw, agent);
}

JetStreamStore::Entry JetStreamStore::entry_of(kvEntry* raw, const std::string& agent) const {
  Entry out;
  std::string text(static_cast<const char*>(kvEntry_Value(raw)), static_cast<size_t>(kvEntry_ValueLen(raw)));
  if (!decode(text, out.progress))
    throw StoreError("jetstream storage: the marks of " + agent + " in bucket " + options_.marks_bucket +
                     " are not understood: \"" + text.substr(0, 80) + "\"");
  out.revision = kvEntry_Revision(raw);
  out.written_ns = kvEntry_Created(raw);
  return out;
}

AgentProgress JetStreamStore::progress(const std::string& agent) const { return seen(agent, read_entry(agent)).progress; }

std::vector<AgentProgress> JetStreamStore::progress_each(const std::vector<std::string>& agents) const {
  if (agents.size() <= kReadEachUpTo) return RowStore::progress_each(agents);
  std::vector<std::string> keys;
  keys.reserve(agents.size());
  std::unordered_map<std::string, std::optional<Entry>> found;  // by key: the wanted ones' (none: not read yet)
  for (auto& agent : agents) found.emplace(keys.emplace_back(subject_token(agent)), std::nullopt);
  auto fail = [&](const std::string& what, natsStatus s) {
    throw StoreError("jetstream storage: cannot " + what + " bucket " + options_.marks_bucket + " on " + where() +
                     ": " + nats_status_text(s));
  };
  kvWatchOptions o;
  kvWatchOptions_Init(&o);
  o.IgnoreDeletes = true;
  kvWatcher* raw = nullptr;
  if (natsStatus s = kvStore_WatchAll(&raw, kv_, &o); s != NATS_OK) fail("read", s);
  std::unique_ptr<kvWatcher, void (*)(kvWatcher*)> watcher(raw, kvWatcher_Destroy);
  auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(options_.request_timeout).count();
  for (;;) {  // every key's last value, then a null entry
    kvEntry* next = nullptr;
    if (natsStatus s = kvWatcher_Next(&next, watcher.get(), wait); s != NATS_OK) fail("finish reading", s);
    if (!next) break;
    NatsOwned<kvEntry> entry(next);
    auto it = found.find(kvEntry_Key(next));
    if (it != found.end()) it->second = entry_of(next, subject_untoken(it->first));
  }
  std::vector<AgentProgress> out;
  out.reserve(agents.size());
  for (size_t i = 0; i < agents.size(); ++i)
    out.push_back(seen(agents[i], found[keys[i]].value_or(Entry{})).progress);
  return out;
}

const JetStreamStore::Entry& JetStreamStore::seen(const std::string& agent, const Entry& fresh) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& mine = cache_[agent];
  if (fresh.revision > mine.revision) mine = fresh;
  return fresh;
}

JetStreamStore::Entry JetStreamStore::cached(const std::string& agent) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = cache_.find(agent);
    if (it != cache_.end()) return it->second;
  }
  Entry fresh = read_entry(agent);
  std::lock_guard<std::mutex> lock(mutex_);
  auto& mine = cache_[agent];
  if (fresh.revision >= mine.revision) mine = fresh;
  return mine;
}

void JetStreamStore::on_ack(jsCtx*, natsMsg* msg, jsPubAck* ack, jsPubAckErr* err, void* closure) {
  auto* self = static_cast<JetStreamStore*>(closure);
  const char* id = nullptr;
  if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &id) == NATS_OK && id) {
    std::lock_guard<std::mutex> lock(self->mutex_);
    auto it = self->ids_.find(id);
    if (it != self->ids_.end()) {  // else an ack from a group given up on
      auto& m = self->messages_[it->second];
      bool was_waiting = m.state == Message::waiting, wake = false;
      if (ack && m.state != Message::stored) {  // stored by an earlier send: its duplicate's ack changes nothing
        m.state = ack->Duplicate ? Message::duplicate : Message::stored;
        m.sequence = ack->Sequence;
        if (m.next != SIZE_MAX) {
          self->released_.push_back(std::exchange(m.next, SIZE_MAX));
          wake = true;
        }
      } else if (!ack && was_waiting) {
        m.state = Message::failed;
        m.retry = err && err->Err == NATS_NO_RESPONDERS;
        m.error_code = err ? static_cast<int>(err->ErrCode) : 0;
        m.error = err && err->ErrText ? err->ErrText : err ? nats_status_text(err->Err) : "no acknowledgement";
      }
      if (was_waiting && --self->in_flight_ == 0) wake = true;
      if (wake) self->acked_.notify_one();
    }
  }
  natsMsg_Destroy(msg);
}

void JetStreamStore::send(size_t index) {
  std::string subject, id, file, offset, expect;
  const void* data;
  size_t size;
  bool chunk, record;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto& m = messages_[index];
    subject = m.subject, id = m.id, file = m.file, data = m.data, size = m.size, chunk = m.has_chunk;
    record = m.counted != nullptr;
    if (m.offset) offset = std::to_string(*m.offset);
    if (m.expect_revision) expect = std::to_string(*m.expect_revision);
    m.state = Message::waiting;
    ++in_flight_;
  }
  natsStatus s = NATS_OK;
  if (record && options_.lose_publication && options_.lose_publication(id)) s = NATS_NO_RESPONDERS;
  natsMsg* raw = nullptr;
  if (s == NATS_OK)
    s = natsMsg_Create(&raw, subject.c_str(), nullptr, static_cast<const char*>(data), static_cast<int>(size));
  if (s == NATS_OK) s = natsMsgHeader_Set(raw, "Nats-Msg-Id", id.c_str());
  if (s == NATS_OK && !file.empty()) s = natsMsgHeader_Set(raw, kFileHeader, file.c_str());
  if (s == NATS_OK && !offset.empty()) s = natsMsgHeader_Set(raw, kOffsetHeader, offset.c_str());
  if (s == NATS_OK && chunk) s = natsMsgHeader_Set(raw, kChunkHeader, "1");
  // What kvStore_Update sends: the key's last revision must be this one (0: none yet).
  if (s == NATS_OK && !expect.empty()) s = natsMsgHeader_Set(raw, "Nats-Expected-Last-Subject-Sequence", expect.c_str());
  if (s == NATS_OK) s = js_PublishMsgAsync(js_, &raw, nullptr);
  natsMsg_Destroy(raw);  // null when the library took it
  if (s == NATS_OK) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto& m = messages_[index];
  if (m.state != Message::waiting) return;  // answered meanwhile (an earlier send's ack)
  m.state = Message::failed;
  m.retry = s == NATS_NO_RESPONDERS;
  m.error = "publishing " + id + " to " + where() + ": " + nats_status_text(s);
  if (--in_flight_ == 0) acked_.notify_one();
}

size_t JetStreamStore::queue(Message m) {
  std::lock_guard<std::mutex> lock(mutex_);
  ids_[m.id] = messages_.size();
  messages_.push_back(std::move(m));
  return messages_.size() - 1;
}

size_t JetStreamStore::chain(Message m, size_t previous) {
  size_t index;
  bool hold;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    index = messages_.size();
    hold = previous != SIZE_MAX && messages_[previous].state != Message::stored &&
           messages_[previous].state != Message::duplicate;
    if (hold) {
      m.state = Message::held;
      messages_[previous].next = index;
    }
    ids_[m.id] = index;
    messages_.push_back(std::move(m));
  }
  if (!hold) send(index);
  return index;
}

void JetStreamStore::await_acks() {
  using Clock = std::chrono::steady_clock;
  auto deadline = Clock::now() + options_.request_timeout;
  for (;;) {
    std::vector<size_t> released;
    bool unanswered;  // no ack within retry_after
    {
      std::unique_lock<std::mutex> lock(mutex_);
      unanswered = !acked_.wait_until(lock, std::min(deadline, Clock::now() + options_.retry_after),
                                      [&] { return !released_.empty() || in_flight_ == 0; });
      if (Clock::now() < deadline) released.swap(released_);
    }
    if (!released.empty()) {
      for (size_t i : released) send(i);
      // Out now (libnats' flusher would hold them 1 ms): a ping, answered
      // after them, costs a round trip of this thread per wave, not per message.
      natsConnection_FlushTimeout(nc_.get(), options_.retry_after.count());
      continue;
    }
    if (unanswered) {  // what waits is forgotten by the library (a late ack is dropped) and sent again
      natsMsgList pending{};
      if (js_PublishAsyncGetPendingList(&pending, js_) == NATS_OK) natsMsgList_Destroy(&pending);
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto& m : messages_)
        if (m.state == Message::waiting) {
          m.state = Message::failed;
          m.retry = true;
          m.error = "no acknowledgement from " + where() + " within " +
                    std::to_string(options_.request_timeout.count()) + " ms";
        }
      in_flight_ = 0;
    }
    // Refused for want of a responder or unanswered (a stream electing its
    // leader after a node was lost): sent again while the time lasts.
    std::vector<size_t> again;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (size_t i = 0; i < messages_.size(); ++i)
        if (messages_[i].state == Message::failed && messages_[i].retry) again.push_back(i);
    }
    if (again.empty() || Clock::now() + kNatsRetryPause >= deadline) break;
    std::this_thread::sleep_for(kNatsRetryPause);
    for (size_t i : again) send(i);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  released_.clear();
  for (auto& m : messages_)
    if (m.state == Message::held) {
      m.state = Message::failed;
      m.retry = true;
      m.error = "not sent: a record before " + m.id + " on its subject was not stored";
    }
}

void JetStreamStore::clear_messages() {
  std::lock_guard<std::mutex> lock(mutex_);
  ids_.clear();
  messages_.clear();
  released_.clear();
  in_flight_ = 0;
}

void JetStreamStore::publish(const std::vector<Upload>& uploads, Group& group) {
  std::map<std::string, LaneMarks> marks;  // agent -> marks if every upload so far is stored
  std::unordered_map<std::string, size_t> last_on_subject;  // its last record's message, this group
  for (size_t i = 0; i < uploads.size(); ++i) {
    auto& up = uploads[i];
    auto& result = group.results[i];
    try {
      if (!marks.count(up.agent)) marks[up.agent] = cached(up.agent).progress.marks;
      uint64_t& mark = marks[up.agent][static_cast<size_t>(up.lane)];
      result.error = check_sequence(up, mark);
      if (!result.error.empty() && up.after > mark) {  // another collector may have moved it
        Entry fresh = read_entry(up.agent);
        {
          std::lock_guard<std::mutex> lock(mutex_);
          if (fresh.revision > cache_[up.agent].revision) cache_[up.agent] = fresh;
        }
        mark = std::max(mark, fresh.progress.marks[static_cast<size_t>(up.lane)]);
        result.error = check_sequence(up, mark);
      }
      if (!result.error.empty()) {
        result.status = UploadStatus::refused;
        result.mark = mark;
        continue;
      }
      std::string prefix = agent_subjects(up.agent) + schemas::lane_name(up.lane) + ".";
      std::string id_prefix = up.agent + "/" + schemas::lane_name(up.lane) + "/";
      for (size_t r = 0; r < up.records.size(); ++r) {
        auto& record = up.records[r];
        if (record.seq <= mark) {
          ++group.counted[i].duplicates;
          continue;
        }
        // A message sent again reads its data again: what is rendered here lives through store().
        const RenderedRecord& rendered = up.rendered.size() == up.records.size()
                                             ? up.rendered[r]
                                             : group.rendered_here.emplace_back(render_record(up.agent, up.lane, record));
        std::string id = id_prefix + std::to_string(record.seq);
        auto counter = rendered.malformed ? &StoreReport::malformed : &StoreReport::stored;
        if (!rendered.blob_file.empty())
          send(queue({i, nullptr, prefix + "_uploads", id + "/blob", rendered.blob_file, rendered.blob_offset,
                      rendered.blob.begin(), rendered.blob.size()}));
        std::string folder = folder_of_file(rendered.file);
        std::string subject = prefix + subject_token(folder.empty() ? "_unknown" : folder);
        Message m{i, counter, subject, id, rendered.file, std::nullopt, rendered.lines.data(), rendered.lines.size()};
        m.has_chunk = !rendered.blob_file.empty();
        size_t& last = last_on_subject.try_emplace(subject, SIZE_MAX).first->second;
        last = chain(std::move(m), last);
        ++(group.counted[i].*counter);
      }
      mark = up.records.empty() ? mark : std::max(mark, up.records.back().seq);
    } catch (const StoreError& e) {
      result.status = UploadStatus::failed;
      result.error = e.what();
    }
  }
}

void JetStreamStore::take_acks(Group& group) {
  await_acks();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& m : messages_) {
      if (m.state == Message::duplicate && m.counted) {  // JetStream had it: stored before
        --(group.counted[m.upload].*m.counted);
        ++group.counted[m.upload].duplicates;
      }
      auto& result = group.results[m.upload];
      if (m.state == Message::stored || m.state == Message::duplicate || result.status != UploadStatus::stored)
        continue;
      result.status = UploadStatus::failed;
      result.error = m.state == Message::failed && !m.retry ? "JetStream refused a record: " + m.error : m.error;
    }
  }
  clear_messages();
}

std::map<std::string, JetStreamStore::Entry> JetStreamStore::marks_wanted(const std::vector<Upload>& uploads,
                                                                          Group& group) {
  std::map<std::string, Entry> wanted;
  std::map<std::pair<std::string, Lane>, bool> broken;
  int64_t now = schemas::now_ns();
  for (size_t i = 0; i < uploads.size(); ++i) {
    auto& up = uploads[i];
    auto& result = group.results[i];
    auto key = std::make_pair(up.agent, up.lane);
    if (result.status == UploadStatus::stored && broken[key]) {
      result.status = UploadStatus::failed;
      result.error = "an earlier upload of this lane in the same group failed";
    }
    if (result.status != UploadStatus::stored) {
      if (result.status == UploadStatus::failed) broken[key] = true;
      continue;
    }
    if (!wanted.count(up.agent)) {
      std::lock_guard<std::mutex> lock(mutex_);
      wanted[up.agent] = cache_[up.agent];
    }
    auto& e = wanted[up.agent];
    uint64_t& mark = e.progress.marks[static_cast<size_t>(up.lane)];
    if (!up.records.empty()) mark = std::max(mark, up.records.back().seq);
    e.progress.last_upload_ns = now;
  }
  return wanted;
}

std::vector<UploadResult> JetStreamStore::store(const std::vector<Upload>& uploads, StoreReport* report) {
  StoreReport local;
  if (!report) report = &local;
  clear_messages();
  Group group;
  group.results.resize(uploads.size());
  group.counted.resize(uploads.size());
  // 1. Each upload checked against its lane's mark as this group moves it,
  // and every record above the mark published, without waiting.
  publish(uploads, group);
  // 2. Every acknowledgement, or the timeout: what is still waiting failed.
  take_acks(group);
  if (options_.before_marks) options_.before_marks();
  // 3. The marks: per lane, through the last upload before the first that
  // did not store (a later one of that lane then follows a gap: failed too).
  for (auto& [agent, why] : move_marks(marks_wanted(uploads, group))) {
    spdlog::error("collector: {}", why);
    for (size_t i = 0; i < uploads.size(); ++i)
      if (uploads[i].agent == agent && group.results[i].status == UploadStatus::stored) {
        group.results[i].status = UploadStatus::failed;
        group.results[i].error = why;
      }
  }
  auto& results = group.results;
  for (size_t i = 0; i < uploads.size(); ++i) {
    auto& r = results[i];
    std::lock_guard<std::mutex> lock(mutex_);
    r.mark = cache_[uploads[i].agent].progress.marks[static_cast<size_t>(uploads[i].lane)];
    if (r.status == UploadStatus::stored) {
      report->stored += group.counted[i].stored;
      report->duplicates += group.counted[i].duplicates;
      report->malformed += group.counted[i].malformed;
    } else if (r.status == UploadStatus::failed) {
      spdlog::error("collector: storing an upload from {} failed: {}", uploads[i].agent, r.error);
    }
  }
  return std::move(results);
}

std::map<std::string, std::string> JetStreamStore::move_marks(const std::map<std::string, Entry>& wanted) {
  std::deque<std::string> values;  // the messages' data, alive until their acks
  std::vector<std::pair<const std::string*, size_t>> sent;
  clear_messages();
  for (auto& [agent, e] : wanted) {
    const std::string& value = values.emplace_back(encode(e.progress));
    std::string key = subject_token(agent);
    Message m{SIZE_MAX, nullptr, kv_subject(options_.marks_bucket, key),
              "marks/" + key + "/" + std::to_string(e.revision) + "/" + instance_, "", std::nullopt, value.data(),
              value.size(), e.revision};
    size_t index = queue(std::move(m));
    send(index);
    sent.emplace_back(&agent, index);
  }
  await_acks();
  std::map<std::string, std::string> failed;
  for (auto& [agent, index] : sent) {
    Message m;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      m = messages_[index];
      if (m.state == Message::stored || m.state == Message::duplicate) {  // duplicate: this one's own, sent again
        auto& mine = cache_[*agent];
        Entry e = wanted.at(*agent);
        e.revision = m.sequence;
        if (e.revision > mine.revision) mine = e;
        continue;
      }
    }
    if (m.error_code != kWrongLastSequence) {  // no answer in time, or refused: the agent sends them again
      failed[*agent] = "jetstream storage: cannot write the marks of " + *agent + ": " + m.error;
      continue;
    }
    try {  // another collector moved them since: the slow way, which merges
      write_marks(*agent, wanted.at(*agent));
    } catch (const StoreError& e) {
      failed[*agent] = e.what();
    }
  }
  clear_messages();
  return failed;
}

void JetStreamStore::write_marks(const std::string& agent, const Entry& wanted) {
  std::string key = subject_token(agent);
  Entry e = wanted;
  for (int attempt = 0; attempt < 8; ++attempt) {
    std::string value = encode(e.progress);
    uint64_t revision = 0;
    natsStatus s = retrying(options_.request_timeout, [&] {
      int size = static_cast<int>(value.size());
      return e.revision == 0 ? kvStore_Create(&revision, kv_, key.c_str(), value.data(), size)
                             : kvStore_Update(&revision, kv_, key.c_str(), value.data(), size, e.revision);
    });
    if (s == NATS_OK) {
      e.revision = revision;
      std::lock_guard<std::mutex> lock(mutex_);
      auto& mine = cache_[agent];
      if (e.revision > mine.revision) mine = e;
      return;
    }
    // Another collector wrote it since (or the write was lost on the way):
    // take the highest of both and try again.
    std::string why = nats_status_text(s);
    Entry theirs = read_entry(agent);
    if (theirs.revision == e.revision)
      throw StoreError("jetstream storage: cannot write the marks of " + agent + " to bucket " +
                       options_.marks_bucket + " on " + where() + ": " + why);
    for (size_t l = 0; l < e.progress.marks.size(); ++l)
      e.progress.marks[l] = std::max(e.progress.marks[l], theirs.progress.marks[l]);
    e.progress.last_upload_ns = std::max(e.progress.last_upload_ns, theirs.progress.last_upload_ns);
    e.revision = theirs.revision;
  }
  throw StoreError("jetstream storage: the marks of " + agent + " kept changing under 8 attempts to write them");
}

PruneReport JetStreamStore::prune(int64_t now_ns) {
  // The marks stay for ever (exactly-once needs them when an agent comes
  // back). With jetstream the agents met are in the admin bucket, which
  // forgets them itself (AdminState::forget_silent_agents); this prunes
  // what the datadir's LMDB still holds.
  return state_.prune(now_ns);
}

}  // namespace outpost::net
