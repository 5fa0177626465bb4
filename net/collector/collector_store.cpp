#include "net/collector/collector_store.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <iterator>
#include <map>
#include <regex>
#include <set>
#include <unordered_map>

#include "net/collector/group_journal.hpp"
#include "persistence/errors.hpp"
#include "schemas/protocol.capnp.h"
#include "schemas/json.hpp"

namespace outpost::net {
namespace fs = std::filesystem;
using persistence::StoreError;
namespace lmdb = persistence::lmdb;

namespace {

[[noreturn]] void fail_errno(const std::string& what, const fs::path& path) {
  int err = disk_full_as_enospc(errno, path.parent_path());
  throw StoreError(what + " " + path.string() + ": " + std::strerror(err), err);
}

[[noreturn]] void fail_lmdb(int rc, const char* call, const std::string& dir) {
  lmdb::fail(rc == EIO ? disk_full_as_enospc(rc, dir) : rc, call, dir);
}

MDB_val bytes_val(const std::string& s) { return {s.size(), const_cast<char*>(s.data())}; }

std::string mark_key(const std::string& agent, Lane lane) {
  std::string key = agent;
  key += '\0';
  key += static_cast<char>(lane);
  return key;
}

uint64_t get_u64(const lmdb::Txn& txn, MDB_dbi dbi, const std::string& key) {
  MDB_val k = bytes_val(key), v;
  int rc = mdb_get(txn.get(), dbi, &k, &v);
  if (rc == MDB_NOTFOUND) return 0;
  lmdb::check(rc, "mdb_get", txn.env().dir());
  uint64_t value = 0;
  if (v.mv_size != sizeof value) throw StoreError("collector state: bad value size under " + key);
  std::memcpy(&value, v.mv_data, sizeof value);
  return value;
}

void put_u64(const lmdb::Txn& txn, MDB_dbi dbi, const std::string& key, uint64_t value) {
  MDB_val k = bytes_val(key), v{sizeof value, &value};
  lmdb::check(mdb_put(txn.get(), dbi, &k, &v, 0), "mdb_put", txn.env().dir());
}

// Names from the wire become path components: every byte outside
// [A-Za-z0-9_.-] is %XX-encoded, and a leading '.' or '_' too, so that no
// name can climb out of its directory, hide, or be one of the collector's own
// folders (_log, _uploads...); nothing is refused, nothing is lost.
std::string path_component(kj::StringPtr name) {
  std::string out;
  for (size_t i = 0; i < name.size() && out.size() < 200; ++i) {
    unsigned char c = name[i];
    bool plain = std::isalnum(c) || c == '-' || ((c == '.' || c == '_') && i > 0);
    if (plain)
      out += static_cast<char>(c);
    else
      append_escaped(out, c, '%');
  }
  return out.empty() ? "%00" : out;
}

std::string utc_date(int64_t ns) {
  time_t secs = static_cast<time_t>(ns / 1000000000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[16];
  strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

// JSON may be this many times a record's size (or kMinRenderedCap) before
// the record is kept as malformed instead.
constexpr uint64_t kMaxRenderedRatio = 32;
constexpr uint64_t kMinRenderedCap = 1 << 20;

using Rendered = RenderedRecord;

// Kept, not rendered: the agent's bytes in base64, and why.
Rendered malformed(const std::string& agent, Lane lane, const IncomingRecord& in, const char* why) {
  Rendered out;
  out.malformed = true;
  out.file = agent + "/_malformed/" + utc_date(schemas::now_ns()) + ".jsonl";
  out.lines = "{\"seq\":" + std::to_string(in.seq) + ",\"lane\":\"" + schemas::lane_name(lane) +
              "\",\"error\":";
  schemas::append_json_string(out.lines, why);
  out.lines += ",\"base64\":";
  schemas::append_json_base64(out.lines, in.data);
  out.lines += "}\n";
  return out;
}

}  // namespace

std::string take_upload(protocol::Session::UploadParams::Reader params, const std::string& agent, Upload& up) {
  auto records = params.getRecords();
  auto lane = static_cast<uint16_t>(params.getLane());
  if (lane >= schemas::kLaneCount) return "unknown lane " + std::to_string(lane);
  if (records.size() > protocol::MAX_RECORDS_PER_UPLOAD)
    return std::to_string(records.size()) + " records in one upload (at most " +
           std::to_string(protocol::MAX_RECORDS_PER_UPLOAD) + ")";
  up.agent = agent;
  up.lane = static_cast<Lane>(lane);
  up.after = params.getAfter();
  uint64_t bytes = 0;
  for (auto r : records) {
    auto data = r.getData();
    bytes += data.size();
    up.records.push_back({r.getSeq(), kj::ArrayPtr<const kj::byte>(data.begin(), data.size())});
  }
  if (bytes > protocol::MAX_UPLOAD_BYTES) return std::to_string(bytes) + " bytes in one upload";
  return "";
}

Rendered render_record(const std::string& agent, Lane lane, const IncomingRecord& in) {
  Rendered out;
  try {
    // RecordView needs words. A Data blob in a Cap'n Proto message starts on
    // a word boundary and a record is whole words, so this copy is rare
    // (a hostile agent's); what is read from it lives as long as `out`.
    kj::ArrayPtr<const capnp::word> words;
    if (reinterpret_cast<uintptr_t>(in.data.begin()) % alignof(capnp::word) == 0 &&
        in.data.size() % sizeof(capnp::word) == 0) {
      words = kj::arrayPtr(reinterpret_cast<const capnp::word*>(in.data.begin()),
                           in.data.size() / sizeof(capnp::word));
    } else {
      auto copy = kj::heapArray<capnp::word>((in.data.size() + 7) / 8);
      std::memset(copy.begin(), 0, copy.size() * sizeof(capnp::word));
      std::memcpy(copy.begin(), in.data.begin(), in.data.size());
      out.copy = std::make_shared<const kj::Array<capnp::word>>(kj::mv(copy));
      words = *out.copy;
    }
    schemas::RecordView view(words);
    auto record = view.record();
    std::string folder;
    switch (record.which()) {
      case schema::Record::ROW_BATCH: folder = path_component(record.getRowBatch().getArtifact()); break;
      case schema::Record::LOG: folder = "_log"; break;
      case schema::Record::QUERY_STATUS: folder = kStatusFolder; break;
      case schema::Record::UPLOAD_CHUNK: folder = "_uploads"; break;
      default: folder = "_unknown"; break;
    }
    out.file = agent + "/" + folder + "/" + utc_date(record.getCreatedNs()) + ".jsonl";
    if (record.isUploadChunk()) {
      auto chunk = record.getUploadChunk();
      out.blob_file = agent + "/_uploads/" + std::to_string(record.getQueryId()) + "/" + path_component(chunk.getPath());
      out.blob_offset = chunk.getOffset();
      out.blob = chunk.getData();
      if (out.blob_offset > (uint64_t{1} << 40)) return malformed(agent, lane, in, "upload chunk offset beyond 1 TiB");
    }
    // Every row repeats its column names: a small hostile record (many
    // columns, many empty rows) could otherwise fill memory and the disk.
    uint64_t cap = std::max<uint64_t>(kMaxRenderedRatio * in.data.size(), kMinRenderedCap);
    if (record.isRowBatch()) {
      auto batch = record.getRowBatch();
      uint64_t per_row = 0;  // at least: "name":null, for every column
      for (auto name : batch.getColumns()) per_row += name.size() + 8;
      // and "_N":null for every value beyond them (values take no room when NULL)
      uint64_t columns = batch.getColumns().size(), at_least = 0;
      for (auto row : batch.getRows()) {
        at_least += per_row + (row.size() > columns ? (row.size() - columns) * 8 : 0);
        if (at_least > cap) return malformed(agent, lane, in, "would render to far more JSON than its size");
      }
    }
    schemas::append_json_lines(out.lines, in.seq, record);
    if (out.lines.size() > cap)
      return malformed(agent, lane, in,
                       ("renders to " + std::to_string(out.lines.size()) + " bytes of JSON, over " +
                        std::to_string(kMaxRenderedRatio) + " times its size")
                           .c_str());
  } catch (const schemas::DecodeError& e) {
    return malformed(agent, lane, in, e.what());
  } catch (const kj::Exception& e) {
    // A bad pointer further in than RecordView checks.
    return malformed(agent, lane, in, e.getDescription().cStr());
  }
  return out;
}

namespace {

void make_dirs(const fs::path& dir) {
  if (fs::exists(dir)) return;
  make_dirs(dir.parent_path());
  // Not synced here: the checkpoint's syncfs makes the entry durable, and
  // until then a replay of the journal makes it again.
  if (::mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) fail_errno("cannot create", dir);
}

}  // namespace

int disk_full_as_enospc(int err, const fs::path& where) {
  if (err != EIO) return err;
  struct statvfs st;
  if (::statvfs(where.c_str(), &st) == 0 && uint64_t{st.f_bavail} * st.f_frsize < (1u << 20)) return ENOSPC;
  return err;
}

bool valid_agent_id(const std::string& id) {
  if (id.empty() || id.size() > 128 || id[0] == '.') return false;
  for (unsigned char c : id)
    if (!std::isalnum(c) && c != '_' && c != '.' && c != '@' && c != '-') return false;
  return true;
}

// The row files and upload data files the store writes, kept open (up to
// max_open, least recently used closed first) across groups. A row file is
// cut back to its committed length when first opened; what groups append
// since the last checkpoint is not synced here (the journal holds it), only
// recorded in dirty(), which the checkpoint commits. Storage thread only.
class CollectorStore::Files {
 public:
  Files(const fs::path& root, CollectorStore& store, size_t max_open)
      : root_(root), store_(store), max_open_(max_open) {}
  ~Files() { close_all(); }

  // What one upload appends can be taken back (roll_back) until the next
  // begin_upload. Closes files beyond max_open first (none of this upload's).
  void begin_upload() {
    before_.clear();
    if (open_.size() > max_open_) trim();
  }

  // Appends `lines` to a row file; the offset they went to.
  uint64_t append(const std::string& rel, const std::string& lines) {
    auto& f = open(rel, false);
    before_.emplace(rel, f.length);  // the first length this upload saw
    uint64_t offset = f.length;
    put(f, rel, offset, lines.data(), lines.size());
    f.length += lines.size();
    dirty_[rel] = f.length;
    // Start writing back now, so that the checkpoint's sync waits for less.
    // Only a hint: errors show up in the sync.
    if (f.length - f.kicked >= kWritebackChunk) {
      ::sync_file_range(f.fd.get(), static_cast<off_t>(f.kicked), static_cast<off_t>(f.length - f.kicked),
                        SYNC_FILE_RANGE_WRITE);
      f.kicked = f.length;
    }
    return offset;
  }

  // Writes a journal item again (recovery): a row file's lines at their offset.
  void replay_lines(const std::string& rel, uint64_t offset, std::string_view data) {
    auto& f = open(rel, false);
    put(f, rel, offset, data.data(), data.size());
    f.length = std::max(f.length, offset + data.size());
    dirty_[rel] = f.length;
  }

  // Cuts what the current upload appended (a write that failed half way
  // too); throws StoreError if a file cannot be cut (then the group fails
  // as a whole).
  void roll_back() {
    for (auto& [rel, length] : before_) {
      auto& f = open_.at(rel);
      if (::ftruncate(f.fd.get(), static_cast<off_t>(length)) != 0) fail_errno("cannot cut a failed upload from", root_ / rel);
      f.length = length;
      f.kicked = std::min(f.kicked, length);
      dirty_[rel] = length;
    }
    before_.clear();
  }

  // Upload data, at its offset: a chunk sent again lands on itself.
  void write_at(const std::string& rel, uint64_t offset, std::string_view data) {
    put(open(rel, true), rel, offset, data.data(), data.size());
  }

  // Recovery: the journal is about to write these files up to these
  // lengths; they are opened at them (not cut first), quietly if shorter.
  void replaying(const std::map<std::string, uint64_t>& ends) {
    for (auto& [rel, end] : ends) dirty_[rel] = end;
    replaying_ = !ends.empty();
  }

  // Row files written since the last checkpoint, and their lengths.
  const std::map<std::string, uint64_t>& dirty() const { return dirty_; }
  void clear_dirty() { dirty_.clear(); }

  void close_all() { open_.clear(); }

 private:
  static constexpr uint64_t kWritebackChunk = 256 << 10;
  struct Open {
    kj::AutoCloseFd fd;
    uint64_t length = 0;  // row files: what it holds for sure
    uint64_t kicked = 0;  // writeback started up to here
    uint64_t used = 0;    // when last opened or used (a count)
  };

  void put(Open& f, const std::string& rel, uint64_t offset, const char* data, size_t size) {
    for (size_t done = 0; done < size;) {
      ssize_t n = ::pwrite(f.fd.get(), data + done, size - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail_errno("cannot write", root_ / rel);
      done += static_cast<size_t>(n);
    }
  }

  Open& open(const std::string& rel, bool blob) {
    auto it = open_.find(rel);
    if (it != open_.end()) {
      it->second.used = ++uses_;
      return it->second;
    }
    fs::path path = root_ / rel;
    make_dirs(path.parent_path());
    kj::AutoCloseFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0640));
    if (fd.get() < 0 && (errno == EMFILE || errno == ENFILE) && !open_.empty()) {
      // Descriptors run short (connections take them too): give back the
      // files not used for longest, but none of the current upload's.
      size_t before = open_.size();
      trim_unused(before / 2);
      spdlog::warn("collector: out of file descriptors; closed {} of {} open row files", before - open_.size(), before);
      fd = kj::AutoCloseFd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0640));
    }
    if (fd.get() < 0) fail_errno("cannot open", path);
    if (blob) return open_.emplace(rel, Open{kj::mv(fd), 0, 0, ++uses_}).first->second;
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) fail_errno("cannot stat", path);
    uint64_t size = static_cast<uint64_t>(st.st_size);
    auto known = dirty_.find(rel);
    uint64_t committed = known != dirty_.end() ? known->second : store_.committed_length(rel, size);
    if (replaying_ && size > committed) committed = size;  // the repair kept these bytes on purpose
    if (size > committed && ::ftruncate(fd.get(), static_cast<off_t>(committed)) != 0)
      fail_errno("cannot cut uncommitted bytes from", path);
    if (size < committed) {
      if (!replaying_)  // a crash takes what only the page cache held: the journal writes it again
        spdlog::error("collector: {} is {} bytes shorter than committed; appending after what is left",
                      path.string(), committed - size);
      committed = size;
    }
    return open_.emplace(rel, Open{kj::mv(fd), committed, committed, ++uses_}).first->second;
  }

  // Closes the least recently used half.
  void trim() { trim_unused(open_.size() - max_open_ / 2); }

  // Closes up to `count` files, least recently used first, keeping those the
  // current upload wrote to (roll_back needs them).
  void trim_unused(size_t count) {
    std::vector<std::pair<uint64_t, std::string>> by_use;
    for (auto& [rel, f] : open_)
      if (!before_.count(rel)) by_use.emplace_back(f.used, rel);
    std::sort(by_use.begin(), by_use.end());
    for (size_t i = 0; i < by_use.size() && i < count; ++i) open_.erase(by_use[i].second);
  }

  fs::path root_;
  CollectorStore& store_;
  size_t max_open_;
  uint64_t uses_ = 0;
  std::unordered_map<std::string, Open> open_;
  std::map<std::string, uint64_t> dirty_;
  std::map<std::string, uint64_t> before_;  // rel -> its length before the current upload
  bool replaying_ = false;
};

