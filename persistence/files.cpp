#include "persistence/files.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "persistence/errors.hpp"

namespace outpost::persistence {
namespace fs = std::filesystem;

namespace {
[[noreturn]] void fail_errno(const std::string& what, const fs::path& path) {
  int err = errno;
  throw StoreError(what + " " + path.string() + ": " + std::strerror(err), err);
}

const char* kFloorMagic = "outpost-seq-floor-v1";
}  // namespace

void fsync_path(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_errno("cannot open for fsync", path);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  errno = err;
  if (rc != 0) fail_errno("fsync failed for", path);
}

DirLock::DirLock(const fs::path& dir) {
  fs::path path = dir / "LOCK";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) fail_errno("cannot open lock file", path);
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    char owner[32] = {};
    ssize_t n = ::pread(fd_, owner, sizeof owner - 1, 0);
    ::close(fd_);
    std::string pid = n > 0 ? std::string(owner, strnlen(owner, n)) : "unknown";
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    if (err == EWOULDBLOCK)
      throw StoreLocked("directory " + dir.string() + " is in use by process " + pid + " (lock " +
                            path.string() + "); only one process may own it",
                        err);
    errno = err;
    fail_errno("cannot lock", path);
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
    int err = errno;
    ::close(fd_);
    errno = err;
    fail_errno("cannot write lock file", path);
  }
}

DirLock::~DirLock() { ::close(fd_); }  // closing releases the flock

std::optional<uint64_t> read_seq_floor(const fs::path& dir) {
  std::ifstream in(dir / "SEQ_FLOOR");
  std::string magic;
  uint64_t floor = 0, sum = 0;
  if (!(in >> magic >> floor >> sum) || magic != kFloorMagic) return std::nullopt;
  if (sum != XXH3_64bits(&floor, sizeof floor)) return std::nullopt;
  return floor;
}

void write_seq_floor(const fs::path& dir, uint64_t floor) {
  fs::path tmp = dir / "SEQ_FLOOR.tmp", final_path = dir / "SEQ_FLOOR";
  std::ostringstream text;
  text << kFloorMagic << ' ' << floor << ' ' << XXH3_64bits(&floor, sizeof floor) << '\n';
  std::string s = text.str();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) fail_errno("cannot create", tmp);
  bool ok = ::write(fd, s.data(), s.size()) == static_cast<ssize_t>(s.size()) &&
            ::fsync(fd) == 0;
  int err = errno;
  ::close(fd);
  errno = err;
  if (!ok) fail_errno("cannot write", tmp);
  if (::rename(tmp.c_str(), final_path.c_str()) != 0) fail_errno("cannot rename into", final_path);
  fsync_path(dir);
}

}  // namespace outpost::persistence
