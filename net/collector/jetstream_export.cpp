#include "net/collector/jetstream_export.hpp"

#include <fcntl.h>
#include <nats/nats.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include <kj/io.h>

#include "persistence/errors.hpp"
#include "persistence/files.hpp"

namespace outpost::net {
namespace fs = std::filesystem;
using persistence::StoreError;

namespace {

[[noreturn]] void fail(const std::string& what, const fs::path& path, int err = errno) {
  throw StoreError("export: " + what + " " + path.string() + ": " + std::strerror(err), err);
}

std::string nats_error(const std::string& what, natsStatus s) {
  return "export: " + what + ": " + nats_status_text(s);
}

void sync_dir(const fs::path& dir) {
  kj::AutoCloseFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0 || ::fsync(fd.get()) != 0) fail("cannot sync the directory", dir);
}

// Makes `dir` and its parents, syncing each parent that got a new entry.
void make_dirs(const fs::path& dir) {
  if (fs::exists(dir)) return;
  make_dirs(dir.parent_path());
  if (::mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) fail("cannot create", dir);
  sync_dir(dir.parent_path());
}

struct State {
  uint64_t through = 0;
  std::map<std::string, uint64_t> cuts;  // file -> its length before the batch
};

State read_state(const fs::path& file) {
  State st;
  std::ifstream in(file);
  if (!in) return st;
  std::string word;
  if (!(in >> word) || word != "v1" || !(in >> st.through))
    throw StoreError("export: " + file.string() + " is not an export state (delete it to export everything again)");
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    std::istringstream l(line);
    uint64_t length = 0;
    if (!(l >> word >> length) || word != "cut")
      throw StoreError("export: " + file.string() + ": a line is not understood: " + line);
    std::string rel;
    std::getline(l >> std::ws, rel);
    st.cuts[rel] = length;
  }
  return st;
}

void write_state(const fs::path& file, const State& st) {
  std::string text = "v1 " + std::to_string(st.through) + "\n";
  for (auto& [rel, length] : st.cuts) text += "cut " + std::to_string(length) + " " + rel + "\n";
  fs::path tmp = file.string() + ".new";
  {
    kj::AutoCloseFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
    if (fd.get() < 0) fail("cannot create", tmp);
    if (int error = persistence::write_all(fd.get(), text.data(), text.size())) fail("cannot write", tmp, error);
    if (::fdatasync(fd.get()) != 0) fail("cannot sync", tmp);
    if (int error = persistence::close_file(fd)) fail("cannot write", tmp, error);  // NFS reports there
  }
  if (::rename(tmp.c_str(), file.c_str()) != 0) fail("cannot replace", file);
  sync_dir(file.parent_path());
}

// A file name from the stream, if it stays inside the export directory.
bool safe_relative(const std::string& rel) {
  if (rel.empty() || rel[0] == '/' || rel.find('\0') != std::string::npos) return false;
  for (auto& part : fs::path(rel))
    if (part == ".." || part == "." || part.empty()) return false;
  return rel.compare(0, 8, ".export/") != 0;
}

class Nats {
 public:
  // Reads the stream from sequence `from` on (an ephemeral pull consumer:
  // the position that counts is the state's, kept with the files).
  Nats(const ExportOptions& o, uint64_t from) {
    NatsOptions opts = nats_options(o.nats, o.request_timeout);
    natsStatus s = natsConnection_Connect(&nc, opts.get());
    if (s != NATS_OK) throw StoreError(nats_error("cannot connect to " + nats_where(o.nats), s));
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = o.request_timeout.count();
    if ((s = natsConnection_JetStream(&js, nc, &jo)) != NATS_OK) throw StoreError(nats_error("no JetStream", s));
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = o.stream.c_str();
    so.Config.AckPolicy = js_AckNone;
    so.Config.DeliverPolicy = from > 1 ? js_DeliverByStartSequence : js_DeliverAll;
    so.Config.OptStartSeq = from > 1 ? from : 0;
    std::string filter = o.subject_prefix + ".>";
    jsErrCode jerr = static_cast<jsErrCode>(0);
    s = js_PullSubscribe(&sub, js, filter.c_str(), nullptr, &jo, &so, &jerr);
    if (s != NATS_OK)
      throw StoreError(nats_error("cannot read stream " + o.stream + " from sequence " + std::to_string(from) +
                                      " (JetStream error " + std::to_string(jerr) + ")",
                                  s));
  }
  ~Nats() {
    if (sub) natsSubscription_Destroy(sub);
    if (js) jsCtx_Destroy(js);
    if (nc) natsConnection_Destroy(nc);
  }
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  natsSubscription* sub = nullptr;
};

struct Batch {
  natsMsgList list{};
  ~Batch() { natsMsgList_Destroy(&list); }
};

uint64_t stream_seq(natsMsg* msg) {
  jsMsgMetaData* meta = nullptr;
  if (natsMsg_GetMetaData(&meta, msg) != NATS_OK) return 0;
  uint64_t seq = meta->Sequence.Stream;
  jsMsgMetaData_Destroy(meta);
  return seq;
}

