#pragma once
// Small file-system pieces: the store's besides LMDB, and close_file and
// write_all for every writer of a file (the links, the export, the queries).

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include <kj/io.h>

namespace outpost::persistence {

void fsync_path(const std::filesystem::path& path);  // a file or a directory

// Closes `fd` now: 0, or the errno of a failed close (errno is set too).
// kj::AutoCloseFd's destructor throws that error (its only other failure,
// EBADF, is a bug); an owner whose close may fail (a written file, a file on
// NFS or FUSE, whose errors come at close) closes with this and reports or
// drops the error instead.
inline int close_file(kj::AutoCloseFd& fd) {
  int raw = fd.release();
  return raw >= 0 && ::close(raw) != 0 ? errno : 0;
}

// All of `data` written to `fd`, retrying short writes: 0, or the errno of
// the write that failed (ENOSPC for one that wrote nothing).
inline int write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? errno : ENOSPC;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return 0;
}

// Exclusive ownership of a buffer directory, held for the object's lifetime.
// flock is per open file description, so a second opener is refused even in
// the same process; the lock dies with the process, so kill -9 leaves none
// (the buffer check's child closes what it inherits at once).
//
// The lock file also carries a one-line note after the owner's pid (the
// store's CloseState): it takes no disk block of its own, so writing it
// works on a full disk. Not atomic: a torn note reads as none.
class DirLock {
 public:
  // Throws StoreLocked while another owner lives. When the owner the file
  // names has exited, waits up to ~2 s for a process it forked to let go.
  explicit DirLock(const std::filesystem::path& dir);
  ~DirLock();  // closing releases the flock
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

  const std::string& note_at_open() const { return note_at_open_; }  // the last owner's
  void write_note(const std::string& note);  // fsynced; throws StoreError

 private:
  kj::AutoCloseFd fd_;
  std::filesystem::path path_;
  std::string pid_line_;
  std::string note_at_open_;
};

// A lower bound for future sequence numbers, kept outside the LMDB file so it
// survives the file being set aside or deleted. Written rarely (once per
// reserved block), atomically (temp file + rename).
std::optional<uint64_t> read_seq_floor(const std::filesystem::path& dir);
void write_seq_floor(const std::filesystem::path& dir, uint64_t floor);  // always fsynced

// What identifies a data file's content without reading it: an edit, a copy
// or a truncation changes one of these.
struct FileIdentity {
  uint64_t size = 0, mtime_ns = 0, inode = 0;
  bool operator==(const FileIdentity& o) const {
    return size == o.size && mtime_ns == o.mtime_ns && inode == o.inode;
  }
};
std::optional<FileIdentity> identity_of(const std::filesystem::path& file);  // nothing if absent

// How the store's last owner ended, kept as the lock file's note: "open N"
// at each open (N opens in a row without a clean close), "clean" with the
// data file's identity and record count at a clean close.
struct CloseState {
  bool clean = false;
  unsigned unclean_opens = 0;  // when not clean
  FileIdentity data;           // when clean
  uint64_t records = 0;        // when clean
};
std::optional<CloseState> parse_close_state(const std::string& note);  // nothing if none or torn
std::string format_close_state(const CloseState& state);

}  // namespace outpost::persistence
