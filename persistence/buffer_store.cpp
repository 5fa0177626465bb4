#include "persistence/buffer_store.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <ctime>

#include "persistence/record_format.hpp"
#include "persistence/recovery.hpp"

namespace outpost::persistence {
namespace fs = std::filesystem;
namespace rf = record_format;

namespace {

constexpr const char* kLaneDbNames[kLaneCount] = {"lane.control", "lane.events", "lane.results",
                                                  "lane.uploads"};
constexpr const char* kDataFile = "data.mdb";
constexpr const char* kLmdbLockFile = "lock.mdb";
constexpr const char* kCompactDir = "compact.tmp";
constexpr const char* kSalvageDir = "salvage.tmp";
// Opens in a row that ended without a clean close before the file is rebuilt
// by a salvage even when its check passed: damage the check cannot see must
// not make a crash loop.
constexpr unsigned kMaxUncleanOpens = 3;
// Seqs reserved per SEQ_FLOOR write: one extra fsync per this many records.
constexpr uint64_t kSeqFloorBlock = 1ull << 24;

size_t index(Lane lane) { return static_cast<size_t>(lane); }

fs::path prepare_dir(fs::path dir) {
  if (dir.empty()) throw StoreError("buffer directory is not set");
  dir = fs::absolute(dir).lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();  // drop a trailing '/'
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw StoreError("cannot create buffer directory " + dir.string() + ": " + ec.message(),
                           ec.value());
  return dir;
}

uint64_t clock_micros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string utc_stamp() {
  std::time_t t = std::time(nullptr);
  std::tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

uint64_t file_size_or_zero(const fs::path& p) {
  std::error_code ec;
  auto size = fs::file_size(p, ec);
  return ec ? 0 : size;
}

// Key of a quarantined record: the lane it came from, then its seq.
struct QuarantineKey {
  unsigned char bytes[9];
  QuarantineKey(Lane lane, uint64_t seq) {
    bytes[0] = static_cast<unsigned char>(index(lane));
    rf::Key k(seq);
    std::copy(std::begin(k.bytes), std::end(k.bytes), bytes + 1);
  }
  MDB_val val() { return {sizeof bytes, bytes}; }
};

uint64_t seq_of_quarantine_key(const MDB_val& key) {
  if (key.mv_size != 9) return 0;
  MDB_val k{8, static_cast<char*>(key.mv_data) + 1};
  return rf::seq_of(k).value_or(0);
}

// Records deleted per write transaction: bounds LMDB's dirty pages (a huge
// ack would otherwise hit MDB_TXN_FULL or MDB_MAP_FULL).
constexpr size_t kDeleteChunk = 10000;

AppendResult refused(AppendOutcome outcome, std::string reason) {
  AppendResult r;
  r.outcome = outcome;
  r.reason = std::move(reason);
  return r;
}

}  // namespace

// One text for the whole family: the kernel says ENOSPC, EDQUOT or EFBIG,
// and LMDB turns a short write (what a full disk usually gives first) into
// EIO, so the errno alone would alternate between causes for one full disk.
std::string BufferStore::disk_full_reason() const {
  return "disk full: the file system refused a write to " + options_.dir.string();
}

const char* to_string(AppendOutcome outcome) {
  switch (outcome) {
    case AppendOutcome::ok: return "ok";
    case AppendOutcome::full: return "full";
    case AppendOutcome::too_large: return "too_large";
    case AppendOutcome::disk_full: return "disk_full";
  }
  return "unknown";
}

BufferStore::BufferStore(StoreOptions options)
    : options_((options.dir = prepare_dir(options.dir), std::move(options))),
      lock_(options_.dir) {
  if (options_.limit_bytes == 0) throw StoreError("buffer limit must be greater than 0");
  if (options_.map_size_bytes == 0) {
    uint64_t mib = 1ull << 20;
    options_.map_size_bytes = (options_.limit_bytes * 3 + 256 * mib + mib - 1) / mib * mib;
  }
  fs::remove_all(options_.dir / kCompactDir);  // left by a crash during compaction
  fs::remove_all(options_.dir / kSalvageDir);  // left by a crash during a salvage
  auto floor = read_seq_floor(options_.dir);
  seq_floor_ = floor.value_or(0);
  auto last_close = parse_close_state(lock_.note_at_open());
  CloseState opening;
  opening.unclean_opens = last_close && !last_close->clean ? last_close->unclean_opens + 1 : 1;
  lock_.write_note(format_close_state(opening));
  if (last_close && last_close->clean) clean_records_ = last_close->records;
  {
    std::unique_lock<std::shared_mutex> lock(env_mutex_);
    check_before_open(last_close, floor.has_value());
    reopen_locked();
  }
  compact_if_drained();
  opening_ = false;
}

// A clean close records the data file's identity: the next open skips the
// check unless the file changed meanwhile.
BufferStore::~BufferStore() {
  bool usable = env_ != nullptr;
  env_.reset();
  if (!usable) return;
  try {
    CloseState clean;
    clean.clean = true;
    clean.records = meta_.records();
    if (auto id = identity_of(data_file())) clean.data = *id;
    lock_.write_note(format_close_state(clean));
  } catch (const std::exception& e) {
    spdlog::warn("buffer {}: could not record the clean close: {}", options_.dir.string(), e.what());
  }
}

// Before LMDB maps the file: was it emptied, or may it be damaged? A file
// that may be is walked in a child process, and salvaged if the walk finds
// damage or if opens keep ending without a clean close. Under env_mutex_.
void BufferStore::check_before_open(const std::optional<CloseState>& last_close, bool existed) {
  auto id = identity_of(data_file());
  if (!id || id->size == 0) {
    // SEQ_FLOOR is written by a store's first commit: this one held a file.
    if (existed) {
      std::string why = data_file().string() + (id ? " is empty" : " is missing");
      note_loss(clean_records_, why);
      spdlog::error("buffer {}: {} although the buffer existed: {} records are lost; starting a "
                    "fresh buffer",
                    options_.dir.string(), why,
                    clean_records_ ? std::to_string(*clean_records_) : "an unknown number of");
    }
    return;
  }
  if (!lmdb::check_data_file(data_file().string()).empty()) return;  // set aside by open_env
  bool changed = !last_close || !last_close->clean || !(last_close->data == *id);
  bool looping = last_close && !last_close->clean && last_close->unclean_opens + 1 >= kMaxUncleanOpens;
  if (!changed) return;
  auto check = recovery::check(options_.dir, options_.map_size_bytes);
  report_.checked = true;
  if (!check.healthy) {
    salvage_locked(check.problem);
  } else if (looping) {
    salvage_locked(std::to_string(last_close->unclean_opens + 1) +
                   " opens in a row ended without a clean close");
  } else if (check.corrupt_records) {
    spdlog::warn("buffer {}: {} records fail their checksum; reads will quarantine them",
                 options_.dir.string(), check.corrupt_records);
  }
}

// Copies what can be read into a fresh file, which replaces the damaged one
// (kept as <dir>.damaged-<time>/data.mdb). The data file is valid at every
// step: a crash during a salvage only means another salvage.
void BufferStore::salvage_locked(const std::string& why) {
  fs::path tmp = options_.dir / kSalvageDir;
  fs::remove_all(tmp);
  fs::create_directory(tmp);
  spdlog::error("buffer {} is damaged ({}); salvaging what can be read into a fresh file",
                options_.dir.string(), why);
  auto s = recovery::salvage(options_.dir, tmp, options_.map_size_bytes);
  fsync_path(tmp / kDataFile);
  fs::path target = options_.dir.string() + ".damaged-" + utc_stamp();
  for (int n = 1; fs::exists(target); ++n)
    target = options_.dir.string() + ".damaged-" + utc_stamp() + "-" + std::to_string(n);
  fs::create_directories(target);
  fs::create_hard_link(data_file(), target / kDataFile);
  fsync_path(target);
  fs::rename(tmp / kDataFile, data_file());  // atomic: the damaged file or the salvaged one
  std::error_code ec;
  fs::remove(options_.dir / kLmdbLockFile, ec);
  fsync_path(options_.dir);
  fsync_path(options_.dir.parent_path());
  fs::remove_all(tmp, ec);
  CloseState opening;
  opening.unclean_opens = 1;  // a fresh file: the crash-loop count starts again
  lock_.write_note(format_close_state(opening));

  std::optional<uint64_t> lost;
  if (s.expected) lost = *s.expected - std::min(*s.expected, s.salvaged);
  std::string detail = s.problem.empty() ? why : why + "; " + s.problem;
  if (opening_) {
    report_.set_aside_to = target;
    report_.reason = detail;
    report_.salvaged += s.salvaged;
  }
  note_loss(lost, detail);
  {
    std::lock_guard<std::mutex> guard(stats_mutex_);
    ++damage_.salvages;
    damage_.salvaged += s.salvaged;
  }
  spdlog::error("buffer {}: salvaged {} records, lost {}{}; the damaged file was kept at {}",
                options_.dir.string(), s.salvaged, lost ? std::to_string(*lost) : "an unknown number",
                s.crashes ? " (LMDB crashed " + std::to_string(s.crashes) + " times on it)" : "",
                target.string());
}

void BufferStore::note_loss(std::optional<uint64_t> lost, const std::string& why) {
  bool unknown = !lost;
  {
    std::lock_guard<std::mutex> guard(stats_mutex_);
    damage_.lost += lost.value_or(0);
    damage_.lost_unknown |= unknown;
    damage_.last = why;
  }
  if (!opening_) return;
  report_.lost += lost.value_or(0);
  report_.lost_unknown |= unknown;
  if (report_.reason.empty()) report_.reason = why;
}

// Damage met while the file is in use: salvage it, then carry on.
void BufferStore::recover(const std::string& why) {
  std::unique_lock<std::shared_mutex> lock(env_mutex_);
  env_.reset();
  salvage_locked(why);
  reopen_locked();
}

template <class F>
auto BufferStore::recovering(F f) -> decltype(f()) {
  try {
    return f();
  } catch (const StoreError& e) {
    int rc = e.code();
    if (rc != MDB_CORRUPTED && rc != MDB_PAGE_NOTFOUND && rc != MDB_BAD_TXN) throw;
    recover(e.what());
    return f();
  }
}

Meta BufferStore::meta() const {
  std::lock_guard<std::mutex> guard(stats_mutex_);
  return meta_;
}

fs::path BufferStore::data_file() const { return options_.dir / kDataFile; }

std::string BufferStore::where(Lane lane) const {
  return options_.dir.string() + " (" + kLaneDbNames[index(lane)] + ")";
}

// Opens the environment; one that cannot be trusted is set aside and a fresh
// one opened. On any other failure env_ stays null and the next call retries.
void BufferStore::reopen() {
  std::unique_lock<std::shared_mutex> lock(env_mutex_);
  reopen_locked();
}

void BufferStore::reopen_locked() {
  env_.reset();
  try {
    open_env();
  } catch (const StoreError& e) {
    env_.reset();
    if (!lmdb::is_corruption(e.code())) throw;
    set_aside(e.what());
    open_env();
  }
}

const lmdb::Env& BufferStore::env() const {
  if (!env_) throw StoreError("buffer " + options_.dir.string() + " has no usable environment", MDB_PANIC);
  return *env_;
}

void BufferStore::open_env() {
  const std::string dir = options_.dir.string();
  if (auto problem = lmdb::check_data_file(data_file().string()); !problem.empty())
    throw StoreError(problem, MDB_CORRUPTED);
  unsigned flags = MDB_NOTLS | MDB_NOMEMINIT;
  if (options_.sync == SyncPolicy::none) flags |= MDB_NOSYNC;
  try {
    env_ = std::make_unique<lmdb::Env>(dir, flags, options_.map_size_bytes, kLaneCount + 2);
  } catch (const StoreError& e) {
    // The file passed the meta check, so EINVAL means LMDB rejected its content.
    throw StoreError(e.what(), e.code() == EINVAL ? MDB_CORRUPTED : e.code());
  }

  lmdb::Txn txn(*env_, false);
  for (size_t i = 0; i < kLaneCount; ++i)
    lmdb::check(mdb_dbi_open(txn.get(), kLaneDbNames[i], MDB_CREATE, &lane_dbs_[i]),
                "mdb_dbi_open", dir + " (" + kLaneDbNames[i] + ")");
  lmdb::check(mdb_dbi_open(txn.get(), "quarantine", MDB_CREATE, &quarantine_db_), "mdb_dbi_open",
              dir + " (quarantine)");
  lmdb::check(mdb_dbi_open(txn.get(), "meta", MDB_CREATE, &meta_db_), "mdb_dbi_open",
              dir + " (meta)");

  MDB_val key{sizeof meta_format::kKey, const_cast<char*>(meta_format::kKey)}, value;
  int rc = mdb_get(txn.get(), meta_db_, &key, &value);
  if (rc != MDB_NOTFOUND) lmdb::check(rc, "mdb_get", dir + " (meta)");
  Meta meta;
  auto decoded = rc == MDB_NOTFOUND ? meta_format::Decoded::damaged
                                    : meta_format::decode(value, meta);
  if (decoded == meta_format::Decoded::newer_version)
    throw StoreError(dir + " was written by a newer Outpost (meta format above " +
                         std::to_string(meta_format::kVersion) + ")",
                     MDB_VERSION_MISMATCH);
  if (decoded == meta_format::Decoded::damaged) {
    meta = rebuild_meta(txn);
    if (rc != MDB_NOTFOUND || meta.records() || meta.quarantined.records) {
      std::string why = rc == MDB_NOTFOUND ? "meta record missing" : "meta record damaged";
      if (opening_) {
        report_.meta_rebuilt = true;
        if (report_.reason.empty()) report_.reason = why;
      }
      spdlog::warn("buffer {}: {}; accounting recomputed by a full scan ({} records, {} bytes)",
                   dir, why, meta.records(), meta.live_bytes());
    }
  } else if (options_.sync == SyncPolicy::none) {
    // Without fsync a power loss may roll the meta record back; SEQ_FLOOR is
    // always synced and lies above every seq handed out.
    meta.next_seq = std::max(meta.next_seq, seq_floor_.load());
  }
  lmdb::check(commit(txn, meta), "mdb_txn_commit", dir + " (open)");
}

// Recomputes the accounting from the records themselves; the seq counter
// starts above every seq seen, SEQ_FLOOR, and the clock in microseconds (in
// case SEQ_FLOOR is gone too), so a rebuilt or new store never reuses one.
Meta BufferStore::rebuild_meta(const lmdb::Txn& txn) const {
  Meta meta;
  uint64_t max_seq = 0;
  MDB_val key, value;
  for (size_t i = 0; i < kLaneCount; ++i) {
    lmdb::Cursor cursor(txn, lane_dbs_[i], where(static_cast<Lane>(i)));
    for (bool more = cursor.get(key, value, MDB_FIRST); more;
         more = cursor.get(key, value, MDB_NEXT)) {
      meta.lanes[i].records++;
      meta.lanes[i].bytes += rf::accounted_bytes(value);
      max_seq = std::max(max_seq, rf::seq_of(key).value_or(0));
    }
  }
  lmdb::Cursor cursor(txn, quarantine_db_, options_.dir.string() + " (quarantine)");
  for (bool more = cursor.get(key, value, MDB_FIRST); more;
       more = cursor.get(key, value, MDB_NEXT)) {
    meta.quarantined.records++;
    meta.quarantined.bytes += rf::accounted_bytes(value);
    max_seq = std::max(max_seq, seq_of_quarantine_key(key));
  }
  meta.next_seq = std::max({max_seq + 1, seq_floor_.load(), this->meta().next_seq, clock_micros()});
  return meta;
}

void BufferStore::set_aside(const std::string& reason) {
  fs::path base = options_.dir;
  fs::path target = base.string() + ".corrupt-" + utc_stamp();
  for (int n = 1; fs::exists(target); ++n)
    target = base.string() + ".corrupt-" + utc_stamp() + "-" + std::to_string(n);
  fs::create_directories(target);
  for (const char* name : {kDataFile, kLmdbLockFile})
    if (fs::exists(base / name)) fs::rename(base / name, target / name);
  fsync_path(base);
  fsync_path(base.parent_path());
  spdlog::error("buffer {} cannot be opened ({}); its files were moved to {} and a fresh buffer "
                "was started",
                base.string(), reason, target.string());
  if (opening_) {
    report_.set_aside_to = target;
    report_.reason = reason;
  }
  note_loss(opening_ ? clean_records_ : std::nullopt, reason);
}

// LMDB refuses every transaction after a failed meta-page write (MDB_PANIC)
// until the environment is reopened; do that once rather than fail forever.
lmdb::Txn BufferStore::begin(bool read_only) {
  try {
    if (!env_) reopen();
    return lmdb::Txn(env(), read_only);
  } catch (const StoreError& e) {
    if (e.code() != MDB_PANIC) throw;
    spdlog::warn("buffer {}: {}; reopening the environment", options_.dir.string(), e.what());
    reopen();
    return lmdb::Txn(env(), read_only);
  }
}

int BufferStore::commit(lmdb::Txn& txn, const Meta& next) {
  if (next.next_seq > seq_floor_) {
    uint64_t floor = next.next_seq + kSeqFloorBlock;
    write_seq_floor(options_.dir, floor);
    seq_floor_ = floor;
  }
  auto encoded = meta_format::encode(next);
  MDB_val key{sizeof meta_format::kKey, const_cast<char*>(meta_format::kKey)};
  MDB_val value{sizeof encoded, encoded.data()};
  int rc = mdb_put(txn.get(), meta_db_, &key, &value, 0);
  if (rc != MDB_SUCCESS) return rc;  // the transaction aborts with txn
  rc = txn.commit();
  if (rc == MDB_SUCCESS) {
    std::lock_guard<std::mutex> guard(stats_mutex_);
    meta_ = next;
    ++commits_;
  }
  return rc;
}

// LMDB reuses pages freed by transaction N only from N+2 on (N-1 stays the
// crash fallback). When a write meets a full map or disk right after acks,
// one meta-only commit makes their pages usable; then the write runs again.
template <class Write>
int BufferStore::write_with_retry(Write write) {
  int rc = write();
  if (rc == MDB_MAP_FULL || lmdb::is_disk_full(rc)) {
    lmdb::Txn txn = begin(false);
    if (commit(txn, meta_) == MDB_SUCCESS) rc = write();
  }
  return rc;
}

AppendResult BufferStore::append(Lane lane, kj::ArrayPtr<const RecordIn> records) {
  LaneBatch batch{lane, records};
  return append(kj::arrayPtr(&batch, 1));
}

AppendResult BufferStore::append(kj::ArrayPtr<const LaneBatch> batches) {
  uint64_t bytes = 0, count = 0;
  for (auto& b : batches) {
    count += b.records.size();
    for (auto& r : b.records) bytes += rf::accounted_bytes(r.payload.size());
  }
  if (count == 0) return {};
  if (bytes > options_.limit_bytes)
    return refused(AppendOutcome::too_large,
                   "batch of " + std::to_string(bytes) + " bytes exceeds the buffer limit of " +
                       std::to_string(options_.limit_bytes) + " bytes");
  if (meta_.live_bytes() + bytes > options_.limit_bytes)
    return refused(AppendOutcome::full, "buffer holds " + std::to_string(meta_.live_bytes()) +
                                            " of " + std::to_string(options_.limit_bytes) +
                                            " bytes; batch needs " + std::to_string(bytes));
  int rc;
  try {
    rc = write_with_retry([&] { return write_batches(batches); });
  } catch (const StoreError& e) {
    if (!lmdb::is_disk_full(e.code())) throw;
    return refused(AppendOutcome::disk_full, disk_full_reason());
  }
  if (rc != MDB_SUCCESS) {
    if (lmdb::is_disk_full(rc)) return refused(AppendOutcome::disk_full, disk_full_reason());
    std::string why = std::string(mdb_strerror(rc)) + " writing to " + options_.dir.string();
    if (rc == MDB_MAP_FULL) return refused(AppendOutcome::full, why);
    lmdb::fail(rc, "append", options_.dir.string());
  }
  AppendResult result;
  result.first_seq = meta_.next_seq - count;
  result.last_seq = meta_.next_seq - 1;
  return result;
}

// One transaction for all batches; returns LMDB's code for the caller to map.
int BufferStore::write_batches(kj::ArrayPtr<const LaneBatch> batches) {
  Meta next = meta_;
  lmdb::Txn txn = begin(false);
  for (auto& b : batches) {
    auto& counters = next.lanes[index(b.lane)];
    lmdb::Cursor cursor(txn, lane_dbs_[index(b.lane)], where(b.lane));
    for (auto& r : b.records) {
      uint64_t seq = next.next_seq++;
      rf::Key key(seq);
      MDB_val k = key.val(), v{rf::kHeaderSize + r.payload.size(), nullptr};
      int rc = mdb_cursor_put(cursor.get(), &k, &v, MDB_APPEND | MDB_RESERVE);
      if (rc != MDB_SUCCESS) return rc;
      rf::write(v.mv_data, seq, {r.query_id, r.created_ns}, r.payload.begin(), r.payload.size());
      counters.records += 1;
      counters.bytes += rf::accounted_bytes(r.payload.size());
    }
  }
  return commit(txn, next);
}

// The header of an intact record; nothing when the value lies outside the
// map (a damaged node size: reading it would fault) or fails its checksum.
std::optional<rf::Header> BufferStore::inspect(const lmdb::Txn& txn, const MDB_val& key,
                                               const MDB_val& value) const {
  if (!txn.env().in_map(value)) return std::nullopt;
  return rf::verify(rf::seq_of(key).value_or(0), value);
}

ReadResult BufferStore::read(Lane lane, uint64_t after_seq, size_t max_records, size_t max_bytes) {
  ReadResult out = recovering([&] {
    lmdb::Txn txn = begin(true);
    return scan(txn, lane, after_seq, max_records, max_bytes);
  });
  if (!out.corrupt.empty()) quarantine(lane, out.corrupt);
  out.quarantined = out.corrupt.size();
  out.corrupt.clear();
  return out;
}

ReadResult BufferStore::read_concurrently(Lane lane, uint64_t after_seq, size_t max_records,
                                          size_t max_bytes) const {
  std::shared_lock<std::shared_mutex> lock(env_mutex_);
  lmdb::Txn txn(env(), true);
  return scan(txn, lane, after_seq, max_records, max_bytes);
}

ReadResult BufferStore::scan(const lmdb::Txn& txn, Lane lane, uint64_t after_seq,
                             size_t max_records, size_t max_bytes) const {
  ReadResult out;
  if (after_seq == UINT64_MAX || max_records == 0) return out;
  lmdb::Cursor cursor(txn, lane_dbs_[index(lane)], where(lane));
  rf::Key start(after_seq + 1);
  MDB_val key = start.val(), value;
  size_t bytes = 0;
  for (bool more = cursor.get(key, value, MDB_SET_RANGE); more && out.records.size() < max_records;
       more = cursor.get(key, value, MDB_NEXT)) {
    auto seq = rf::seq_of(key);
    if (!seq) throw StoreError("malformed key in " + where(lane), MDB_CORRUPTED);
    auto header = inspect(txn, key, value);
    if (!header) {
      out.corrupt.push_back(*seq);
      continue;
    }
    size_t size = value.mv_size - rf::kHeaderSize;
    if (!out.records.empty() && bytes + size > max_bytes) break;
    BufferedRecord r;
    r.seq = *seq;
    r.query_id = header->query_id;
    r.created_ns = header->created_ns;
    r.size = size;
    r.words = kj::heapArray<capnp::word>((size + sizeof(capnp::word) - 1) / sizeof(capnp::word));
    auto dst = r.words.asBytes();
    std::copy_n(static_cast<const kj::byte*>(value.mv_data) + rf::kHeaderSize, size, dst.begin());
    std::fill(dst.begin() + size, dst.end(), 0);
    bytes += size;
    out.records.push_back(kj::mv(r));
  }
  return out;
}

// Best effort: when the move cannot commit (disk full), the records stay
// where they are and are skipped again by the next read.
void BufferStore::quarantine(Lane lane, const std::vector<uint64_t>& seqs) {
  try {
    move_to_quarantine(lane, seqs);
  } catch (const StoreError& e) {
    spdlog::error("buffer {}: could not quarantine {} corrupt records: {}", where(lane),
                  seqs.size(), e.what());
  }
}

void BufferStore::move_to_quarantine(Lane lane, const std::vector<uint64_t>& seqs) {
  // Copy first, in a read transaction where values point into the map; a
  // value whose size is damaged is quarantined as an empty marker.
  struct Doomed {
    uint64_t seq;
    uint64_t bytes;
    std::string copy;
  };
  std::vector<Doomed> doomed;
  {
    lmdb::Txn txn = begin(true);
    for (uint64_t seq : seqs) {
      rf::Key key(seq);
      MDB_val k = key.val(), value;
      int rc = mdb_get(txn.get(), lane_dbs_[index(lane)], &k, &value);
      if (rc == MDB_NOTFOUND) continue;
      lmdb::check(rc, "mdb_get", where(lane));
      bool readable = txn.env().in_map(value);
      doomed.push_back({seq, rf::accounted_bytes(value),
                        readable ? std::string(static_cast<const char*>(value.mv_data),
                                               value.mv_size)
                                 : std::string()});
    }
  }
  Meta next = meta_;
  lmdb::Txn txn = begin(false);
  for (auto& d : doomed) {
    rf::Key key(d.seq);
    MDB_val k = key.val(), value{d.copy.size(), d.copy.data()};
    QuarantineKey qkey(lane, d.seq);
    MDB_val qk = qkey.val();
    lmdb::check(mdb_put(txn.get(), quarantine_db_, &qk, &value, 0), "mdb_put",
                options_.dir.string() + " (quarantine)");
    lmdb::check(mdb_del(txn.get(), lane_dbs_[index(lane)], &k, nullptr), "mdb_del", where(lane));
    auto& counters = next.lanes[index(lane)];
    counters.records -= 1;
    counters.bytes -= std::min(d.bytes, counters.bytes);
    next.quarantined.records += 1;
    next.quarantined.bytes += rf::accounted_bytes(value);
    spdlog::error("buffer {}: record {} is damaged; moved to quarantine", where(lane), d.seq);
  }
  lmdb::check(commit(txn, next), "mdb_txn_commit", where(lane) + " (quarantine)");
}

// Deletes up to `chunk` records of the lane with seq <= through in one
// transaction: LMDB's code, the bytes freed, and whether more remain.
BufferStore::Deleted BufferStore::delete_through(Lane lane, uint64_t through, size_t chunk) {
  Deleted d;
  d.rc = write_with_retry([&] {
    Meta next = meta_;
    auto& counters = next.lanes[index(lane)];
    d.freed = 0;
    d.more = false;
    lmdb::Txn txn = begin(false);
    {
      lmdb::Cursor cursor(txn, lane_dbs_[index(lane)], where(lane));
      MDB_val key, value;
      for (size_t n = 0;
           cursor.get(key, value, MDB_FIRST) && rf::seq_of(key).value_or(0) <= through; ++n) {
        if (n == chunk) {
          d.more = true;
          break;
        }
        uint64_t bytes = rf::accounted_bytes(value);
        if (int rc = mdb_cursor_del(cursor.get(), 0)) return rc;
        d.freed += bytes;
        counters.records -= 1;
        counters.bytes -= std::min(bytes, counters.bytes);
      }
    }
    return d.freed ? commit(txn, next) : MDB_SUCCESS;
  });
  return d;
}

// Deleting needs new pages too (copy-on-write): at a full map or disk, ever
// smaller transactions still make progress, so the buffer can always drain.
// Bounded: at most one pass per chunk of the lane's records, plus the halvings.
uint64_t BufferStore::ack(Lane lane, uint64_t through_seq) {
  uint64_t freed = recovering([&] {
    uint64_t bytes = 0;
    // An ack need not be durable: one that a crash undoes only brings back
    // records the collector already has and acks again. MDB_NOMETASYNC keeps
    // atomicity and consistency and saves the meta page's own fsync. LMDB
    // 0.9 takes it per environment only; env_ is looked up again at the end
    // because a reopen on the way replaces it (the new one starts without).
    bool lazy = options_.sync == SyncPolicy::full;
    if (lazy) lmdb::check(mdb_env_set_flags(env().get(), MDB_NOMETASYNC, 1), "mdb_env_set_flags", where(lane));
    KJ_DEFER(if (lazy && env_) mdb_env_set_flags(env_->get(), MDB_NOMETASYNC, 0));
    uint64_t passes = meta_.lanes[index(lane)].records / kDeleteChunk + 64;
    for (size_t chunk = kDeleteChunk; passes--;) {
      Deleted d = delete_through(lane, through_seq, chunk);
      if ((d.rc == MDB_MAP_FULL || lmdb::is_disk_full(d.rc)) && chunk > 1) {
        chunk /= 2;
        continue;
      }
      if (lmdb::is_disk_full(d.rc)) throw StoreError(disk_full_reason() + " (ack of " + where(lane) + ")", d.rc);
      lmdb::check(d.rc, "delete", where(lane) + " (ack)");
      bytes += d.freed;
      if (!d.more) break;
    }
    return bytes;
  });
  if (freed) compact_if_drained();
  return freed;
}

uint64_t BufferStore::purge_slice(uint64_t query_id, PurgeCursor& at, size_t max_scan) {
  if (at.done) return 0;
  struct Victim {
    uint64_t seq;
    uint64_t bytes;
  };
  // Find them in a read transaction, then delete them by key.
  std::vector<Victim> victims;
  std::vector<uint64_t> corrupt;
  Lane lane = static_cast<Lane>(at.lane);
  size_t i = at.lane;
  const uint64_t start_after = at.after_seq;
  bool lane_end = recovering([&] {
    victims.clear();
    corrupt.clear();
    at.after_seq = start_after;
    lmdb::Txn txn = begin(true);
    lmdb::Cursor cursor(txn, lane_dbs_[i], where(lane));
    rf::Key start(at.after_seq + 1);
    MDB_val key = start.val(), value;
    size_t n = 0;
    for (bool more = at.after_seq != UINT64_MAX && cursor.get(key, value, MDB_SET_RANGE); more;
         more = cursor.get(key, value, MDB_NEXT)) {
      if (n++ == max_scan) return false;
      uint64_t seq = rf::seq_of(key).value_or(0);
      auto header = inspect(txn, key, value);
      if (!header)
        corrupt.push_back(seq);
      else if (header->query_id == query_id)
        victims.push_back({seq, rf::accounted_bytes(value)});
      at.after_seq = std::max(at.after_seq, seq);
    }
    return true;
  });
  for (size_t from = 0; from < victims.size(); from += kDeleteChunk) {
    size_t to = std::min(victims.size(), from + kDeleteChunk);
    int rc = write_with_retry([&] {
      Meta next = meta_;
      lmdb::Txn txn = begin(false);
      for (size_t v = from; v < to; ++v) {
        rf::Key key(victims[v].seq);
        MDB_val k = key.val();
        if (int rc = mdb_del(txn.get(), lane_dbs_[i], &k, nullptr)) return rc;
        next.lanes[i].records -= 1;
        next.lanes[i].bytes -= std::min(victims[v].bytes, next.lanes[i].bytes);
      }
      return commit(txn, next);
    });
    lmdb::check(rc, "delete", where(lane) + " (purge)");
  }
  if (!corrupt.empty()) quarantine(lane, corrupt);
  if (lane_end) {
    at.after_seq = 0;
    if (++at.lane == kLaneCount) {
      at.done = true;
      compact_if_drained();
    }
  }
  return victims.size();
}

uint64_t BufferStore::purge(uint64_t query_id) {
  PurgeCursor at;
  uint64_t purged = 0;
  while (!at.done) purged += purge_slice(query_id, at, 100000);
  return purged;
}

StoreStats BufferStore::stats() const {
  StoreStats s;
  Meta m;
  {
    std::lock_guard<std::mutex> guard(stats_mutex_);
    m = meta_;
    s.damage = damage_;
  }
  for (size_t i = 0; i < kLaneCount; ++i) s.lanes[i].live = m.lanes[i];
  try {
    std::shared_lock<std::shared_mutex> lock(env_mutex_);
    lmdb::Txn txn(env(), true);
    for (size_t i = 0; i < kLaneCount; ++i) {
      lmdb::Cursor cursor(txn, lane_dbs_[i], where(static_cast<Lane>(i)));
      MDB_val key, value;
      // The first intact record; a few corrupt ones at most are skipped.
      int budget = 16;
      for (bool more = cursor.get(key, value, MDB_FIRST); more && budget--;
           more = cursor.get(key, value, MDB_NEXT)) {
        if (auto header = inspect(txn, key, value)) {
          s.lanes[i].oldest_created_ns = header->created_ns;
          break;
        }
      }
    }
  } catch (const StoreError& e) {
    spdlog::debug("buffer {}: stats without record ages: {}", options_.dir.string(), e.what());
  }
  s.records = m.records();
  s.live_bytes = m.live_bytes();
  s.limit_bytes = options_.limit_bytes;
  s.quarantined = m.quarantined;
  s.next_seq = m.next_seq;
  s.file_bytes = file_size_or_zero(data_file());
  s.commits = commits_;
  s.compactions = compactions_;
  return s;
}

Verification BufferStore::verify() const {
  Verification v;
  std::shared_lock<std::shared_mutex> lock(env_mutex_);
  Meta m = meta();
  lmdb::Txn txn(env(), true);
  v.recomputed = rebuild_meta(txn);
  v.recomputed.next_seq = m.next_seq;
  MDB_val key, value;
  for (size_t i = 0; i < kLaneCount; ++i) {
    lmdb::Cursor cursor(txn, lane_dbs_[i], where(static_cast<Lane>(i)));
    for (bool more = cursor.get(key, value, MDB_FIRST); more;
         more = cursor.get(key, value, MDB_NEXT))
      if (!inspect(txn, key, value)) ++v.corrupt;
  }
  v.meta_matches = v.recomputed.lanes == m.lanes && v.recomputed.quarantined == m.quarantined;
  return v;
}

// LMDB never shrinks its file. Once every lane is empty, a compaction makes
// it small again (the operator may ask for one at any time: compact()).
void BufferStore::compact_if_drained() {
  if (meta_.records() != 0) return;
  if (file_size_or_zero(data_file()) <= options_.compact_threshold_bytes) return;
  auto c = compact();
  if (!c.error.empty()) spdlog::warn("buffer {}: {}", options_.dir.string(), c.error);
}

// A compacting copy (which carries the meta record and so the seq counter)
// replaces the file. A failed reopen is retried by the next call that needs it.
BufferStore::Compaction BufferStore::compact() {
  Compaction c;
  c.before = file_size_or_zero(data_file());
  fs::path tmp = options_.dir / kCompactDir;
  std::error_code ec;
  try {
    fs::remove_all(tmp);
    fs::create_directory(tmp);
    lmdb::check(mdb_env_copy2(env().get(), tmp.c_str(), MDB_CP_COMPACT), "mdb_env_copy2",
                tmp.string());
    fsync_path(tmp / kDataFile);
    std::unique_lock<std::shared_mutex> lock(env_mutex_);  // no reader inside the old file
    env_.reset();
    fs::rename(tmp / kDataFile, data_file(), ec);  // atomic: the old file or the new
    if (!ec) fsync_path(options_.dir);
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    reopen_locked();
    if (ec) throw std::runtime_error("cannot replace " + data_file().string() + ": " + ec.message());
    ++compactions_;
    c.after = file_size_or_zero(data_file());
    spdlog::info("buffer {}: compacted {} -> {} bytes", options_.dir.string(), c.before, c.after);
  } catch (const std::exception& e) {
    c.error = std::string("compaction failed: ") + e.what();
    c.after = file_size_or_zero(data_file());
    fs::remove_all(tmp, ec);
  }
  return c;
}

}  // namespace outpost::persistence
