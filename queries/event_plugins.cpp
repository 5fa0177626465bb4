// Event plugins: clock(), tail(), watch_directory() (and, in
// process_events.cpp, watch_processes() and watch_mounts(); in
// kernel_events.cpp, watch_ebpf()). All but clock are shared sensors.

#include <sys/inotify.h>
#include <sys/stat.h>

#include <set>

#include "queries/engine.hpp"
#include "queries/event_plugins.hpp"
#include "queries/linux_util.hpp"
#include "queries/sensors.hpp"

namespace outpost::vql {

using namespace std::chrono_literals;

std::chrono::milliseconds period_arg(const Args& args, const char* name, std::chrono::milliseconds fallback) {
  auto v = args.find(name);
  if (!v) return fallback;
  auto seconds = v->number();
  if (!seconds || !(*seconds >= 0.01 && *seconds <= 86400)) args.fail(name, "expected seconds from 0.01 to 86400");
  return std::chrono::milliseconds(static_cast<int64_t>(*seconds * 1000));
}

void check_period(const Args& args) { period_arg(args, "period", 1s); }

namespace {
// A string argument, when given, is a string and not empty.
ArgCheck check_path(const char* name) {
  return [name](const Args& args) {
    if (auto path = args.string(name); path && path->empty()) args.fail(name, "must not be empty");
  };
}
}  // namespace

std::unique_ptr<RowStream> subscribe(const Args& args, Env& env, ScannerFactory make) {
  if (!env.sensors) throw QueryError(args.callee() + "(): event plugins run only in an agent (no sensors here)");
  return env.sensors->subscribe(sensor_key(args), make, env);
}

Value timestamp_now() { return Timestamp{schemas::now_ns()}; }

namespace {

// One row per period, per query: Time, Tick.
class ClockStream : public RowStream {
 public:
  explicit ClockStream(std::chrono::milliseconds period) : period_(period) {}
  Step next(std::vector<Row>& out, size_t budget) override {
    auto now = std::chrono::steady_clock::now();
    if (now < next_ || budget == 0) return Step::after(next_ - now);
    Row row;
    row.set("Time", timestamp_now());
    row.set("Tick", static_cast<int64_t>(++ticks_));
    out.push_back(std::move(row));
    next_ += period_;
    if (next_ < now) next_ = now + period_;  // paused meanwhile: no burst of catch-up ticks
    return Step::after(next_ - now);
  }

 private:
  std::chrono::milliseconds period_;
  std::chrono::steady_clock::time_point next_ = std::chrono::steady_clock::now();
  uint64_t ticks_ = 0;
};

// Follows a file like tail -F: from its end when it starts, across rotation
// (the old file is read to its end first) and truncation (read again from
// the start). Lines longer than 1 MiB are cut.
class TailScanner : public Scanner {
 public:
  static constexpr size_t kMaxLine = 1 << 20;
  static constexpr size_t kMaxScanBytes = 4 << 20;

  explicit TailScanner(std::string path) : path_(std::move(path)) {}
  ~TailScanner() noexcept override { close_file(fd_); }
  std::chrono::milliseconds period() const override { return 200ms; }

  void scan(std::vector<Row>& events) override {
    struct stat now;
    bool exists = ::stat(path_.c_str(), &now) == 0;
    if (!started_) {
      started_ = true;
      if (exists && open_current(now)) offset_ = static_cast<uint64_t>(now.st_size);  // from the end
      return;
    }
    if (fd_ != nullptr && exists && (now.st_ino != ino_ || now.st_dev != dev_)) {
      read_lines(events);  // rotated: what the old file still had, then the new one from its start
      close_file(fd_);
    }
    if (fd_ == nullptr && exists) {
      if (!open_current(now)) return;
      offset_ = 0;
      partial_.clear();
    }
    if (fd_ == nullptr) return;
    struct stat open_now;
    if (::fstat(fd_.get(), &open_now) == 0) {
      // Truncated: shorter than what was read, or as long but written
      // since (truncated and refilled between two scans; a mere touch
      // looks the same and reads the file again).
      uint64_t size = static_cast<uint64_t>(open_now.st_size);
      bool rewritten = size == offset_ && mtime_ns(open_now) != read_mtime_;
      if (size < offset_ || (rewritten && size > 0)) {
        offset_ = 0;
        partial_.clear();
      }
    }
    read_lines(events);
    // The mtime of what was just read: taken after the read, so that a write
    // racing it is not later mistaken for a rewrite.
    if (::fstat(fd_.get(), &open_now) == 0) read_mtime_ = mtime_ns(open_now);
  }

