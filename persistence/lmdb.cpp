#include "persistence/lmdb.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <kj/io.h>

namespace outpost::persistence::lmdb {

void fail(int rc, const char* call, const std::string& where) {
  throw StoreError(std::string(call) + " failed for " + where + ": " + mdb_strerror(rc), rc);
}

// LMDB reports a short write (what a full file system usually gives first)
// as EIO, so EIO on a write joins the disk-full family.
bool is_disk_full(int rc) { return rc == ENOSPC || rc == EDQUOT || rc == EFBIG || rc == EIO; }

bool is_corruption(int rc) {
  return rc == MDB_INVALID || rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND ||
         rc == MDB_VERSION_MISMATCH || rc == MDB_PANIC;
}

namespace {

// LMDB 0.9 on 64-bit: a 16-byte page header, then the meta record.
struct MetaFields {
  uint32_t magic, version;
  uint64_t map_size, last_page, txnid;
  uint32_t page_size;  // kept in the free DB's md_pad
};
constexpr uint32_t kMetaMagic = 0xBEEFC0DE;
constexpr uint32_t kDataVersion = 1;

MetaFields meta_at(const unsigned char* page) {
  MetaFields m;
  std::memcpy(&m.magic, page + 16, 4);
  std::memcpy(&m.version, page + 20, 4);
  std::memcpy(&m.map_size, page + 32, 8);
  std::memcpy(&m.page_size, page + 40, 4);
  std::memcpy(&m.last_page, page + 136, 8);
  std::memcpy(&m.txnid, page + 144, 8);
  return m;
}

// mdb_env_info's me_mapaddr is only set for MDB_FIXEDMAP, so the map's
// address comes from the kernel's list of this process's mappings.
const char* find_map(const std::string& data_file) {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    auto slash = line.find('/');
    if (slash == std::string::npos || line.compare(slash, std::string::npos, data_file) != 0)
      continue;
    std::istringstream fields(line);
    std::string range, perms, offset;
    fields >> range >> perms >> offset;
    if (std::stoull(offset, nullptr, 16) != 0) continue;
    return reinterpret_cast<const char*>(std::stoull(range.substr(0, range.find('-')), nullptr, 16));
  }
  return nullptr;
}

}  // namespace

std::string check_data_file(const std::string& path) {
  kj::AutoCloseFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd == nullptr) return errno == ENOENT ? "" : path + ": " + std::strerror(errno);
  off_t size = ::lseek(fd, 0, SEEK_END);
  unsigned char first[160] = {};
  bool ok = size == 0 || ::pread(fd, first, sizeof first, 0) == static_cast<ssize_t>(sizeof first);
  std::string problem;
  if (size == 0) return "";  // LMDB initialises an empty file
  if (!ok) problem = "too short for an LMDB meta page";
  MetaFields m0 = meta_at(first);
  uint32_t psize = m0.page_size;
  if (problem.empty() && (psize < 512 || psize > 65536 || (psize & (psize - 1))))
    problem = "implausible page size " + std::to_string(psize);
  for (int i = 0; problem.empty() && i < 2; ++i) {
    unsigned char page[160];
    if (::pread(fd, page, sizeof page, off_t{i} * psize) != static_cast<ssize_t>(sizeof page)) {
      problem = "meta page " + std::to_string(i) + " missing";
      break;
    }
    MetaFields m = meta_at(page);
    if (m.magic != kMetaMagic || m.version != kDataVersion)
      problem = "meta page " + std::to_string(i) + " is not an LMDB 0.9 meta page";
    else if (m.map_size > (1ull << 46))
      problem = "meta page " + std::to_string(i) + " claims a map of " + std::to_string(m.map_size) + " bytes";
    else if ((m.last_page + 1) * psize > static_cast<uint64_t>(size))
      problem = "truncated: " + std::to_string(size) + " bytes, meta page " + std::to_string(i) +
                " needs " + std::to_string((m.last_page + 1) * psize);
  }
  return problem.empty() ? "" : path + " " + problem;
}

Env::Env(const std::string& dir, unsigned flags, uint64_t map_size, unsigned max_dbs) : dir_(dir) {
  check(mdb_env_create(&env_), "mdb_env_create", dir);
  int rc = mdb_env_set_mapsize(env_, map_size);
  if (rc == MDB_SUCCESS) rc = mdb_env_set_maxdbs(env_, max_dbs);
  if (rc == MDB_SUCCESS) rc = mdb_env_open(env_, dir.c_str(), flags, 0600);
  if (rc != MDB_SUCCESS) {
    mdb_env_close(env_);
    fail(rc, "mdb_env_open", dir);
  }
  page_size_ = page_size();
  std::error_code ec;
  map_ = find_map((std::filesystem::canonical(dir, ec) / "data.mdb").string());
  if (!map_) {
    mdb_env_close(env_);
    throw StoreError("cannot find the memory map of " + dir + "/data.mdb in /proc/self/maps");
  }
}

Env::~Env() { mdb_env_close(env_); }

MDB_envinfo Env::info() const {
  MDB_envinfo info;
  check(mdb_env_info(env_, &info), "mdb_env_info", dir_);
  return info;
}

unsigned Env::page_size() const {
  MDB_stat stat;
  check(mdb_env_stat(env_, &stat), "mdb_env_stat", dir_);
  return stat.ms_psize;
}

bool Env::in_map(const MDB_val& value) const {
  MDB_envinfo i = info();
  auto* begin = map_;
  auto* end = begin + (i.me_last_pgno + 1) * uint64_t{page_size_};
  auto* p = static_cast<const char*>(value.mv_data);
  return p >= begin && p <= end && value.mv_size <= static_cast<size_t>(end - p);
}

Txn::Txn(const Env& env, bool read_only) : env_(&env) {
  check(mdb_txn_begin(env.get(), nullptr, read_only ? MDB_RDONLY : 0, &txn_), "mdb_txn_begin",
        env.dir());
}

Txn::~Txn() {
  if (txn_) mdb_txn_abort(txn_);
}

int Txn::commit() {
  int rc = mdb_txn_commit(txn_);  // frees the transaction on failure too
  txn_ = nullptr;
  return rc;
}

Cursor::Cursor(const Txn& txn, MDB_dbi dbi, const std::string& where) : where_(where) {
  check(mdb_cursor_open(txn.get(), dbi, &cursor_), "mdb_cursor_open", where);
}

Cursor::~Cursor() { mdb_cursor_close(cursor_); }

bool Cursor::get(MDB_val& key, MDB_val& value, MDB_cursor_op op) {
  int rc = mdb_cursor_get(cursor_, &key, &value, op);
  if (rc == MDB_NOTFOUND) return false;
  check(rc, "mdb_cursor_get", where_);
  return true;
}

void Cursor::del() { check(mdb_cursor_del(cursor_, 0), "mdb_cursor_del", where_); }

}  // namespace outpost::persistence::lmdb