CollectorStore::CollectorStore(const fs::path& datadir, CollectorStoreOptions options)
    : datadir_(datadir), options_(std::move(options)),
      lock_((fs::create_directories(datadir / ".collector"), datadir / ".collector")) {
  std::string dir = (datadir / ".collector").string();
  env_ = std::make_unique<lmdb::Env>(dir, MDB_NOTLS, options_.map_size, 8);
  write([&](const lmdb::Txn& txn) {
    lmdb::check(mdb_dbi_open(txn.get(), "marks", MDB_CREATE, &marks_), "mdb_dbi_open", dir);
    lmdb::check(mdb_dbi_open(txn.get(), "files", MDB_CREATE, &files_), "mdb_dbi_open", dir);
    lmdb::check(mdb_dbi_open(txn.get(), "agents", MDB_CREATE, &agents_), "mdb_dbi_open", dir);
    lmdb::check(mdb_dbi_open(txn.get(), "tables", MDB_CREATE, &tables_), "mdb_dbi_open", dir);
    lmdb::check(mdb_dbi_open(txn.get(), "requests", MDB_CREATE, &requests_), "mdb_dbi_open", dir);
    lmdb::check(mdb_dbi_open(txn.get(), "meta", MDB_CREATE, &meta_), "mdb_dbi_open", dir);
  });
  datadir_fd_ = kj::AutoCloseFd(::open(datadir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (datadir_fd_.get() < 0) fail_errno("cannot open", datadir);
  journal_ = std::make_unique<GroupJournal>(datadir / ".collector" / "journal");
  recover();
}

CollectorStore::~CollectorStore() = default;

CollectorStore::Txn CollectorStore::begin(bool read_only) const {
  std::shared_lock<std::shared_mutex> lock(txns_);
  return Txn{std::move(lock), lmdb::Txn(*env_, read_only)};
}

void CollectorStore::write(const std::function<void(const lmdb::Txn&)>& fill) {
  for (;;) {
    int rc;
    try {
      auto t = begin(false);
      fill(t.txn);
      rc = t.txn.commit();
    } catch (const StoreError& e) {
      if (e.code() != MDB_MAP_FULL) throw;
      rc = MDB_MAP_FULL;
    }
    if (rc != MDB_MAP_FULL) {
      if (rc != MDB_SUCCESS) fail_lmdb(rc, "mdb_txn_commit", env_->dir());
      return;
    }
    grow();
  }
}

uint64_t CollectorStore::map_size() const {
  std::shared_lock<std::shared_mutex> lock(txns_);
  return env_->info().me_mapsize;
}

// Doubles the map, up to options_.max_map_size and the file system's size.
// LMDB requires that no transaction of this process is open meanwhile.
void CollectorStore::grow() {
  std::unique_lock<std::shared_mutex> lock(txns_);
  uint64_t now = env_->info().me_mapsize, limit = options_.max_map_size;
  struct statvfs st;
  if (::statvfs(env_->dir().c_str(), &st) == 0)
    limit = std::min<uint64_t>(limit, uint64_t{st.f_blocks} * st.f_frsize);
  uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  limit -= limit % page;
  if (now >= limit)
    throw StoreError("collector state " + env_->dir() + " is full: its LMDB map is at " + std::to_string(now) +
                         " bytes, the limit (--max-state-size, and the file system's size) is " +
                         std::to_string(limit),
                     MDB_MAP_FULL);
  uint64_t next = std::min(now * 2, limit);
  lmdb::check(mdb_env_set_mapsize(env_->get(), next), "mdb_env_set_mapsize", env_->dir());
  spdlog::info("collector: state map in {} grown from {} to {} bytes", env_->dir(), now, next);
}

namespace {

bool find_u64(const lmdb::Txn& txn, MDB_dbi dbi, const std::string& key, uint64_t* value) {
  MDB_val k = bytes_val(key), v;
  int rc = mdb_get(txn.get(), dbi, &k, &v);
  if (rc == MDB_NOTFOUND) return false;
  *value = get_u64(txn, dbi, key);
  return true;
}

// The day a row file holds ("a1/Art/2026-01-02.jsonl" -> "2026-01-02"), or "".
std::string file_day(const std::string& rel) {
  static const std::regex day_file("(^|/)(\\d{4}-\\d{2}-\\d{2})\\.jsonl$");
  std::smatch m;
  return std::regex_search(rel, m, day_file) ? m[2].str() : "";
}

std::string get_text(const lmdb::Txn& txn, MDB_dbi dbi, const std::string& key) {
  MDB_val k = bytes_val(key), v;
  int rc = mdb_get(txn.get(), dbi, &k, &v);
  if (rc == MDB_NOTFOUND) return {};
  lmdb::check(rc, "mdb_get", txn.env().dir());
  return std::string(static_cast<const char*>(v.mv_data), v.mv_size);
}

void put_text(const lmdb::Txn& txn, MDB_dbi dbi, const std::string& key, const std::string& value) {
  MDB_val k = bytes_val(key), v = bytes_val(value);
  lmdb::check(mdb_put(txn.get(), dbi, &k, &v, 0), "mdb_put", txn.env().dir());
}

constexpr const char* kSealedBefore = "files_sealed_before";
constexpr const char* kJournalEnd = "journal_end";  // how much of the journal is committed

}  // namespace

bool CollectorStore::sealed(const std::string& rel, const lmdb::Txn& txn) const {
  std::string day = file_day(rel);
  return !day.empty() && day < get_text(txn, meta_, kSealedBefore);
}

uint64_t CollectorStore::committed_length(const std::string& rel, uint64_t size) {
  bool adopt = false;
  {
    auto t = begin(true);
    uint64_t committed = 0;
    if (find_u64(t.txn, files_, rel, &committed)) return committed;
    adopt = sealed(rel, t.txn);
  }
  if (!adopt) return 0;  // new, or created by a store that never committed
  // Pruned (or new) on a sealed day: complete at its size. Recorded before
  // anything is appended, so that a crash mid-append cuts back to here.
  write([&](const lmdb::Txn& txn) { put_u64(txn, files_, rel, size); });
  return size;
}

// Cuts every file back to its committed length (checkpointed, or journaled
// since): what lies beyond was never acked, and the agents send it again.
// Files LMDB and the journal do not know about were created by a store that
// never committed, unless pruned (sealed).
// Uploaded files (<agent>/_uploads/<flow>/<name>) are written in place and
// never cut, whatever their name.
void CollectorStore::repair(const std::map<std::string, uint64_t>& journaled, const std::set<std::string>* only,
                            bool keep_beyond) {
  write([&](const lmdb::Txn& txn) {
    repair_ = {};  // the lambda runs again after a map growth
    auto one = [&](const std::string& rel, const fs::path& path) {
      std::error_code ec;
      uint64_t size = fs::file_size(path, ec), committed = 0;
      if (ec) return;  // gone meanwhile
      if (!find_u64(txn, files_, rel, &committed) && sealed(rel, txn)) return;
      auto in_journal = journaled.find(rel);
      uint64_t keep = in_journal == journaled.end() ? committed : std::max(committed, in_journal->second);
      if (size > keep && keep_beyond) {
        // The journal is damaged: what lies beyond may be rows that were
        // acknowledged. Kept (duplicates are possible, losses are not).
        put_u64(txn, files_, rel, size);
        ++repair_.files_kept;
        spdlog::error("collector: kept {} bytes of {} that the damaged journal cannot vouch for", size - keep, rel);
      } else if (size > keep) {
        fs::resize_file(path, keep);
        persistence::fsync_path(path);
        ++repair_.files_cut;
        repair_.bytes_cut += size - keep;
        spdlog::warn("collector: cut {} uncommitted bytes from {}", size - keep, rel);
      } else if (size < committed) {
        ++repair_.files_short;
        put_u64(txn, files_, rel, size);
        spdlog::error("collector: {} is {} bytes shorter than committed (changed outside Outpost?)",
                      rel, committed - size);
      }
    };
    if (only) {
      for (auto& rel : *only) one(rel, datadir_ / rel);
      return;
    }
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(datadir_, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec)) {
      if (!it->is_regular_file(ec) || it->path().extension() != ".jsonl") continue;
      fs::path relative = fs::relative(it->path(), datadir_);
      std::string rel = relative.string();
      if (rel.rfind(".collector", 0) == 0) continue;
      if (std::distance(relative.begin(), relative.end()) == 4 && *std::next(relative.begin()) == "_uploads")
        continue;
      one(rel, it->path());
    }
    if (ec) throw StoreError("cannot walk " + datadir_.string() + " to repair it: " + ec.message());
  });
}

AgentProgress CollectorStore::progress(const std::string& agent) const {
  auto t = begin(true);
  AgentProgress p;
  for (size_t i = 0; i < p.marks.size(); ++i)
    p.marks[i] = get_u64(t.txn, marks_, mark_key(agent, static_cast<Lane>(i)));
  MDB_val k = bytes_val(agent), v;  // u64 last upload, or u64 0, u64 when met
  int rc = mdb_get(t.txn.get(), agents_, &k, &v);
  if (rc != MDB_NOTFOUND) lmdb::check(rc, "mdb_get", t.txn.env().dir());
  if (rc == 0 && v.mv_size >= sizeof(uint64_t)) std::memcpy(&p.last_upload_ns, v.mv_data, sizeof(uint64_t));
  return p;
}

std::string check_sequence(const Upload& up, uint64_t mark) {
  if (up.after > mark)
    return "gap: this upload follows seq " + std::to_string(up.after) + " but seq " +
           std::to_string(mark) + " is the last stored; resume from there";
  uint64_t last = up.after;
  for (auto& r : up.records) {
    if (r.seq <= last)
      return "seqs must ascend above `after`: " + std::to_string(r.seq) + " follows " +
             std::to_string(last);
    last = r.seq;
  }
  return {};
}


std::vector<UploadResult> CollectorStore::store(const std::vector<Upload>& uploads,
                                                StoreReport* report) {
  if (needs_recovery_) recover();
  // A journal that checkpoints could not shorten stops taking groups here,
  // with the checkpoint's error (its LMDB map full, say).
  if (journal_->end() >= 4 * options_.checkpoint_bytes) checkpoint();
  try {
    auto results = store_group(uploads, report);
    // After a failed checkpoint the next waits its interval, not the next group.
    bool due = std::chrono::steady_clock::now() - last_checkpoint_ >= options_.checkpoint_interval;
    if (due || (journal_->end() >= options_.checkpoint_bytes && !checkpoint_failed_)) try_checkpoint();
    return results;
  } catch (...) {
    // Row files may hold what was not committed, and their lengths in memory
    // may be wrong: before the next group, cut back and replay the journal.
    journal_->discard_group();
    needs_recovery_ = true;
    throw;
  }
}

std::vector<UploadResult> CollectorStore::store_group(const std::vector<Upload>& uploads, StoreReport* report) {
  StoreReport local;
  if (!report) report = &local;
  Files& files = *row_files_;
  GroupJournal& journal = *journal_;
  std::map<std::string, uint64_t> marks;  // mark_key -> mark, as this group moves them
  std::set<std::string> uploaded;         // agents with a stored upload
  std::vector<UploadResult> results;
  for (auto& up : uploads) {
    if (!valid_agent_id(up.agent)) throw StoreError("invalid agent id for a directory: " + up.agent);
    std::string key = mark_key(up.agent, up.lane);
    auto it = marks.find(key);
    if (it == marks.end()) it = marks.emplace(key, get_u64(begin(true).txn, marks_, key)).first;
    UploadResult result;
    result.error = check_sequence(up, it->second);
    if (!result.error.empty()) result.status = UploadStatus::refused;
    StoreReport counted;
    uint64_t mark = it->second;
    files.begin_upload();
    size_t journal_mark = journal.group_mark();
    // Consecutive records' lines for one file go out in one append.
    std::string lines_file, lines;
    auto append_lines = [&] {
      if (lines.empty()) return;
      uint64_t offset = files.append(lines_file, lines);
      journal.add(GroupJournal::Kind::lines, lines_file, offset, lines);
      lines.clear();
    };
    try {
      for (size_t i = 0; result.error.empty() && i < up.records.size(); ++i) {
        auto& record = up.records[i];
        if (record.seq <= mark) {
          ++counted.duplicates;
          continue;
        }
        RenderedRecord here;
        const RenderedRecord& rendered =
            up.rendered.size() == up.records.size() ? up.rendered[i] : (here = render_record(up.agent, up.lane, record));
        if (!rendered.blob_file.empty()) {
          std::string_view blob(reinterpret_cast<const char*>(rendered.blob.begin()), rendered.blob.size());
          files.write_at(rendered.blob_file, rendered.blob_offset, blob);
          journal.add(GroupJournal::Kind::blob, rendered.blob_file, rendered.blob_offset, blob);
        }
        if (rendered.file != lines_file) {
          append_lines();
          lines_file = rendered.file;
        }
        lines += rendered.lines;
        mark = record.seq;
        ++(rendered.malformed ? counted.malformed : counted.stored);
      }
      append_lines();
    } catch (const std::exception& e) {  // StoreError, filesystem_error: this upload only
      files.roll_back();
      journal.roll_back(journal_mark);
      result.status = UploadStatus::failed;
      result.error = e.what();
      spdlog::error("collector: storing an upload from {} failed: {}", up.agent, e.what());
    }
    if (result.status == UploadStatus::stored) {
      it->second = mark;
      uploaded.insert(up.agent);
      report->stored += counted.stored;
      report->duplicates += counted.duplicates;
      report->malformed += counted.malformed;
    }
    result.mark = it->second;
    results.push_back(std::move(result));
  }
  journal.write_group();
  if (options_.after_data_sync) options_.after_data_sync();
  uint64_t now = static_cast<uint64_t>(schemas::now_ns());
  write([&](const lmdb::Txn& txn) {
    for (auto& [key, mark] : marks) put_u64(txn, marks_, key, mark);
    for (auto& agent : uploaded) put_u64(txn, agents_, agent, now);
    put_u64(txn, meta_, kJournalEnd, journal.end());
  });
  return results;
}

uint64_t CollectorStore::journal_bytes() const { return journal_->end(); }

void CollectorStore::checkpoint() {
  if (needs_recovery_) recover();
  checkpoint_now();
}

void CollectorStore::try_checkpoint() {
  try {
    checkpoint_now();
    checkpoint_failed_ = false;
  } catch (const std::exception& e) {
    checkpoint_failed_ = true;
    // Nothing is lost: the journal still holds every group since the last
    // checkpoint (after a failed sync the next group first writes it again).
    spdlog::error("collector: checkpoint failed (the journal keeps the rows): {}", e.what());
  }
}

void CollectorStore::checkpoint_now() {
  last_checkpoint_ = std::chrono::steady_clock::now();
  if (journal_->end() == 0 && row_files_->dirty().empty()) return;
  // One sync of the file system for every row file, however many. syncfs
  // (Linux 5.8 and later) reports a writeback error on the file system since
  // this descriptor was opened (at start) or last reported one.
  if (::syncfs(datadir_fd_.get()) != 0) {
    // Pages whose writeback failed may be gone from the cache while a later
    // syncfs succeeds: the next group first writes the journal again.
    needs_recovery_ = true;
    fail_errno("cannot sync the file system of", datadir_);
  }
  write([&](const lmdb::Txn& txn) {
    for (auto& [rel, length] : row_files_->dirty()) put_u64(txn, files_, rel, length);
    put_u64(txn, meta_, kJournalEnd, 0);
  });
  row_files_->clear_dirty();
  journal_->reset();
}

// Cuts the row files back to what the last checkpoint and the committed part
// of the journal hold, writes that part of the journal again, and tries a
// checkpoint (a failed one is logged: the journal still holds everything).
// At open every row file is looked at; after a failure in this process only
// those written since the last checkpoint.
void CollectorStore::recover() {
  bool at_open = !row_files_;
  std::set<std::string> touched;
  if (!at_open)
    for (auto& [rel, length] : row_files_->dirty()) touched.insert(rel);
  row_files_ = std::make_unique<Files>(datadir_, *this, options_.max_open_files);
  uint64_t end = get_u64(begin(true).txn, meta_, kJournalEnd);
  std::map<std::string, uint64_t> journaled;  // row file -> where its journaled lines end
  uint64_t whole = journal_->replay(end, [&](const GroupJournal::Item& item) {
    if (item.kind != GroupJournal::Kind::lines) return;
    uint64_t& at = journaled[std::string(item.path)];
    at = std::max(at, item.offset + item.data.size());
  });
  bool damaged = whole < end;
  if (damaged)
    spdlog::error("collector: the journal {} is damaged at offset {} of {}: the groups after it are lost "
                  "unless the row files kept them, which are kept whole",
                  journal_->path().string(), whole, end);
  repair(journaled, at_open ? nullptr : &touched, damaged);
  row_files_->replaying(journaled);
  journal_->replay(whole, [&](const GroupJournal::Item& item) {
    std::string rel(item.path);
    if (item.kind == GroupJournal::Kind::blob)
      row_files_->write_at(rel, item.offset, item.data);
    else
      row_files_->replay_lines(rel, item.offset, item.data);
  });
  row_files_->replaying({});
  if (damaged) write([&](const lmdb::Txn& txn) { put_u64(txn, meta_, kJournalEnd, whole); });
  needs_recovery_ = false;
  try_checkpoint();
}

PruneReport CollectorStore::prune(int64_t now_ns) {
  // Every length in `files` first, and no open file keeps a length that
  // pruning could make stale (a sealed file is adopted at its size when opened).
  checkpoint();
  row_files_->close_all();
  PruneReport report;
  constexpr int64_t kDayNs = 86400ll * 1000000000;
  constexpr size_t kPerTxn = 1000;  // keeps each write transaction short
  if (options_.files_keep_days > 0) {
    std::string sealed_before = utc_date(now_ns - options_.files_keep_days * kDayNs);
    // Recorded first: an entry removed below is then never taken for uncommitted.
    write([&](const lmdb::Txn& txn) {
      if (get_text(txn, meta_, kSealedBefore) < sealed_before) put_text(txn, meta_, kSealedBefore, sealed_before);
    });
    for (std::string from;;) {
      std::vector<std::pair<std::string, uint64_t>> old;  // rel, committed
      bool more = false;
      {
        auto t = begin(true);
        lmdb::Cursor cursor(t.txn, files_, env_->dir());
        MDB_val k = bytes_val(from), v;
        for (bool ok = from.empty() ? cursor.get(k, v, MDB_FIRST) : cursor.get(k, v, MDB_SET_RANGE); ok;
             ok = cursor.get(k, v, MDB_NEXT)) {
          std::string rel(static_cast<const char*>(k.mv_data), k.mv_size);
          if (old.size() == kPerTxn) {
            from = rel;
            more = true;
            break;
          }
          std::string day = file_day(rel);
          if (day.empty() || day >= sealed_before || v.mv_size != sizeof(uint64_t)) continue;
          uint64_t committed;
          std::memcpy(&committed, v.mv_data, sizeof committed);
          old.emplace_back(rel, committed);
        }
      }
      std::vector<std::string> gone;
      for (auto& [rel, committed] : old) {
        // Only a file that holds exactly what was committed is complete at its size.
        std::error_code ec;
        uint64_t size = fs::file_size(datadir_ / rel, ec);
        if ((!ec && size == committed) || ec == std::errc::no_such_file_or_directory) gone.push_back(rel);
      }
      write([&](const lmdb::Txn& txn) {
        for (auto& rel : gone) {
          MDB_val k = bytes_val(rel);
          int rc = mdb_del(txn.get(), files_, &k, nullptr);
          if (rc != MDB_NOTFOUND) lmdb::check(rc, "mdb_del", env_->dir());
        }
      });
      report.files += gone.size();
      if (!more) break;
    }
  }
  if (options_.agents_keep_days > 0) {
    uint64_t cutoff = static_cast<uint64_t>(std::max<int64_t>(0, now_ns - options_.agents_keep_days * kDayNs));
    std::vector<std::string> silent;
    {
      auto t = begin(true);
      lmdb::Cursor cursor(t.txn, agents_, env_->dir());
      MDB_val k, v;
      for (bool ok = cursor.get(k, v, MDB_FIRST); ok; ok = cursor.get(k, v, MDB_NEXT)) {
        // Its last upload, or when it was met if it never uploaded (remember_agent).
        uint64_t entry[2] = {0, 0};
        std::memcpy(entry, v.mv_data, std::min(v.mv_size, sizeof entry));
        uint64_t last = entry[0] ? entry[0] : entry[1];
        if (last < cutoff) silent.emplace_back(static_cast<const char*>(k.mv_data), k.mv_size);
      }
    }
    for (size_t i = 0; i < silent.size(); i += kPerTxn)
      write([&](const lmdb::Txn& txn) {
        for (size_t j = i; j < std::min(silent.size(), i + kPerTxn); ++j) {
          MDB_val k = bytes_val(silent[j]);
          int rc = mdb_del(txn.get(), agents_, &k, nullptr);
          if (rc != MDB_NOTFOUND) lmdb::check(rc, "mdb_del", env_->dir());
        }
      });
    report.agents = silent.size();
  }
  if (report.files || report.agents)
    spdlog::info("collector: pruned {} files entries (days before {} days ago) and {} agents silent for {} days",
                 report.files, options_.files_keep_days, report.agents, options_.agents_keep_days);
  return report;
}

std::vector<CollectorStore::AgentEntry> CollectorStore::agents() const {
  std::vector<AgentEntry> out;
  {
    auto locked = begin(true);
    auto& txn = locked.txn;
    lmdb::Cursor cursor(txn, agents_, env_->dir());
    MDB_val k, v;
    for (bool more = cursor.get(k, v, MDB_FIRST); more; more = cursor.get(k, v, MDB_NEXT)) {
      AgentEntry e;
      e.id.assign(static_cast<const char*>(k.mv_data), k.mv_size);
      if (v.mv_size >= sizeof(uint64_t)) std::memcpy(&e.last_upload_ns, v.mv_data, sizeof(uint64_t));
      out.push_back(std::move(e));
    }
  }
  for (auto& e : out) e.marks = marks(e.id);
  return out;
}

std::vector<std::string> CollectorStore::agents_met() const {
  std::vector<std::string> out;
  auto t = begin(true);
  lmdb::Cursor cursor(t.txn, agents_, env_->dir());
  MDB_val k, v;
  for (bool more = cursor.get(k, v, MDB_FIRST); more; more = cursor.get(k, v, MDB_NEXT))
    out.emplace_back(static_cast<const char*>(k.mv_data), k.mv_size);
  return out;  // LMDB's order: sorted
}

std::string artifact_folder(kj::StringPtr artifact) { return path_component(artifact); }

std::string folder_of_file(const std::string& rel) {
  auto first = rel.find('/');
  auto second = first == std::string::npos ? first : rel.find('/', first + 1);
  return second == std::string::npos ? "" : rel.substr(first + 1, second - first - 1);
}

void append_escaped(std::string& out, unsigned char c, char marker) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  out += marker;
  out += kHex[c >> 4];
  out += kHex[c & 15];
}

