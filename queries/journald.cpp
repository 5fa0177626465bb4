// parse_journald() and watch_journald(): systemd journal files read with
// libsystemd, each named file opened on its own (sd_journal_open_files_fd,
// never the live system journal), so that copied journals can be read.
// Rows as Velociraptor shapes them:
//   {System: {Seq, Timestamp, the "_" fields}, EventData: {the others}}
// or, with raw=TRUE, {Timestamp, every field as text}.
//
// watch_journald() polls its own sd_journal per query and file rather than
// being a shared sensor (sensors.hpp): a sensor copies events into bounded
// queues and drops what a slow query does not take, while here each query
// keeps its own place in the file, so the journal itself is the buffer and
// nothing is dropped, and no sensor thread runs. The cost is an open file
// per query and file, and a look at it every second.

#include <fcntl.h>
#include <sys/stat.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-journal.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <limits>

#include "queries/engine.hpp"
#include "queries/linux_util.hpp"

namespace outpost::vql {

namespace {

// What one entry may give: fields, bytes in all, bytes of a field (a
// compressed one is decompressed up to this; systemd's own default is 64 KiB).
constexpr int64_t kMaxFields = 1000;
constexpr size_t kMaxEntryBytes = size_t{16} << 20;
constexpr size_t kMaxFieldBytes = size_t{4} << 20;


using namespace std::chrono_literals;

// How often watch_journald() looks for new entries.
constexpr auto kPoll = 1s;

struct JournalCloser {
  void operator()(sd_journal* j) const { sd_journal_close(j); }
};
using JournalPtr = std::unique_ptr<sd_journal, JournalCloser>;

// A journal file open, and what fstat said of it when opened.
struct JournalFile {
  JournalPtr journal;
  struct stat st {};
};

// Opened through a descriptor of ours, so that `st` is the file read even
// if journald renames the path meanwhile (sd_journal_open_files would open
// the path again). libsystemd takes the descriptor given when it succeeds
// (closing it with the journal) and leaves it to us when it fails: it is
// given a duplicate, ours closed here.
JournalFile open_journal(const std::string& plugin, const std::string& path) {
  auto fail = [&](const std::string& why) { return QueryError(plugin + "(): " + path + ": " + why); };
  JournalFile f;
  kj::AutoCloseFd fd = open_read(path);
  if (fd == nullptr) throw fail(errno_message(errno));
  if (auto why = not_a_finite_file(fd.get()); !why.empty()) throw fail(why);
  int given = ::fstat(fd.get(), &f.st) == 0 ? ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0) : -1;
  if (given < 0) throw fail(errno_message(errno));
  sd_journal* j = nullptr;
  if (int r = sd_journal_open_files_fd(&j, &given, 1, 0); r < 0) {
    ::close(given);
    throw fail("not a journal file, or a truncated or corrupt one: " + errno_message(-r));
  }
  f.journal.reset(j);
  // Whole fields, as Velociraptor reads them: by default libsystemd may give
  // only the first 64 KiB of a compressed one.
  sd_journal_set_data_threshold(j, kMaxFieldBytes);
  close_file(fd);  // libsystemd reads through its duplicate
  return f;
}

// Go's strconv.ParseInt(s, 0, 64), with which Velociraptor's parser reads
// numbers: a sign, a 0x, 0o, 0b or 0 (octal) prefix, underscores between digits.
std::optional<int64_t> go_int(std::string_view s) {
  bool negative = !s.empty() && s[0] == '-';
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) s.remove_prefix(1);
  if (s.empty()) return std::nullopt;
  unsigned base = 10;
  bool digit_before = false;  // an underscore must follow a digit or a prefix
  if (s[0] == '0') {
    char p = s.size() >= 3 ? static_cast<char>(s[1] | 0x20) : 0;
    base = p == 'x' ? 16 : p == 'b' ? 2 : 8;
    s.remove_prefix(p == 'x' || p == 'b' || p == 'o' ? 2 : 1);
    digit_before = true;
  }
  uint64_t n = 0;
  for (char c : s) {
    if (c == '_') {
      if (!digit_before) return std::nullopt;
      digit_before = false;
      continue;
    }
    char l = static_cast<char>(c | 0x20);
    unsigned d = c >= '0' && c <= '9' ? unsigned(c - '0') : l >= 'a' && l <= 'z' ? unsigned(l - 'a' + 10) : 99;
    if (d >= base || n > (std::numeric_limits<uint64_t>::max() - d) / base) return std::nullopt;
    n = n * base + d;
    digit_before = true;
  }
  if (!digit_before) return std::nullopt;  // a trailing underscore
  constexpr uint64_t kMax = std::numeric_limits<int64_t>::max();
  if (n > kMax + (negative ? 1 : 0)) return std::nullopt;
  return negative ? static_cast<int64_t>(0 - n) : static_cast<int64_t>(n);
}

