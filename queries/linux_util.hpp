#pragma once
// What the Linux plugins share (linux_proc.cpp, linux_files.cpp, netstat.cpp):
// directories that close themselves (descriptors: kj::AutoCloseFd), bounded reads, strict
// number parsing, a line reader that streams a file in bounded slices, and
// /proc's processes and the sockets they hold.

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include <kj/io.h>

#include "persistence/files.hpp"
#include "queries/plugin.hpp"

namespace outpost::vql {

void add_linux_proc_plugins(Registry& registry);
void add_linux_file_plugins(Registry& registry);

// Where a file plugin's argument points (accessor=): a file ("file",
// "auto" or none: on Linux auto is file), or, where the plugin allows it,
// the text itself ("data") or a file seen as Velociraptor's "ext4" accessor
// sees it (file_info.cpp). Anything else is a QueryError naming it.
enum class Accessor { file, data, ext4, process };
inline const char* accessor_name(Accessor a) {
  switch (a) {
    case Accessor::file: return "file";
    case Accessor::data: return "data";
    case Accessor::ext4: return "ext4";
    case Accessor::process: return "process";
  }
  return "?";
}
inline Accessor accessor_of(const Args& args, std::initializer_list<Accessor> also) {
  auto accessor = args.string("accessor").value_or("auto");
  if (accessor == "auto" || accessor == "file" || accessor.empty()) return Accessor::file;
  std::string allowed = "file, auto";
  for (Accessor a : also) {
    if (accessor == accessor_name(a)) return a;
    allowed += std::string(", ") + accessor_name(a);
  }
  args.fail("accessor", "\"" + accessor + "\" is not supported: " + allowed);
}

// accessor="process": a process's address space, named "/PID" (or "PID");
// nullopt for any other name.
std::optional<int64_t> process_of(const std::string& name);
// `<proc>/stat`'s btime, in seconds since the epoch; nullopt without one, or
// with one below 0 or from 2^32 on (its nanoseconds would not fit).
std::optional<int64_t> boot_time(const std::filesystem::path& proc);
// The readable mappings of process `pid` (the "r" regions of its maps, but
// [vsyscall], which /proc/PID/mem cannot read), in address order; nullopt
// when its maps cannot be read (gone, or not ours to read).
std::optional<std::vector<MemoryRange>> readable_ranges(const Paths& paths, int64_t pid);

// The filesystem type of each device seen (file_info.cpp), by statfs.
class FsTypes {
 public:
  std::string of(const std::string& path, dev_t dev);  // "" when statfs fails

