#pragma once
// Small file-system pieces the store needs besides LMDB.

#include <cstdint>
#include <filesystem>
#include <optional>

namespace outpost::persistence {

void fsync_path(const std::filesystem::path& path);  // a file or a directory

// Exclusive ownership of a buffer directory, held for the object's lifetime.
// flock is per open file description, so a second opener is refused even in
// the same process; the lock dies with the process, so kill -9 leaves none.
class DirLock {
 public:
  explicit DirLock(const std::filesystem::path& dir);  // throws StoreLocked
  ~DirLock();
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

 private:
  int fd_ = -1;
};

// A lower bound for future sequence numbers, kept outside the LMDB file so it
// survives the file being set aside or deleted. Written rarely (once per
// reserved block), atomically (temp file + rename).
std::optional<uint64_t> read_seq_floor(const std::filesystem::path& dir);
void write_seq_floor(const std::filesystem::path& dir, uint64_t floor);  // always fsynced

}  // namespace outpost::persistence
