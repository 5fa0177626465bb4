#include "persistence/buffer_store.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <ctime>

#include "persistence/record_format.hpp"

namespace outpost::persistence {
namespace fs = std::filesystem;
namespace rf = record_format;

namespace {

constexpr const char* kLaneDbNames[kLaneCount] = {"lane.control", "lane.events", "lane.results",
                                                  "lane.uploads"};
constexpr const char* kDataFile = "data.mdb";
constexpr const char* kLmdbLockFile = "lock.mdb";
constexpr const char* kCompactDir = "compact.tmp";
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

AppendResult refused(AppendOutcome outcome, std::string reason) {
  AppendResult r;
  r.outcome = outcome;
  r.reason = std::move(reason);
  return r;
}

}  // namespace

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
  seq_floor_ = read_seq_floor(options_.dir).value_or(0);
  try {
    open_env();
  } catch (const StoreError& e) {
    if (!lmdb::is_corruption(e.code())) throw;
    set_aside(e.what());
    open_env();
  }
  compact_if_drained();
}

BufferStore::~BufferStore() = default;

fs::path BufferStore::data_file() const { return options_.dir / kDataFile; }

std::string BufferStore::where(Lane lane) const {
  return options_.dir.string() + " (" + kLaneDbNames[index(lane)] + ")";
}

void BufferStore::open_env() {
  const std::string dir = options_.dir.string();
  unsigned flags = MDB_NOTLS | MDB_NOMEMINIT;
  if (options_.sync == SyncPolicy::none) flags |= MDB_NOSYNC;
  env_ = std::make_unique<lmdb::Env>(dir, flags, options_.map_size_bytes, kLaneCount + 2);

  // A truncated file would fault (SIGBUS) on the first access past its end:
  // check it against the last page LMDB's meta page says is in use.
  uint64_t needed = (env_->info().me_last_pgno + 1) * uint64_t{env_->page_size()};
  uint64_t actual = file_size_or_zero(data_file());
  if (actual < needed)
    throw StoreError(data_file().string() + " is truncated: " + std::to_string(actual) +
                         " bytes, its meta page needs " + std::to_string(needed),
                     MDB_CORRUPTED);

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
  Meta meta;
  if (rc == MDB_NOTFOUND) {
    meta = rebuild_meta(txn);
    if (meta.records() == 0 && meta.quarantined.records == 0) {
      // A new (or recreated) store: start above every seq a previous store
      // here could have used, and above the clock in case SEQ_FLOOR is gone too.
      meta.next_seq = std::max({seq_floor_, clock_micros(), uint64_t{1}});
    } else {
      report_.meta_rebuilt = true;
      report_.reason = "meta record missing";
    }
  } else {
    lmdb::check(rc, "mdb_get", dir + " (meta)");
    switch (meta_format::decode(value, meta)) {
      case meta_format::Decoded::ok: break;
      case meta_format::Decoded::newer_version:
        throw StoreError(dir + " was written by a newer Outpost (meta format above " +
                             std::to_string(meta_format::kVersion) + ")",
                         MDB_VERSION_MISMATCH);
      case meta_format::Decoded::damaged:
        meta = rebuild_meta(txn);
        report_.meta_rebuilt = true;
        report_.reason = "meta record damaged";
        break;
    }
  }
  if (report_.meta_rebuilt)
    spdlog::warn("buffer {}: {}; accounting recomputed by a full scan ({} records, {} bytes)",
                 dir, report_.reason, meta.records(), meta.live_bytes());
  rc = commit(txn, meta);
  lmdb::check(rc, "mdb_txn_commit", dir + " (open)");
}

// Recomputes the accounting from the records themselves.
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
  }
  meta.next_seq = std::max({max_seq + 1, seq_floor_, meta_.next_seq});
  return meta;
}

void BufferStore::set_aside(const std::string& reason) {
  env_.reset();
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
  report_.set_aside_to = target;
  report_.reason = reason;
}

// LMDB refuses every write after a failed meta-page write (MDB_PANIC) until
// the environment is reopened; do that once rather than fail forever.
lmdb::Txn BufferStore::begin_write() {
  try {
    return lmdb::Txn(*env_, false);
  } catch (const StoreError& e) {
    if (e.code() != MDB_PANIC) throw;
    spdlog::warn("buffer {}: {}; reopening the environment", options_.dir.string(), e.what());
    env_.reset();
    open_env();
    return lmdb::Txn(*env_, false);
  }
}

