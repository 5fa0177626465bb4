#include "net/collector/jetstream_store.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <sstream>
#include <thread>

#include "net/collector/collector_store.hpp"
#include "persistence/errors.hpp"
#include "schemas/wall_clock.hpp"

namespace outpost::net {

using persistence::StoreError;

namespace {

std::string status_text(natsStatus s) {
  std::string text = natsStatus_GetText(s);
  natsStatus last = NATS_OK;
  if (const char* detail = nats_GetLastError(&last); detail && *detail && last == s) text += std::string(": ") + detail;
  return text;
}

struct Deleter {
  void operator()(natsOptions* o) const { natsOptions_Destroy(o); }
  void operator()(natsMsg* m) const { natsMsg_Destroy(m); }
  void operator()(kvEntry* e) const { kvEntry_Destroy(e); }
  void operator()(jsStreamInfo* i) const { jsStreamInfo_Destroy(i); }
};
template <typename T>
using Owned = std::unique_ptr<T, Deleter>;

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

// The second component of "<agent>/<folder>/<date>.jsonl".
std::string folder_of(const std::string& file) {
  auto a = file.find('/');
  auto b = a == std::string::npos ? a : file.find('/', a + 1);
  return b == std::string::npos ? "_unknown" : file.substr(a + 1, b - a - 1);
}

}  // namespace

std::string subject_token(const std::string& text) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-') {
      out += static_cast<char>(c);
    } else {
      out += '=';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out.empty() ? "=" : out;
}

std::string JetStreamStore::where() const {
  std::string out;
  for (auto& s : options_.servers) out += (out.empty() ? "" : ",") + s;
  return "NATS at " + out;
}

JetStreamStore::JetStreamStore(JetStreamOptions options, CollectorStore& state)
    : options_(std::move(options)), state_(state) {
  natsOptions* raw = nullptr;
  if (natsOptions_Create(&raw) != NATS_OK) throw StoreError("cannot create NATS options");
  Owned<natsOptions> opts(raw);
  std::vector<const char*> servers;
  for (auto& s : options_.servers) servers.push_back(s.c_str());
  if (servers.empty()) throw StoreError("jetstream storage: no NATS server given");
  natsOptions_SetServers(raw, servers.data(), static_cast<int>(servers.size()));
  natsOptions_SetTimeout(raw, options_.request_timeout.count());
  natsOptions_SetMaxReconnect(raw, -1);  // for ever: a cut-off collector stops acknowledging, then resumes
  natsOptions_SetReconnectWait(raw, 250);
  natsOptions_SetReconnectBufSize(raw, 64 << 20);
  auto deadline = std::chrono::steady_clock::now() + options_.connect_timeout;
  for (int attempt = 0;; ++attempt) {
    natsStatus s = natsConnection_Connect(&nc_, raw);
    if (s == NATS_OK) break;
    if (std::chrono::steady_clock::now() >= deadline)
      throw StoreError("jetstream storage: cannot connect to " + where() + ": " + status_text(s));
    if (attempt % 20 == 0) spdlog::warn("collector: waiting for {}: {}", where(), status_text(s));
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = options_.request_timeout.count();
  jo.PublishAsync.MaxPending = 1 << 17;
  jo.PublishAsync.StallWait = options_.request_timeout.count();
  jo.PublishAsync.AckHandler = &JetStreamStore::on_ack;
  jo.PublishAsync.AckHandlerClosure = this;
  if (natsStatus s = natsConnection_JetStream(&js_, nc_, &jo); s != NATS_OK)
    throw StoreError("jetstream storage: " + where() + ": no JetStream context: " + status_text(s));

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
  Owned<jsStreamInfo> info(si);
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
                       status_text(s) + " (JetStream error " + std::to_string(jerr) + ")");
    spdlog::info("collector: created JetStream stream {} ({} replicas, subjects {})", options_.stream,
                 options_.replicas, subjects);
  } else if (s != NATS_OK) {
    throw StoreError("jetstream storage: cannot read stream " + options_.stream + " on " + where() + ": " +
                     status_text(s) + " (JetStream error " + std::to_string(jerr) + ")");
  }

  if (kv_) return;
  s = js_KeyValue(&kv_, js_, options_.marks_bucket.c_str());
  if (s == NATS_NOT_FOUND) {
    kvConfig kc;
    kvConfig_Init(&kc);
    kc.Bucket = options_.marks_bucket.c_str();
    kc.History = 1;
    kc.Replicas = options_.replicas;
    s = js_CreateKeyValue(&kv_, js_, &kc);
  }
  if (s != NATS_OK)
    throw StoreError("jetstream storage: cannot open key-value bucket " + options_.marks_bucket + " on " + where() +
                     ": " + status_text(s));
}