namespace {

std::string request_key(const std::string& agent, uint64_t n) {
  std::string key = agent;
  key += '\0';
  for (int shift = 56; shift >= 0; shift -= 8) key += static_cast<char>((n >> shift) & 0xff);
  return key;
}

}  // namespace

uint64_t CollectorStore::next_flow_ids(uint64_t count) {
  uint64_t next = 0;
  write([&](const lmdb::Txn& txn) {
    uint64_t clock = protocol::FIRST_FLOW_ID + static_cast<uint64_t>(schemas::now_ns()) / 1000;
    next = std::max(get_u64(txn, meta_, "next_flow"), clock);
    put_u64(txn, meta_, "next_flow", next + count);
  });
  return next;
}

uint64_t CollectorStore::flows_given_below() const {
  auto t = begin(true);
  return get_u64(t.txn, meta_, "next_flow");
}

bool CollectorStore::known_agent(const std::string& agent) const {
  auto t = begin(true);
  for (MDB_dbi dbi : {agents_, tables_}) {
    MDB_val k = bytes_val(agent), v;
    int rc = mdb_get(t.txn.get(), dbi, &k, &v);
    if (rc == MDB_SUCCESS) return true;
    if (rc != MDB_NOTFOUND) lmdb::check(rc, "mdb_get", env_->dir());
  }
  lmdb::Cursor cursor(t.txn, requests_, env_->dir());
  std::string prefix = agent + '\0';
  MDB_val k = bytes_val(prefix), v;
  if (!cursor.get(k, v, MDB_SET_RANGE)) return false;
  return k.mv_size > prefix.size() && std::memcmp(k.mv_data, prefix.data(), prefix.size()) == 0;
}