 private:
  static int64_t mtime_ns(const struct stat& st) { return st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec; }

  bool open_current(const struct stat& st) {
    fd_ = open_read(path_);
    ino_ = st.st_ino;
    dev_ = st.st_dev;
    read_mtime_ = mtime_ns(st);
    return fd_ != nullptr;
  }

  void read_lines(std::vector<Row>& events) {
    char buf[64 << 10];
    for (size_t total = 0; total < kMaxScanBytes;) {
      ssize_t n = ::pread(fd_.get(), buf, sizeof buf, static_cast<off_t>(offset_));
      if (n <= 0) return;
      offset_ += static_cast<uint64_t>(n);
      total += static_cast<size_t>(n);
      for (ssize_t i = 0; i < n; ++i) {
        if (buf[i] != '\n') {
          if (partial_.size() < kMaxLine) partial_ += buf[i];
          continue;
        }
        Row row;
        row.set("Line", std::move(partial_));
        events.push_back(std::move(row));
        partial_.clear();
      }
    }
  }

  std::string path_;
  bool started_ = false;
  kj::AutoCloseFd fd_;
  ino_t ino_ = 0;
  dev_t dev_ = 0;
  uint64_t offset_ = 0;
  int64_t read_mtime_ = 0;  // the file's mtime when it was last read to its end
  std::string partial_;
};

// inotify on a directory (and, recursively, the directories below it, new
// ones included). Events of one scan are coalesced per path and action.
class DirectoryScanner : public Scanner {
 public:
  static constexpr size_t kMaxWatches = 10000;
  static constexpr uint32_t kMask = IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_DELETE | IN_MOVED_FROM |
                                    IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;

  using Emit = std::function<void(const char* action, const std::string& path, bool dir)>;