JetStreamStore::~JetStreamStore() noexcept(false) {
  if (js_) {
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 1000;
    js_PublishAsyncComplete(js_, &po);
  }
  if (kv_) kvStore_Destroy(kv_);
  if (nc_) natsConnection_Close(nc_);
  if (js_) jsCtx_Destroy(js_);
  if (nc_) natsConnection_Destroy(nc_);
}

JetStreamStore::Entry JetStreamStore::read_entry(const std::string& agent) const {
  kvEntry* raw = nullptr;
  natsStatus s = kvStore_Get(&raw, kv_, subject_token(agent).c_str());
  Owned<kvEntry> entry(raw);
  Entry out;
  if (s == NATS_NOT_FOUND) return out;
  if (s != NATS_OK)
    throw StoreError("jetstream storage: cannot read the marks of " + agent + " from bucket " +
                     options_.marks_bucket + " on " + where() + ": " + status_text(s));
  std::string text(static_cast<const char*>(kvEntry_Value(raw)), static_cast<size_t>(kvEntry_ValueLen(raw)));
  if (!decode(text, out.progress))
    throw StoreError("jetstream storage: the marks of " + agent + " in bucket " + options_.marks_bucket +
                     " are not understood: \"" + text.substr(0, 80) + "\"");
  out.revision = kvEntry_Revision(raw);
  return out;
}

AgentProgress JetStreamStore::progress(const std::string& agent) const {
  Entry fresh = read_entry(agent);
  std::lock_guard<std::mutex> lock(mutex_);
  auto& mine = cache_[agent];
  if (fresh.revision > mine.revision) mine = fresh;
  return fresh.progress;
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
      if (ack) {
        m.state = ack->Duplicate ? Message::duplicate : Message::stored;
      } else {
        m.state = Message::failed;
        std::string text = err && err->ErrText ? err->ErrText : err ? status_text(err->Err) : "no acknowledgement";
        self->ack_errors_.emplace(m.upload, text);
      }
    }
  }
  natsMsg_Destroy(msg);
}

bool JetStreamStore::publish(const std::string& subject, const std::string& id, const std::string& file,
                             const uint64_t* offset, const void* data, size_t size, size_t upload,
                             uint64_t StoreReport::*counted, std::string& error) {
  natsMsg* raw = nullptr;
  natsStatus s = natsMsg_Create(&raw, subject.c_str(), nullptr, static_cast<const char*>(data), static_cast<int>(size));
  if (s == NATS_OK) s = natsMsgHeader_Set(raw, "Nats-Msg-Id", id.c_str());
  if (s == NATS_OK) s = natsMsgHeader_Set(raw, "Outpost-File", file.c_str());
  if (s == NATS_OK && offset) s = natsMsgHeader_Set(raw, "Outpost-Offset", std::to_string(*offset).c_str());
  if (s == NATS_OK) {
    std::lock_guard<std::mutex> lock(mutex_);
    ids_[id] = messages_.size();
    messages_.push_back({upload, counted});
  }
  if (s == NATS_OK) s = js_PublishMsgAsync(js_, &raw, nullptr);
  natsMsg_Destroy(raw);  // null when the library took it
  if (s == NATS_OK) return true;
  error = "publishing " + id + " to " + where() + ": " + status_text(s);
  std::lock_guard<std::mutex> lock(mutex_);
  if (auto it = ids_.find(id); it != ids_.end()) messages_[it->second].state = Message::failed;
  return false;
}

