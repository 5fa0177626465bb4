#include "persistence/lmdb.hpp"

#include <cerrno>

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

Env::Env(const std::string& dir, unsigned flags, uint64_t map_size, unsigned max_dbs) : dir_(dir) {
  check(mdb_env_create(&env_), "mdb_env_create", dir);
  int rc = mdb_env_set_mapsize(env_, map_size);
  if (rc == MDB_SUCCESS) rc = mdb_env_set_maxdbs(env_, max_dbs);
  if (rc == MDB_SUCCESS) rc = mdb_env_open(env_, dir.c_str(), flags, 0600);
  if (rc != MDB_SUCCESS) {
    mdb_env_close(env_);
    fail(rc, "mdb_env_open", dir);
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

Txn::Txn(const Env& env, bool read_only) {
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