const char* header(natsMsg* msg, const char* key) {
  const char* v = nullptr;
  return natsMsgHeader_Get(msg, key, &v) == NATS_OK ? v : nullptr;
}

}  // namespace

ExportReport export_jsonl(const ExportOptions& o, const fs::path& dir, const std::atomic<bool>* stop) {
  ExportReport report;
  make_dirs(dir / ".export");
  fs::path state_file = dir / ".export" / "state";
  State st = read_state(state_file);
  for (auto& [rel, length] : st.cuts) {  // an export that died mid-batch
    fs::path f = dir / rel;
    struct stat s;
    if (::stat(f.c_str(), &s) != 0 || static_cast<uint64_t>(s.st_size) <= length) continue;
    if (::truncate(f.c_str(), static_cast<off_t>(length)) != 0) fail("cannot cut", f);
    kj::AutoCloseFd fd(::open(f.c_str(), O_WRONLY | O_CLOEXEC));
    if (fd.get() < 0 || ::fdatasync(fd.get()) != 0) fail("cannot sync", f);
    ++report.files_cut;
  }
  if (!st.cuts.empty()) {
    st.cuts.clear();
    write_state(state_file, st);
  }
  report.written_through = st.through;

  Nats nats(o, st.through + 1);
  auto last_message = std::chrono::steady_clock::now();
  while (!(stop && stop->load())) {
    Batch batch;
    int want = static_cast<int>(std::clamp<size_t>(o.batch, 1, 4096));
    natsStatus s = natsSubscription_Fetch(&batch.list, nats.sub, want, 500, nullptr);
    if (s == NATS_TIMEOUT || (s == NATS_OK && batch.list.Count == 0)) {
      if (!o.follow && std::chrono::steady_clock::now() - last_message >= o.idle) break;
      continue;
    }
    if (s != NATS_OK) throw StoreError(nats_error("cannot fetch from stream " + o.stream, s));
    last_message = std::chrono::steady_clock::now();

    // What this batch appends to, and their lengths now.
    State intent{st.through, {}};
    std::vector<uint64_t> seqs(static_cast<size_t>(batch.list.Count));
    for (int i = 0; i < batch.list.Count; ++i) {
      natsMsg* m = batch.list.Msgs[i];
      seqs[i] = stream_seq(m);
      const char* file = header(m, kFileHeader);
      if (seqs[i] <= st.through || !file || !safe_relative(file) || header(m, kOffsetHeader)) continue;
      if (intent.cuts.count(file)) continue;
      struct stat sb;
      intent.cuts[file] = ::stat((dir / file).c_str(), &sb) == 0 ? static_cast<uint64_t>(sb.st_size) : 0;
    }
    if (!intent.cuts.empty()) write_state(state_file, intent);

    std::map<std::string, kj::AutoCloseFd> open;
    auto fd_of = [&](const std::string& rel) -> int {
      auto it = open.find(rel);
      if (it != open.end()) return it->second.get();
      fs::path f = dir / rel;
      make_dirs(f.parent_path());
      bool existed = fs::exists(f);
      kj::AutoCloseFd fd(::open(f.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0640));
      if (fd.get() < 0) fail("cannot open", f);
      if (!existed) sync_dir(f.parent_path());
      return open.emplace(rel, kj::mv(fd)).first->second.get();
    };
    uint64_t through = st.through;
    for (int i = 0; i < batch.list.Count; ++i) {
      natsMsg* m = batch.list.Msgs[i];
      through = std::max(through, seqs[i]);
      if (seqs[i] <= st.through) {
        ++report.skipped;
        continue;
      }
      const char* file = header(m, kFileHeader);
      if (!file || !safe_relative(file)) {
        spdlog::error("export: stream {} sequence {} on {}: no usable Outpost-File header (\"{}\"); not written",
                      o.stream, seqs[i], natsMsg_GetSubject(m), file ? file : "");
        ++report.refused;
        continue;
      }
      int fd = fd_of(file);
      const char* data = natsMsg_GetData(m);
      size_t size = static_cast<size_t>(natsMsg_GetDataLength(m));
      if (const char* offset = header(m, kOffsetHeader)) {
        uint64_t at = std::strtoull(offset, nullptr, 10);
        for (size_t done = 0; done < size;) {
          ssize_t n = ::pwrite(fd, data + done, size - done, static_cast<off_t>(at + done));
          if (n <= 0) fail("cannot write", dir / file);
          done += static_cast<size_t>(n);
        }
      } else {
        if (::lseek(fd, 0, SEEK_END) < 0) fail("cannot seek", dir / file);
        if (int error = persistence::write_all(fd, data, size)) fail("cannot write", dir / file, error);
      }
      ++report.messages;
    }
    for (auto& [rel, fd] : open)
      if (::fdatasync(fd.get()) != 0) fail("cannot sync", dir / rel);
    if (o.after_data_sync) o.after_data_sync();
    st = State{through, {}};
    write_state(state_file, st);
    report.written_through = through;
  }
  return report;
}

}  // namespace outpost::net