std::vector<UploadResult> JetStreamStore::store(const std::vector<Upload>& uploads, StoreReport* report) {
  StoreReport local;
  if (!report) report = &local;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ids_.clear();
    messages_.clear();
    ack_errors_.clear();
  }
  // 1. Each upload checked against its lane's mark as this group moves it.
  std::vector<UploadResult> results(uploads.size());
  std::vector<StoreReport> counted(uploads.size());
  std::map<std::string, LaneMarks> marks;  // agent -> marks if every upload so far is stored
  for (size_t i = 0; i < uploads.size(); ++i) {
    auto& up = uploads[i];
    auto& result = results[i];
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
      // 2. Every record above the mark published, without waiting.
      std::string prefix = options_.subject_prefix + "." + subject_token(up.agent) + "." + schemas::lane_name(up.lane) + ".";
      std::string id_prefix = up.agent + "/" + schemas::lane_name(up.lane) + "/";
      for (size_t r = 0; r < up.records.size() && result.error.empty(); ++r) {
        auto& record = up.records[r];
        if (record.seq <= mark) {
          ++counted[i].duplicates;
          continue;
        }
        RenderedRecord here;
        const RenderedRecord& rendered =
            up.rendered.size() == up.records.size() ? up.rendered[r] : (here = render_record(up.agent, up.lane, record));
        std::string id = id_prefix + std::to_string(record.seq);
        auto counter = rendered.malformed ? &StoreReport::malformed : &StoreReport::stored;
        if (!rendered.blob_file.empty())
          publish(prefix + "_uploads", id + "/blob", rendered.blob_file, &rendered.blob_offset, rendered.blob.begin(),
                  rendered.blob.size(), i, nullptr, result.error);
        if (result.error.empty())
          publish(prefix + subject_token(folder_of(rendered.file)), id, rendered.file, nullptr, rendered.lines.data(),
                  rendered.lines.size(), i, counter, result.error);
        ++(counted[i].*counter);
      }
      if (!result.error.empty()) {
        result.status = UploadStatus::failed;
        continue;
      }
      mark = up.records.empty() ? mark : std::max(mark, up.records.back().seq);
    } catch (const StoreError& e) {
      result.status = UploadStatus::failed;
      result.error = e.what();
    }
  }
  // 3. Every acknowledgement, or the timeout: what is still waiting failed.
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = options_.request_timeout.count();
  natsStatus s = js_PublishAsyncComplete(js_, &po);
  if (s != NATS_OK) {
    natsMsgList pending{};
    if (js_PublishAsyncGetPendingList(&pending, js_) == NATS_OK) natsMsgList_Destroy(&pending);
  }
  std::vector<bool> acked(uploads.size(), true);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& m : messages_) {
      if (m.state == Message::duplicate && m.counted) {  // JetStream had it: stored before
        --(counted[m.upload].*m.counted);
        ++counted[m.upload].duplicates;
      }
      if (m.state == Message::waiting || m.state == Message::failed) acked[m.upload] = false;
    }
    for (size_t i = 0; i < uploads.size(); ++i) {
      if (acked[i] || results[i].status != UploadStatus::stored) continue;
      results[i].status = UploadStatus::failed;
      auto it = ack_errors_.find(i);
      results[i].error = it != ack_errors_.end() ? "JetStream refused a record: " + it->second
                                                  : "no acknowledgement from " + where() + " within " +
                                                        std::to_string(options_.request_timeout.count()) + " ms";
    }
    ids_.clear();
    messages_.clear();
  }
  if (options_.before_marks) options_.before_marks();
  // 4. The marks: per lane, through the last upload before the first that
  // did not store (a later one of that lane then follows a gap: failed too).
  std::map<std::string, Entry> wanted;
  std::map<std::pair<std::string, Lane>, bool> broken;
  int64_t now = schemas::now_ns();
  for (size_t i = 0; i < uploads.size(); ++i) {
    auto& up = uploads[i];
    auto& result = results[i];
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
  for (auto& [agent, e] : wanted) {
    try {
      write_marks(agent, e);
    } catch (const StoreError& err) {
      spdlog::error("collector: {}", err.what());
      for (size_t i = 0; i < uploads.size(); ++i)
        if (uploads[i].agent == agent && results[i].status == UploadStatus::stored) {
          results[i].status = UploadStatus::failed;
          results[i].error = err.what();
        }
    }
  }
  for (size_t i = 0; i < uploads.size(); ++i) {
    auto& r = results[i];
    std::lock_guard<std::mutex> lock(mutex_);
    r.mark = cache_[uploads[i].agent].progress.marks[static_cast<size_t>(uploads[i].lane)];
    if (r.status == UploadStatus::stored) {
      report->stored += counted[i].stored;
      report->duplicates += counted[i].duplicates;
      report->malformed += counted[i].malformed;
    } else if (r.status == UploadStatus::failed) {
      spdlog::error("collector: storing an upload from {} failed: {}", uploads[i].agent, r.error);
    }
  }
  return results;
}

void JetStreamStore::write_marks(const std::string& agent, const Entry& wanted) {
  std::string key = subject_token(agent);
  Entry e = wanted;
  for (int attempt = 0; attempt < 8; ++attempt) {
    std::string value = encode(e.progress);
    uint64_t revision = 0;
    natsStatus s = e.revision == 0
                       ? kvStore_Create(&revision, kv_, key.c_str(), value.data(), static_cast<int>(value.size()))
                       : kvStore_Update(&revision, kv_, key.c_str(), value.data(), static_cast<int>(value.size()),
                                        e.revision);
    if (s == NATS_OK) {
      e.revision = revision;
      std::lock_guard<std::mutex> lock(mutex_);
      auto& mine = cache_[agent];
      if (e.revision > mine.revision) mine = e;
      return;
    }
    // Another collector wrote it since (or the write was lost on the way):
    // take the highest of both and try again.
    std::string why = status_text(s);
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
  // back); the collector's own `agents` entries are pruned as with jsonl.
  return state_.prune(now_ns);
}

}  // namespace outpost::net