  DirectoryScanner(std::string path, bool recursive) : root_(std::move(path)), recursive_(recursive) {
    fd_ = kj::AutoCloseFd(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    if (fd_ == nullptr) throw QueryError("watch_directory(): inotify: " + errno_message(errno));
    if (!watch(root_)) throw QueryError("watch_directory(): path: cannot watch " + root_ + ": " + errno_message(errno));
    root_wd_ = dirs_.begin()->first;
    if (recursive_) watch_below(root_, {});
  }
  std::chrono::milliseconds period() const override { return 100ms; }
  bool finished() const override { return finished_; }

  void scan(std::vector<Row>& events) override {
    alignas(inotify_event) char buf[64 << 10];
    std::set<std::pair<std::string, std::string>> seen;  // (action, path): coalesced
    Emit emit = [&](const char* action, const std::string& path, bool dir) {
      if (!seen.insert({action, path}).second) return;
      Row row;
      row.set("Time", timestamp_now());
      row.set("Action", action);
      row.set("FullPath", path);
      row.set("Name", path.substr(path.rfind('/') + 1));
      row.set("IsDir", dir);
      struct stat st;
      bool exists = ::lstat(path.c_str(), &st) == 0;
      row.set("Size", exists ? Value(static_cast<int64_t>(st.st_size)) : Value());
      row.set("Mtime", exists ? Value(Timestamp{st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec}) : Value());
      events.push_back(std::move(row));
    };
    for (int reads = 0; reads < 64; ++reads) {
      ssize_t n = ::read(fd_.get(), buf, sizeof buf);
      if (n <= 0) break;
      for (char* p = buf; p < buf + n;) {
        auto* e = reinterpret_cast<inotify_event*>(p);
        p += sizeof(inotify_event) + e->len;
        if (e->mask & IN_Q_OVERFLOW) {
          emit("overflow", root_, true);  // events were lost in the kernel: said, not hidden
          continue;
        }
        if ((e->mask & (IN_IGNORED | IN_UNMOUNT)) && e->wd == root_wd_) finished_ = true;
        if (e->mask & IN_IGNORED) {  // its watch is gone (directory deleted): frees a place under the limit
          dirs_.erase(e->wd);
          continue;
        }
        auto dir = dirs_.find(e->wd);
        if (dir == dirs_.end() || !e->len) continue;
        std::string path = dir->second + "/" + e->name;
        bool is_dir = e->mask & IN_ISDIR;
        if (e->mask & IN_CREATE) {
          emit("created", path, is_dir);
          if (is_dir && recursive_ && watch(path)) watch_below(path, emit);  // what came before the watch
        }
        if (e->mask & (IN_MODIFY | IN_CLOSE_WRITE)) emit("modified", path, is_dir);
        if (e->mask & IN_DELETE) emit("deleted", path, is_dir);
        if (e->mask & IN_MOVED_FROM) emit("moved_from", path, is_dir);
        if (e->mask & IN_MOVED_TO) {
          emit("moved_to", path, is_dir);
          if (is_dir && recursive_ && watch(path)) watch_below(path, {});
        }
      }
    }
  }

 private:
  bool watch(const std::string& dir) {
    if (dirs_.size() >= kMaxWatches) return false;
    int wd = inotify_add_watch(fd_.get(), dir.c_str(), kMask);
    if (wd < 0) return false;
    dirs_[wd] = dir;
    return true;
  }

  // Watches the directories below `dir`; reports what is in them as created
  // when `emit` is given (a directory made with files already in it).
  void watch_below(const std::string& dir, const Emit& emit) {
    std::error_code ec;
    for (std::filesystem::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      bool is_dir = it->is_directory(ec) && !it->is_symlink(ec);
      if (emit) emit("created", it->path().string(), is_dir);
      if (is_dir) watch(it->path().string());
      if (!emit && dirs_.size() >= kMaxWatches) break;  // nothing more to do below: do not walk a whole tree
    }
  }

  std::string root_;
  bool recursive_;
  kj::AutoCloseFd fd_;
  std::map<int, std::string> dirs_;
  int root_wd_ = -1;
  bool finished_ = false;
};

// tail(filename=): one TailScanner sensor per file, shared by its queries.
std::unique_ptr<RowStream> make_tail(const Args& a, Env& env) {
  check_path("filename")(a);
  auto path = required_string(a, "filename");
  return subscribe(a, env, [path] { return std::make_unique<TailScanner>(path); });
}

}  // namespace

std::unique_ptr<Scanner> tail_scanner(std::string path) { return std::make_unique<TailScanner>(std::move(path)); }

void add_event_plugins(Registry& r) {
  r.add(PluginSpec{"clock", "A row (Time, Tick) every period.",
                   {{"period", "seconds", false, "0.01 to 86400, default 1"}}, true,
                   [](const Args& a, Env&) {
                     return std::make_unique<ClockStream>(period_arg(a, "period", 1s));
                   }},
                check_period);
  r.add(PluginSpec{"tail", "Follows a file from its end, across rotation and truncation: a row (Line) per line.",
                   {{"filename", "string", true, ""}}, true, make_tail},
        check_path("filename"));
  r.add(PluginSpec{"watch_syslog",
                   "Follows log files from their end, across rotation and truncation: a row (Line) per line "
                   "(one shared tail() sensor per file).",
                   {{"filename", "string or list of strings", true, ""},
                    {"accessor", "string", false, "file or auto"},
                    {"buffer_size", "int", false, "accepted; lines are cut at 1 MiB"}},
                   true,
                   [](const Args& a, Env& env) -> std::unique_ptr<RowStream> {
                     accessor_of(a, {});
                     std::vector<std::unique_ptr<RowStream>> streams;
                     for (auto& path : a.strings("filename"))  // the same sensor as tail(filename=path)
                       streams.push_back(make_tail(Args("tail", {{"filename", path}}), env));
                     if (streams.empty()) a.fail("filename", "no file");
                     return merge_streams(std::move(streams));
                   }});
  r.add(PluginSpec{"watch_directory",
                   "Files created, modified, deleted and moved in a directory (inotify): Time, Action, "
                   "FullPath, Name, IsDir, Size, Mtime. Ends when the directory goes away.",
                   {{"path", "string", true, ""}, {"recursive", "bool", false, "default false"}}, true,
                   [](const Args& a, Env& env) {
                     check_path("path")(a);
                     auto path = required_string(a, "path");
                     bool recursive = a.boolean("recursive").value_or(false);
                     return subscribe(a, env, [path, recursive] {
                       return std::make_unique<DirectoryScanner>(path, recursive);
                     });
                   }},
        [](const Args& a) {
          check_path("path")(a);
          a.boolean("recursive");
        });
  add_process_event_plugins(r);
  add_kernel_event_plugins(r);
}

}  // namespace outpost::vql