bool one_of(std::string_view field, std::initializer_list<std::string_view> names) {
  return std::find(names.begin(), names.end(), field) != names.end();
}

// The entry's sequence number: the i= of its cursor (sd_journal_get_seqnum
// came only with systemd 254); 0 if the cursor has none.
uint64_t seqnum(sd_journal* j) {
  char* text = nullptr;
  if (sd_journal_get_cursor(j, &text) < 0) return 0;
  std::string cursor(text);
  std::free(text);
  size_t at = cursor.find(";i=");
  if (at == std::string::npos) return 0;
  at += 3;
  return parse_number<uint64_t>(std::string_view(cursor).substr(at, cursor.find(';', at) - at), 16).value_or(0);
}

// The entry's time in microseconds; 0 when libsystemd refuses it as invalid
// (newer versions refuse 0 and times past the year 3000).
int64_t realtime_us(sd_journal* j, const std::string& what) {
  uint64_t usec = 0;
  int r = sd_journal_get_realtime_usec(j, &usec);
  if (r == -EBADMSG) return 0;
  if (r < 0) throw QueryError(what + ": " + errno_message(-r));
  return static_cast<int64_t>(usec);
}

// The current entry, at `us`, as Velociraptor's row (the file comment).
// `what` names the plugin and file in errors.
Row entry_row(sd_journal* j, int64_t us, bool raw, const std::string& what) {
  Timestamp time{static_cast<int64_t>(static_cast<uint64_t>(us) * 1000)};  // wraps as Go's
  Row row, system, data;
  int r;
  if (raw) {
    row.set("Timestamp", time);
  } else {
    system.set("Seq", Value(seqnum(j)));
    system.set("Timestamp", time);
  }
  const void* item = nullptr;
  size_t size = 0;
  sd_journal_restart_data(j);
  size_t bytes = 0;
  for (int64_t index = 0; (r = sd_journal_enumerate_data(j, &item, &size)) > 0; ++index) {
    // A hostile file's entry may name one big item many times, or hold
    // thousands of fields: the rest is left out, with a warning.
    if (index == kMaxFields || (bytes += size) > kMaxEntryBytes) {
      spdlog::warn("vql: {}: an entry with more than {} fields or {} bytes: the rest left out", what, kMaxFields,
                   kMaxEntryBytes);
      break;
    }
    std::string_view text(static_cast<const char*>(item), size);
    size_t eq = text.find('=');
    if (eq == std::string_view::npos) {  // journald writes none such; kept as Velociraptor keeps it
      (raw ? row : data).set("Item" + std::to_string(index), text);
      continue;
    }
    std::string field(text.substr(0, eq));
    std::string_view value = text.substr(eq + 1);
    if (raw) {
      row.set(std::move(field), value);
      continue;
    }
    Dict& to = !field.empty() && field[0] == '_' ? system : data;
    auto n = go_int(value);
    if (n && one_of(field, {"ERRONO", "CODE_LINE", "SYSLOG_FACILITY", "SYSLOG_PID", "TID", "PRIORITY", "_PID",
                            "_PPID", "_UID", "_EUID", "_FSUID", "_EGID", "_GID", "_AUDIT_LOGINUID",
                            "_AUDIT_SESSION", "_AUDIT_TYPE", "_AUDIT_ID", "_AUDIT_FIELD_SYSCALL",
                            "_AUDIT_FIELD_EXIT", "_AUDIT_FIELD_SUID", "_AUDIT_FIELD_SGID"})) {
      to.set(std::move(field), *n);
    } else if (int64_t ns; n && field == "SYSLOG_TIMESTAMP" && !__builtin_mul_overflow(*n, 1'000'000'000, &ns)) {
      to.set(std::move(field), Timestamp{ns});  // epoch seconds
    } else if (n && field == "_SOURCE_REALTIME_TIMESTAMP") {  // microseconds, wrapping as Go's
      system.set("SOURCE_REALTIME_TIMESTAMP", Timestamp{static_cast<int64_t>(static_cast<uint64_t>(*n) * 1000)});
    } else {
      to.set(std::move(field), value);
    }
  }
  if (r < 0) throw QueryError(what + ": " + errno_message(-r));
  if (raw) return row;
  row.set("System", std::move(system));
  row.set("EventData", std::move(data));
  return row;
}

// One file's entries in its order, from start to end, within the times.
class ParseStream : public RowStream {
 public:
  ParseStream(std::string path, bool raw, int64_t from_us, int64_t to_us)
      : path_(std::move(path)), what_("parse_journald(): " + path_), raw_(raw), from_us_(from_us), to_us_(to_us) {}

  // A file that cannot be read (missing, not a journal, corrupt) is a
  // warning in the log and no more rows from it, as in Velociraptor: the
  // artifacts' globs match rotated and half-written files, and the others
  // must still be read.
  Step next(std::vector<Row>& out, size_t budget) override {
    try {
      return read(out, budget);
    } catch (const QueryError& e) {
      spdlog::warn("vql: {}", e.what());
      file_ = JournalFile();
      return Step::done();
    }
  }

 private:
  Step read(std::vector<Row>& out, size_t budget) {
    if (!file_.journal) file_ = open_journal("parse_journald", path_);
    sd_journal* j = file_.journal.get();
    for (size_t read = 0; read < budget; ++read) {
      int r = sd_journal_next(j);
      if (r < 0) throw QueryError(what_ + ": " + errno_message(-r));
      if (r == 0) {
        file_ = JournalFile();  // closed as soon as read
        return Step::done();
      }
      int64_t t = realtime_us(j, what_);
      if (t >= from_us_ && t <= to_us_) out.push_back(entry_row(j, t, raw_, what_));
    }
    return Step::more();
  }

  std::string path_, what_;
  bool raw_;
  int64_t from_us_, to_us_;
  JournalFile file_;
};

// One file's entries added after the stream was made. When the path comes
// to name another file (journald rotated it), the rest of the old file is
// read, then the new one from its start.
class WatchStream : public RowStream {
 public:
  WatchStream(std::string path, bool raw)
      : path_(std::move(path)), what_("watch_journald(): " + path_), raw_(raw),
        file_(open_journal("watch_journald", path_)) {
    // At the last entry, so that the next one read is the first added; an
    // empty file is read from its start.
    sd_journal* j = file_.journal.get();
    int r = sd_journal_seek_tail(j);
    if (r >= 0) r = sd_journal_previous(j);
    if (r == 0) r = sd_journal_seek_head(j);
    if (r < 0) throw QueryError(what_ + ": " + errno_message(-r));
  }

  Step next(std::vector<Row>& out, size_t budget) override {
    for (size_t read = 0; read < budget;) {
      sd_journal* j = file_.journal.get();
      int r = sd_journal_next(j);
      if (r < 0) throw QueryError(what_ + ": " + errno_message(-r));
      if (r > 0) {
        out.push_back(entry_row(j, realtime_us(j, what_), raw_, what_));
        ++read;
        continue;
      }
      if (!rotated_) {
        struct stat st;
        if (::stat(path_.c_str(), &st) != 0 || (st.st_ino == file_.st.st_ino && st.st_dev == file_.st.st_dev))
          return Step::after(kPoll);
        rotated_ = true;  // read the old file once more: it may have grown before it was renamed
        continue;
      }
      try {
        file_ = open_journal("watch_journald", path_);
      } catch (const QueryError&) {
        return Step::after(kPoll);  // the new file is not there yet, or not yet a journal: next time
      }
      rotated_ = false;
    }
    return Step::more();
  }

 private:
  std::string path_, what_;
  bool raw_;
  JournalFile file_;
  bool rotated_ = false;
};

// accessor=: a journal is read from a file; "data" (text given inline) cannot hold one.
void check_accessor(const Args& args) {
  if (args.string("accessor").value_or("") == "data")
    args.fail("accessor", "a journal is a binary file, not text: \"data\" is not supported (file or auto)");
  accessor_of(args, {});
}

// start_time=, end_time=: what timestamp(epoch=) takes; nullopt when absent.
std::optional<int64_t> time_arg(const Args& args, const std::string& name) {
  auto v = args.find(name);
  if (!v) return std::nullopt;
  if (auto t = v->as_timestamp()) return t->ns;
  Value t;
  try {
    Env env;
    t = default_registry().function("timestamp")->call(Args("timestamp", {{"epoch", *v}}), env);
  } catch (const QueryError&) {
  }
  if (!t.as_timestamp())
    args.fail(name, std::string("expected a time (RFC 3339 or epoch seconds), got ") + type_name(*v));
  return t.as_timestamp()->ns;
}

void check_parse(const Args& args) {
  check_accessor(args);
  args.boolean("raw");
  time_arg(args, "start_time");
  time_arg(args, "end_time");
}

void check_watch(const Args& args) {
  check_accessor(args);
  args.boolean("raw");
}

const ArgSpec kFilename{"filename", "string or list of strings", true, "journal files, read each in turn"};
const ArgSpec kAccessor{"accessor", "string", false, "file or auto"};
const ArgSpec kRaw{"raw", "bool", false, "flat rows: Timestamp and every field as text"};

}  // namespace

