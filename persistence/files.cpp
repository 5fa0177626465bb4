#include "persistence/files.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "persistence/errors.hpp"

namespace outpost::persistence {
namespace fs = std::filesystem;

namespace {
[[noreturn]] void fail_errno(const std::string& what, const fs::path& path, int err = errno) {
  throw StoreError(what + " " + path.string() + ": " + std::strerror(err), err);
}

const char* kFloorMagic = "outpost-seq-floor-v1";
const char* kStateMagic = "outpost-state-v1";

// Replaces dir/name with `text`, durably: temp file, fsync, rename, fsync dir.
void write_atomically(const fs::path& dir, const std::string& name, const std::string& text) {
  fs::path tmp = dir / (name + ".tmp"), final_path = dir / name;
  kj::AutoCloseFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (fd == nullptr) fail_errno("cannot create", tmp);
  int error = write_all(fd, text.data(), text.size());
  if (!error && ::fsync(fd) != 0) error = errno;
  if (int closed = close_file(fd); !error) error = closed;  // a failed close is a failed write (NFS)
  if (error) fail_errno("cannot write", tmp, error);
  if (::rename(tmp.c_str(), final_path.c_str()) != 0) fail_errno("cannot rename into", final_path);
  fsync_path(dir);
}
}  // namespace

void fsync_path(const fs::path& path) {
  kj::AutoCloseFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd == nullptr) fail_errno("cannot open for fsync", path);
  if (::fsync(fd) != 0) fail_errno("fsync failed for", path);
}

namespace {

// The owner named in the lock file has exited (a kill -9): a process it had
// forked may still hold the flock for a moment (recovery.cpp's check child,
// until its parent-death signal ends it).
bool owner_is_gone(const std::string& pid) {
  char* end = nullptr;
  long n = std::strtol(pid.c_str(), &end, 10);
  return n > 0 && end && *end == '\0' && ::kill(static_cast<pid_t>(n), 0) != 0 && errno == ESRCH;
}

// Takes the flock within about two seconds, or leaves errno as flock set it.
bool flock_soon(int fd) {
  for (int i = 0; i < 200; ++i) {
    ::usleep(10000);
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return true;
    if (errno != EWOULDBLOCK) return false;
  }
  return false;
}

}  // namespace

DirLock::DirLock(const fs::path& dir) : path_(dir / "LOCK") {
  const fs::path& path = path_;
  fd_ = kj::AutoCloseFd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (fd_ == nullptr) fail_errno("cannot open lock file", path);
  char content[512] = {};
  ssize_t n = ::pread(fd_, content, sizeof content - 1, 0);
  std::string old = n > 0 ? std::string(content, strnlen(content, n)) : "";
  std::string pid = old.substr(0, old.find('\n'));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0 && !(errno == EWOULDBLOCK && owner_is_gone(pid) && flock_soon(fd_))) {
    int err = errno;
    if (pid.empty()) pid = "unknown";
    if (err == EWOULDBLOCK)
      throw StoreLocked("directory " + dir.string() + " is in use by process " + pid + " (lock " +
                            path.string() + "); only one process may own it",
                        err);
    errno = err;
    fail_errno("cannot lock", path);
  }
  if (auto nl = old.find('\n'); nl != std::string::npos) note_at_open_ = old.substr(nl + 1);
  pid_line_ = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid_line_.data(), pid_line_.size(), 0) < 0) {
    fail_errno("cannot write lock file", path);
  }
}

DirLock::~DirLock() = default;

void DirLock::write_note(const std::string& note) {
  std::string content = pid_line_ + note;
  if (::pwrite(fd_, content.data(), content.size(), 0) != static_cast<ssize_t>(content.size()) ||
      ::ftruncate(fd_, content.size()) != 0 || ::fdatasync(fd_) != 0)
    fail_errno("cannot write lock file", path_);
}

std::optional<uint64_t> read_seq_floor(const fs::path& dir) {
  std::ifstream in(dir / "SEQ_FLOOR");
  std::string magic;
  uint64_t floor = 0, sum = 0;
  if (!(in >> magic >> floor >> sum) || magic != kFloorMagic) return std::nullopt;
  if (sum != XXH3_64bits(&floor, sizeof floor)) return std::nullopt;
  return floor;
}

void write_seq_floor(const fs::path& dir, uint64_t floor) {
  std::ostringstream text;
  text << kFloorMagic << ' ' << floor << ' ' << XXH3_64bits(&floor, sizeof floor) << '\n';
  write_atomically(dir, "SEQ_FLOOR", text.str());
}

std::optional<FileIdentity> identity_of(const fs::path& file) {
  struct stat st;
  if (::stat(file.c_str(), &st) != 0) return std::nullopt;
  FileIdentity id;
  id.size = static_cast<uint64_t>(st.st_size);
  id.mtime_ns = static_cast<uint64_t>(st.st_mtim.tv_sec) * 1000000000u + st.st_mtim.tv_nsec;
  id.inode = st.st_ino;
  return id;
}

std::optional<CloseState> parse_close_state(const std::string& note) {
  std::istringstream in(note);
  std::string magic, kind, end;
  if (!(in >> magic >> kind) || magic != kStateMagic) return std::nullopt;
  CloseState s;
  if (kind == "open") {
    if (!(in >> s.unclean_opens >> end) || end != "end") return std::nullopt;
    return s;
  }
  if (kind != "clean" ||
      !(in >> s.data.size >> s.data.mtime_ns >> s.data.inode >> s.records >> end) || end != "end")
    return std::nullopt;
  s.clean = true;
  return s;
}

std::string format_close_state(const CloseState& s) {
  std::ostringstream text;
  text << kStateMagic << ' ';
  if (s.clean)
    text << "clean " << s.data.size << ' ' << s.data.mtime_ns << ' ' << s.data.inode << ' '
         << s.records;
  else
    text << "open " << s.unclean_opens;
  text << " end\n";
  return text.str();
}

}  // namespace outpost::persistence