 private:
  std::map<dev_t, std::string> names_;
};

// A file's row as glob() and stat() give it (file_info.cpp); `st` from lstat.
Row file_info_row(const std::string& path, std::string_view name, const struct stat& st, FsTypes& fs_types);
// The same through the "ext4" accessor: nullopt for a file that is not on an
// ext2/3/4 filesystem (that accessor sees only those), and Data as
// Velociraptor's ext4 accessor gives it: {Inode, Uid, Gid, Flags}, Flags the
// inode's flag names (FS_IOC_GETFLAGS), present only when there are some.
std::optional<Row> ext4_info_row(const std::string& path, std::string_view name, const struct stat& st,
                                 FsTypes& fs_types);

inline std::string errno_message(int error) { return std::generic_category().message(error); }

// `clock`'s time now, in ns.
inline int64_t clock_ns(clockid_t clock) {
  timespec ts{};
  ::clock_gettime(clock, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// O_NONBLOCK because a query may name a FIFO: opening must not hang the
// worker (reads then fail with EAGAIN, reported as the file's error). It
// changes nothing for regular files.
inline kj::AutoCloseFd open_read(const std::string& path) {
  if (path.find('\0') != std::string::npos) {  // the kernel would open a shorter path
    errno = EINVAL;
    return kj::AutoCloseFd();
  }
  return kj::AutoCloseFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
}

// A file a query names may be on FUSE or NFS, whose close() can fail: its
// owner closes it with close_file, not with kj::AutoCloseFd's destructor.
using persistence::close_file;
using persistence::write_all;

inline ssize_t read_retry(int fd, char* buf, size_t size) {
  ssize_t n;
  do n = ::read(fd, buf, size);
  while (n < 0 && errno == EINTR);
  return n;
}

// A whole file, up to `limit` bytes; nullopt (errno set) when it cannot be opened.
inline std::optional<std::string> read_whole_file(const std::string& path, size_t limit) {
  kj::AutoCloseFd fd = open_read(path);
  if (fd == nullptr) return std::nullopt;
  std::string text;
  char buf[65536];
  for (ssize_t n; text.size() < limit && (n = read_retry(fd.get(), buf, std::min(sizeof buf, limit - text.size()))) > 0;)
    text.append(buf, static_cast<size_t>(n));
  close_file(fd);  // read: a close error adds nothing
  return text;
}

// Why an open file would be read without end or not at all by a plugin that
// reads files to their end, or "" for a regular file (or a directory, whose
// read fails with its own error): a device (/dev/zero never ends), a FIFO, a
// socket.
inline std::string not_a_finite_file(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return errno_message(errno);
  if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) return "";
  const char* kind = S_ISCHR(st.st_mode) ? "a character device" : S_ISBLK(st.st_mode) ? "a block device"
                     : S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISSOCK(st.st_mode) ? "a socket" : "a special file";
  return std::string(kind) + ", not a regular file (it may never end)";
}

struct DirCloser {
  void operator()(DIR* dir) const { ::closedir(dir); }
};
using DirPtr = std::unique_ptr<DIR, DirCloser>;

// A small file (/proc/<pid>/stat, os-release) whole, up to `max` bytes;
// nullopt when it cannot be opened or read (a process that just exited).
inline std::optional<std::string> read_small_file(const std::string& path, size_t max = 64 << 10) {
  kj::AutoCloseFd fd = open_read(path);
  if (fd == nullptr) return std::nullopt;
  std::string data;
  while (data.size() < max) {
    size_t old = data.size();
    data.resize(std::min(max, old + 4096));
    ssize_t n = read_retry(fd.get(), data.data() + old, data.size() - old);
    if (n < 0) {
      close_file(fd);
      return std::nullopt;
    }
    data.resize(old + static_cast<size_t>(n));
    if (n == 0) break;
  }
  close_file(fd);  // read: a close error adds nothing
  return data;
}

// The whole of `s` as a number, or nullopt (no sign for unsigned types).
template <typename T>
std::optional<T> parse_number(std::string_view s, int base = 10) {
  T value{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value, base);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return value;
}

// Fields separated by runs of spaces and tabs.
inline std::vector<std::string_view> split_ws(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (true) {
    i = s.find_first_not_of(" \t", i);
    if (i == std::string_view::npos) return out;
    size_t end = std::min(s.find_first_of(" \t", i), s.size());
    out.push_back(s.substr(i, end - i));
    i = end;
  }
}

// Fields separated by exactly one `sep` each, empty fields kept.
inline std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (size_t start = 0;;) {
    size_t end = s.find(sep, start);
    out.push_back(s.substr(start, end == std::string_view::npos ? end : end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

// The numeric entries of <proc>, one directory entry per call of next().
class PidScanner {
 public:
  enum class Result { pid, other, end };
  explicit PidScanner(const std::filesystem::path& proc) : dir_(::opendir(proc.c_str())), error_(dir_ ? 0 : errno) {}
  int error() const { return error_; }  // of opening <proc>
  Result next(int64_t& pid) {
    if (!dir_) return Result::end;
    dirent* entry = ::readdir(dir_.get());
    if (!entry) {
      dir_.reset();
      return Result::end;
    }
    auto number = parse_number<int64_t>(entry->d_name);
    if (!number || *number <= 0) return Result::other;
    pid = *number;
    return Result::pid;
  }

 private:
  DirPtr dir_;
  int error_;
};

// Socket inode -> every (pid, fd) holding it, in /proc's directory order,
// from the `socket:[inode]` links of <proc>/<pid>/fd (scan() is in
// linux_proc.cpp); netstat() and connections() read it.
class SocketHolders {
 public:
  struct Holder {
    int64_t pid = 0, fd = 0;
  };
  explicit SocketHolders(const std::filesystem::path& proc) : proc_(proc), pids_(proc) {}
  int error() const { return pids_.error(); }  // of opening <proc>
  // Reads up to `ops` directory entries or links; true when all are read.
  bool scan(int ops);
  // The holders of socket `inode`, in the order found; nullptr when none was.
  const std::vector<Holder>* find(uint64_t inode) const {
    auto it = holders_.find(inode);
    return it == holders_.end() ? nullptr : &it->second;
  }

 private:
  std::filesystem::path proc_;
  PidScanner pids_;
  DirPtr fds_;
  int64_t pid_ = 0;
  std::unordered_map<uint64_t, std::vector<Holder>> holders_;
};

// Streams a file's lines in bounded slices: a caller calls new_slice() at
// the start of each RowStream::next and stops at Result::again, so no call
// reads more than about kSliceBytes however long the lines are.
class LineReader {
 public:
  // A longer line is cut to its first kMaxLine bytes (the rest up to the
  // newline is dropped): the buffer, and a row, stay bounded whatever the file.
  static constexpr size_t kMaxLine = size_t{1} << 20;
  static constexpr size_t kChunk = size_t{256} << 10;
  static constexpr size_t kSliceBytes = size_t{1} << 20;

  enum class Result { line, again, end };

  LineReader() = default;
  LineReader(LineReader&&) = default;
  LineReader& operator=(LineReader&&) = default;
  ~LineReader() noexcept { close_file(fd_); }  // a file the query named

  // 0, or the errno of the failed open.
  int open(const std::string& path) {
    fd_ = open_read(path);
    return fd_ == nullptr ? errno : 0;
  }
  // ::not_a_finite_file of the open file.
  std::string not_a_finite_file() const;
  void new_slice() { slice_read_ = 0; }
  // The errno of a failed read(); the reader then ends.
  int error() const { return error_; }

  // A line without its '\n' (a last line without one included).
  Result next(std::string& line) {
    while (true) {
      size_t nl = buf_.find('\n', pos_);
      if (nl != std::string::npos) {
        bool emit = !discarding_;
        if (emit) line.assign(buf_, pos_, std::min(nl - pos_, kMaxLine));
        pos_ = nl + 1;
        discarding_ = false;
        if (emit) return Result::line;
        continue;
      }
      size_t pending = buf_.size() - pos_;
      if (!discarding_ && pending >= kMaxLine) {
        line.assign(buf_, pos_, kMaxLine);
        discarding_ = true;
        buf_.clear();
        pos_ = 0;
        return Result::line;
      }
      if (discarding_) {
        buf_.clear();
        pos_ = 0;
        pending = 0;
      }
      if (eof_) {
        if (pending == 0) return Result::end;
        line.assign(buf_, pos_, pending);
        buf_.clear();
        pos_ = 0;
        return Result::line;
      }
      if (slice_read_ >= kSliceBytes) return Result::again;
      fill();
    }
  }

 private:
  void fill() {
    buf_.erase(0, pos_);
    pos_ = 0;
    size_t old = buf_.size();
    buf_.resize(old + kChunk);
    ssize_t n = fd_ == nullptr ? 0 : read_retry(fd_.get(), buf_.data() + old, kChunk);
    if (n < 0) error_ = errno;
    if (n <= 0) eof_ = true;
    buf_.resize(old + static_cast<size_t>(std::max<ssize_t>(n, 0)));
    slice_read_ += kChunk;  // a read that returned little still counts as work
  }

  kj::AutoCloseFd fd_;
  std::string buf_;
  size_t pos_ = 0;
  size_t slice_read_ = 0;
  bool eof_ = false;
  bool discarding_ = false;
  int error_ = 0;
};

inline std::string LineReader::not_a_finite_file() const { return vql::not_a_finite_file(fd_.get()); }

// Rows parsed from a file's lines, streamed; a line the parser refuses is
// skipped (malformed input is not fatal), a failed read is.
class LineRowStream : public RowStream {
 public:
  using Parser = std::function<std::optional<Row>(std::string_view line)>;
  // `what` prefixes the error of a failed read: "parse_lines(): /x".
  LineRowStream(LineReader reader, Parser parse, std::string what)
      : reader_(std::move(reader)), parse_(std::move(parse)), what_(std::move(what)) {}

  Step next(std::vector<Row>& out, size_t budget) override {
    reader_.new_slice();
    std::string line;
    for (size_t added = 0; added < budget;) {
      switch (reader_.next(line)) {
        case LineReader::Result::line:
          if (auto row = parse_(line)) {
            out.push_back(std::move(*row));
            ++added;
          }
          break;
        case LineReader::Result::again:
          return Step::more();
        case LineReader::Result::end:
          if (reader_.error()) throw QueryError(what_ + ": " + errno_message(reader_.error()));
          return Step::done();
      }
    }
    return Step::more();
  }

 private:
  LineReader reader_;
  Parser parse_;
  std::string what_;
};

// Opens `path` for a LineRowStream, or throws "<what>: cannot open <path>: <why>",
// `what` naming the plugin and argument: "parse_lines(): filename". Only a
// regular file is read (a device like /dev/zero would never end).
inline std::unique_ptr<RowStream> line_rows(const std::string& what, const std::string& path,
                                            LineRowStream::Parser parse) {
  LineReader reader;
  if (int error = reader.open(path))
    throw QueryError(what + ": cannot open " + path + ": " + errno_message(error));
  if (auto why = reader.not_a_finite_file(); !why.empty()) throw QueryError(what + ": " + path + ": " + why);
  return std::make_unique<LineRowStream>(std::move(reader), std::move(parse), what + ": " + path);
}

// As line_rows, but a file that cannot be opened is logged (a warning) and
// gives no rows, as Velociraptor's parsers do: the query goes on.
std::unique_ptr<RowStream> logged_line_rows(const std::string& what, const std::string& path,
                                            LineRowStream::Parser parse);

}  // namespace outpost::vql
