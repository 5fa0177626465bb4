#pragma once
// Thin RAII over the LMDB C API: every return code is checked, and errors say
// which call failed on which file or sub-database.

#include <lmdb.h>

#include <cstdint>
#include <string>

#include "persistence/errors.hpp"

namespace outpost::persistence::lmdb {

[[noreturn]] void fail(int rc, const char* call, const std::string& where);
inline void check(int rc, const char* call, const std::string& where) {
  if (rc != MDB_SUCCESS) fail(rc, call, where);
}

bool is_disk_full(int rc);   // ENOSPC, EDQUOT, EFBIG, and EIO (LMDB's short write)
bool is_corruption(int rc);  // the file cannot be trusted

// Reads LMDB's two meta pages without mapping the file and returns why the
// file cannot be trusted (empty when it can, or when it does not exist yet).
// mdb_env_open trusts them: a bad page size, map size or last page makes it
// fail with ENOMEM or, worse, map past the end of the file (SIGBUS later).
std::string check_data_file(const std::string& path);

class Env {
 public:
  Env(const std::string& dir, unsigned flags, uint64_t map_size, unsigned max_dbs);
  ~Env();
  Env(const Env&) = delete;
  Env& operator=(const Env&) = delete;

  MDB_env* get() const { return env_; }
  const std::string& dir() const { return dir_; }
  MDB_envinfo info() const;
  unsigned page_size() const;
  // Where values read in a transaction may lie: inside the map, below the
  // last page in use. A damaged node size points outside; such a value must
  // never be read.
  bool in_map(const MDB_val& value) const;
  const char* map() const { return map_; }  // where the data file is mapped

 private:
  MDB_env* env_ = nullptr;
  std::string dir_;
  unsigned page_size_ = 0;
  const char* map_ = nullptr;
};

// Aborts on destruction unless committed.
class Txn {
 public:
  Txn(const Env& env, bool read_only);
  const Env& env() const { return *env_; }
  ~Txn();
  Txn(Txn&& other) noexcept : txn_(other.txn_) { other.txn_ = nullptr; }
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;

  MDB_txn* get() const { return txn_; }
  // Returns the LMDB code instead of throwing: the caller maps disk-full and
  // map-full to results. The transaction is finished either way.
  int commit();

 private:
  MDB_txn* txn_ = nullptr;
  const Env* env_;
};

class Cursor {
 public:
  Cursor(const Txn& txn, MDB_dbi dbi, const std::string& where);
  ~Cursor();
  Cursor(const Cursor&) = delete;
  Cursor& operator=(const Cursor&) = delete;

  // False at the end of the database (MDB_NOTFOUND); throws on real errors.
  bool get(MDB_val& key, MDB_val& value, MDB_cursor_op op);
  void del();
  MDB_cursor* get() const { return cursor_; }

 private:
  MDB_cursor* cursor_ = nullptr;
  std::string where_;
};

}  // namespace outpost::persistence::lmdb