void CollectorStore::remember_agent(const std::string& agent) {
  write([&](const lmdb::Txn& txn) {
    MDB_val k = bytes_val(agent);
    // Never uploaded (0), and when it was met: pruned like a silent agent.
    uint64_t entry[2] = {0, static_cast<uint64_t>(schemas::now_ns())};
    MDB_val v{sizeof entry, entry};
    int rc = mdb_put(txn.get(), agents_, &k, &v, MDB_NOOVERWRITE);
    if (rc != MDB_KEYEXIST) lmdb::check(rc, "mdb_put", env_->dir());  // known: an empty commit
  });
}

void CollectorStore::set_event_table(const std::string& agent, const std::string& encoded) {
  write([&](const lmdb::Txn& txn) {
    MDB_val k = bytes_val(agent), v = bytes_val(encoded);
    int rc = encoded.empty() ? mdb_del(txn.get(), tables_, &k, nullptr) : mdb_put(txn.get(), tables_, &k, &v, 0);
    if (rc != MDB_NOTFOUND) lmdb::check(rc, "mdb_put", env_->dir());
  });
}

std::string CollectorStore::event_table(const std::string& agent) const {
  auto locked = begin(true);
  auto& txn = locked.txn;
  MDB_val k = bytes_val(agent), v;
  int rc = mdb_get(txn.get(), tables_, &k, &v);
  if (rc == MDB_NOTFOUND) return {};
  lmdb::check(rc, "mdb_get", env_->dir());
  return std::string(static_cast<const char*>(v.mv_data), v.mv_size);
}