void add_journald_plugins(Registry& r) {
  r.add(PluginSpec{"parse_journald",
                   "The entries of systemd journal files, each file in its order: System (Seq, Timestamp and "
                   "the \"_\" fields), EventData (the others); numbers and times typed as Velociraptor types them.",
                   {kFilename,
                    kAccessor,
                    kRaw,
                    {"start_time", "timestamp", false, "entries at or after it"},
                    {"end_time", "timestamp", false, "entries at or before it"}},
                   false,
                   [](const Args& a, Env&) {
                     check_parse(a);
                     bool raw = a.boolean("raw").value_or(false);
                     // Go's UnixNano()/1000: microseconds, truncated toward zero.
                     int64_t from = time_arg(a, "start_time").value_or(0) / 1000;
                     auto end = time_arg(a, "end_time");
                     int64_t to = end ? *end / 1000 : std::numeric_limits<int64_t>::max();
                     std::vector<std::unique_ptr<RowStream>> files;
                     for (auto& path : a.strings("filename"))
                       files.push_back(std::make_unique<ParseStream>(path, raw, from, to));
                     return chain_streams(std::move(files));
                   }},
        check_parse);
  r.add(PluginSpec{"watch_journald",
                   "Follows systemd journal files from their end (and across rotation): a row per new entry, "
                   "shaped as parse_journald's. Looks every second.",
                   {kFilename, kAccessor, kRaw}, true,
                   [](const Args& a, Env&) {
                     check_watch(a);
                     bool raw = a.boolean("raw").value_or(false);
                     std::vector<std::unique_ptr<RowStream>> files;
                     for (auto& path : a.strings("filename")) files.push_back(std::make_unique<WatchStream>(path, raw));
                     if (files.empty()) a.fail("filename", "no file");
                     return merge_streams(std::move(files));
                   }},
        check_watch);
}

}  // namespace outpost::vql