int BufferStore::commit(lmdb::Txn& txn, const Meta& next) {
  if (next.next_seq > seq_floor_) {
    uint64_t floor = next.next_seq + kSeqFloorBlock;
    write_seq_floor(options_.dir, floor, options_.sync == SyncPolicy::full);
    seq_floor_ = floor;
  }
  auto encoded = meta_format::encode(next);
  MDB_val key{sizeof meta_format::kKey, const_cast<char*>(meta_format::kKey)};
  MDB_val value{sizeof encoded, encoded.data()};
  int rc = mdb_put(txn.get(), meta_db_, &key, &value, 0);
  if (rc != MDB_SUCCESS) return rc;  // the transaction aborts with txn
  rc = txn.commit();
  if (rc == MDB_SUCCESS) {
    meta_ = next;
    ++commits_;
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
    rc = write_batches(batches);
    // LMDB reuses pages freed by transaction N only from N+2 on (N-1 stays
    // the crash fallback). After acks at a full map or disk, one meta-only
    // commit makes their pages usable instead of refusing until the next ack.
    if (rc == MDB_MAP_FULL || lmdb::is_disk_full(rc)) {
      lmdb::Txn txn = begin_write();
      if (commit(txn, meta_) == MDB_SUCCESS) rc = write_batches(batches);
    }
  } catch (const StoreError& e) {
    if (!lmdb::is_disk_full(e.code())) throw;
    return refused(AppendOutcome::disk_full, e.what());
  }
  if (rc != MDB_SUCCESS) {
    std::string why = std::string(mdb_strerror(rc)) + " writing to " + options_.dir.string();
    if (rc == MDB_MAP_FULL) return refused(AppendOutcome::full, why);
    if (lmdb::is_disk_full(rc)) return refused(AppendOutcome::disk_full, why);
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
  lmdb::Txn txn = begin_write();
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

ReadResult BufferStore::read(Lane lane, uint64_t after_seq, size_t max_records, size_t max_bytes) {
  ReadResult out;
  if (after_seq == UINT64_MAX || max_records == 0) return out;
  std::vector<uint64_t> corrupt;
  {
    lmdb::Txn txn(*env_, true);
    lmdb::Cursor cursor(txn, lane_dbs_[index(lane)], where(lane));
    rf::Key start(after_seq + 1);
    MDB_val key = start.val(), value;
    size_t bytes = 0;
    for (bool more = cursor.get(key, value, MDB_SET_RANGE); more && out.records.size() < max_records;
         more = cursor.get(key, value, MDB_NEXT)) {
      auto seq = rf::seq_of(key);
      if (!seq) throw StoreError("malformed key in " + where(lane), MDB_CORRUPTED);
      auto header = rf::verify(*seq, value);
      if (!header) {
        corrupt.push_back(*seq);
        continue;
      }
      size_t size = value.mv_size - rf::kHeaderSize;
      if (!out.records.empty() && bytes + size > max_bytes) break;
      StoredRecord r;
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
  }
  if (!corrupt.empty()) quarantine(lane, corrupt);
  out.quarantined = corrupt.size();
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
  Meta next = meta_;
  lmdb::Txn txn = begin_write();
  for (uint64_t seq : seqs) {
    rf::Key key(seq);
    MDB_val k = key.val(), value;
    int rc = mdb_get(txn.get(), lane_dbs_[index(lane)], &k, &value);
    if (rc == MDB_NOTFOUND) continue;
    lmdb::check(rc, "mdb_get", where(lane));
    uint64_t bytes = rf::accounted_bytes(value);
    QuarantineKey qkey(lane, seq);
    MDB_val qk = qkey.val();
    lmdb::check(mdb_put(txn.get(), quarantine_db_, &qk, &value, 0), "mdb_put",
                options_.dir.string() + " (quarantine)");
    lmdb::check(mdb_del(txn.get(), lane_dbs_[index(lane)], &k, nullptr), "mdb_del", where(lane));
    auto& counters = next.lanes[index(lane)];
    counters.records -= 1;
    counters.bytes -= std::min(bytes, counters.bytes);
    next.quarantined.records += 1;
    next.quarantined.bytes += bytes;
    spdlog::error("buffer {}: record {} failed its checksum; moved to quarantine", where(lane), seq);
  }
  lmdb::check(commit(txn, next), "mdb_txn_commit", where(lane) + " (quarantine)");
}

uint64_t BufferStore::ack(Lane lane, uint64_t through_seq) {
  Meta next = meta_;
  auto& counters = next.lanes[index(lane)];
  uint64_t freed = 0;
  lmdb::Txn txn = begin_write();
  {
    lmdb::Cursor cursor(txn, lane_dbs_[index(lane)], where(lane));
    MDB_val key, value;
    while (cursor.get(key, value, MDB_FIRST) && rf::seq_of(key).value_or(0) <= through_seq) {
      uint64_t bytes = rf::accounted_bytes(value);
      cursor.del();
      freed += bytes;
      counters.records -= 1;
      counters.bytes -= std::min(bytes, counters.bytes);
    }
  }
  if (freed == 0) return 0;
  lmdb::check(commit(txn, next), "mdb_txn_commit", where(lane) + " (ack)");
  compact_if_drained();
  return freed;
}

uint64_t BufferStore::purge(uint64_t query_id) {
  Meta next = meta_;
  uint64_t purged = 0;
  std::array<std::vector<uint64_t>, kLaneCount> corrupt;
  {
    lmdb::Txn txn = begin_write();
    for (size_t i = 0; i < kLaneCount; ++i) {
      Lane lane = static_cast<Lane>(i);
      lmdb::Cursor cursor(txn, lane_dbs_[i], where(lane));
      MDB_val key, value;
      for (bool more = cursor.get(key, value, MDB_FIRST); more;
           more = cursor.get(key, value, MDB_NEXT)) {  // after a delete, NEXT yields the successor
        uint64_t seq = rf::seq_of(key).value_or(0);
        auto header = rf::verify(seq, value);
        if (!header) corrupt[i].push_back(seq);
        if (!header || header->query_id != query_id) continue;
        uint64_t bytes = rf::accounted_bytes(value);
        cursor.del();
        next.lanes[i].records -= 1;
        next.lanes[i].bytes -= std::min(bytes, next.lanes[i].bytes);
        ++purged;
      }
    }
    if (purged)
      lmdb::check(commit(txn, next), "mdb_txn_commit", options_.dir.string() + " (purge)");
  }
  for (size_t i = 0; i < kLaneCount; ++i)
    if (!corrupt[i].empty()) quarantine(static_cast<Lane>(i), corrupt[i]);
  compact_if_drained();
  return purged;
}

StoreStats BufferStore::stats() const {
  StoreStats s;
  lmdb::Txn txn(*env_, true);
  for (size_t i = 0; i < kLaneCount; ++i) {
    s.lanes[i].live = meta_.lanes[i];
    lmdb::Cursor cursor(txn, lane_dbs_[i], where(static_cast<Lane>(i)));
    MDB_val key, value;
    for (bool more = cursor.get(key, value, MDB_FIRST); more;
         more = cursor.get(key, value, MDB_NEXT)) {
      if (auto header = rf::verify(rf::seq_of(key).value_or(0), value)) {
        s.lanes[i].oldest_created_ns = header->created_ns;
        break;
      }
    }
  }
  s.records = meta_.records();
  s.live_bytes = meta_.live_bytes();
  s.limit_bytes = options_.limit_bytes;
  s.quarantined = meta_.quarantined;
  s.next_seq = meta_.next_seq;
  s.file_bytes = file_size_or_zero(data_file());
  s.commits = commits_;
  s.compactions = compactions_;
  return s;
}

Verification BufferStore::verify() const {
  Verification v;
  lmdb::Txn txn(*env_, true);
  v.recomputed = rebuild_meta(txn);
  v.recomputed.next_seq = meta_.next_seq;
  MDB_val key, value;
  for (size_t i = 0; i < kLaneCount; ++i) {
    lmdb::Cursor cursor(txn, lane_dbs_[i], where(static_cast<Lane>(i)));
    for (bool more = cursor.get(key, value, MDB_FIRST); more;
         more = cursor.get(key, value, MDB_NEXT))
      if (!rf::verify(rf::seq_of(key).value_or(0), value)) ++v.corrupt;
  }
  v.meta_matches = v.recomputed.lanes == meta_.lanes &&
                   v.recomputed.quarantined == meta_.quarantined;
  return v;
}

// LMDB never shrinks its file. Once every lane is empty, a compacting copy
// (which carries the meta record and so the seq counter) replaces it.
void BufferStore::compact_if_drained() {
  if (meta_.records() != 0) return;
  uint64_t before = file_size_or_zero(data_file());
  if (before <= options_.compact_threshold_bytes) return;
  fs::path tmp = options_.dir / kCompactDir;
  try {
    fs::remove_all(tmp);
    fs::create_directory(tmp);
    lmdb::check(mdb_env_copy2(env_->get(), tmp.c_str(), MDB_CP_COMPACT), "mdb_env_copy2",
                tmp.string());
    if (options_.sync == SyncPolicy::full) fsync_path(tmp / kDataFile);
  } catch (const std::exception& e) {
    spdlog::warn("buffer {}: compaction skipped: {}", options_.dir.string(), e.what());
    std::error_code ec;
    fs::remove_all(tmp, ec);
    return;
  }
  env_.reset();
  std::error_code ec;
  fs::rename(tmp / kDataFile, data_file(), ec);  // atomic: the old file or the new, never neither
  if (!ec && options_.sync == SyncPolicy::full) fsync_path(options_.dir);
  fs::remove_all(tmp);
  open_env();
  if (ec) {
    spdlog::warn("buffer {}: compaction not applied: {}", options_.dir.string(), ec.message());
    return;
  }
  ++compactions_;
  spdlog::info("buffer {}: compacted {} -> {} bytes", options_.dir.string(), before,
               file_size_or_zero(data_file()));
}

}  // namespace outpost::persistence