void CollectorStore::queue_request(const std::string& agent, const std::string& encoded) {
  write([&](const lmdb::Txn& txn) {
    uint64_t n = get_u64(txn, meta_, "next_request") + 1;
    put_u64(txn, meta_, "next_request", n);
    std::string key = request_key(agent, n);
    MDB_val k = bytes_val(key), v = bytes_val(encoded);
    lmdb::check(mdb_put(txn.get(), requests_, &k, &v, 0), "mdb_put", env_->dir());
  });
}

std::vector<CollectorStore::Queued> CollectorStore::queued_requests(const std::string& agent) const {
  std::vector<Queued> out;
  auto locked = begin(true);
  auto& txn = locked.txn;
  lmdb::Cursor cursor(txn, requests_, env_->dir());
  std::string prefix = agent + '\0';
  MDB_val k = bytes_val(prefix), v;
  for (bool more = cursor.get(k, v, MDB_SET_RANGE); more; more = cursor.get(k, v, MDB_NEXT)) {
    std::string key(static_cast<const char*>(k.mv_data), k.mv_size);
    if (key.size() != prefix.size() + 8 || key.compare(0, prefix.size(), prefix) != 0) break;
    uint64_t n = 0;
    for (size_t i = prefix.size(); i < key.size(); ++i) n = n << 8 | static_cast<unsigned char>(key[i]);
    out.push_back({n, std::string(static_cast<const char*>(v.mv_data), v.mv_size)});
  }
  return out;
}

std::vector<std::string> CollectorStore::agents_with_requests() const {
  std::vector<std::string> out;
  auto locked = begin(true);
  auto& txn = locked.txn;
  for (MDB_dbi dbi : {tables_, requests_}) {
    lmdb::Cursor cursor(txn, dbi, env_->dir());
    MDB_val k, v;
    for (bool more = cursor.get(k, v, MDB_FIRST); more; more = cursor.get(k, v, MDB_NEXT)) {
      std::string key(static_cast<const char*>(k.mv_data), k.mv_size);
      out.push_back(key.substr(0, key.find('\0')));
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

void CollectorStore::remove_request(const std::string& agent, uint64_t key) {
  write([&](const lmdb::Txn& txn) {
    std::string k_text = request_key(agent, key);
    MDB_val k = bytes_val(k_text);
    int rc = mdb_del(txn.get(), requests_, &k, nullptr);
    if (rc != MDB_NOTFOUND) lmdb::check(rc, "mdb_del", env_->dir());
  });
}

}  // namespace outpost::net
