// sqlite(): Velociraptor's plugin on libsqlite3, read-only: one SQL
// statement run against a database file, a row per result row, pulled one
// sqlite3_step at a time.
//
// Where the database is read (our choice, as the task left it open):
// - In place, opened SQLITE_OPEN_READONLY (what a "file:...?mode=ro" URI
//   asks for), never immutable=1: a browser's history is written while we
//   read, and a read-only connection still takes SQLite's locks and reads
//   the WAL, so it sees the last commit, not torn pages.
// - As a private copy when reading in place fails because the file is
//   locked (SQLITE_BUSY/LOCKED: Chrome keeps its databases in exclusive
//   locking mode) or needs a recovery a read-only connection cannot do (a
//   hot journal, a WAL index it cannot build), or when it is a WAL database
//   without its -wal or -shm, which even a read-only connection would create
//   beside it. The copy (the database and its -wal and -journal, as they
//   are) goes in a directory of our own, 0700, in $TMPDIR (or /tmp), a slice
//   per call, and is opened read-write so that SQLite can roll back the hot
//   journal or replay the WAL in it (that is, give the last commit); the
//   directory is removed when the rows end. A database over kMaxCopyBytes is
//   not copied. The database file itself is read for the copy through the
//   failed connection's own file handle: closing a descriptor of ours would
//   drop the POSIX locks of every other connection of this process to it.
// - accessor='data': the bytes are written to such a directory, likewise.
//
// What keeps a query from writing or reaching other files: the read-only
// open; PRAGMA query_only; SQLITE_DBCONFIG_DEFENSIVE; no extensions, no
// two-argument fts3_tokenizer(), untrusted schema; no attached databases
// (SQLITE_LIMIT_ATTACHED 0); an authorizer that allows only reading (SELECT,
// reads, functions but a few, recursive CTEs, pragmas that only report);
// sqlite3_stmt_readonly(); one statement per query. The authorizer alone
// refuses every write but an UPDATE of the schema table, which SQLite itself
// refuses (it "may not be modified"), and sqlite3_stmt_readonly() alone
// refuses every write. Debian's libsqlite3 is
// built with USE_URI, so a relative name starting "file:" is given as
// "./file:...", never parsed as a URI.
//
// Bounded work: a query runs cooperatively (a RowStream slice per call; a
// query cancelled or out of time is not called again and its stream is
// destroyed, which finalizes the statement, closes the database and removes
// any copy: SQLite needs no cancellation of its own), and no prepare or step runs
// longer than kStepTimeout (a progress handler interrupts it: a recursive
// CTE that never yields a row). SQLite waits at most kBusyTimeoutMs for a
// lock before the copy is made.
//
// Errors: a file that cannot be read, is not a database, is corrupt, or on
// which the query fails (a table it lacks) is a warning in the log naming
// the plugin, the file and SQLite's message, and gives no rows, as yara()
// and parse_journald() do with such files. A query refused (not read-only,
// ATTACH, more than one statement, args that do not fit) is a QueryError.

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>

#include "queries/engine.hpp"
#include "queries/linux_util.hpp"

namespace outpost::vql {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kMaxLength = 64 << 20;    // SQLITE_LIMIT_LENGTH: a string, blob or row
constexpr int kMaxSqlLength = 1 << 20;  // SQLITE_LIMIT_SQL_LENGTH, and the query argument
constexpr auto kStepTimeout = std::chrono::seconds(10);
constexpr int kProgressOps = 1000;  // VM instructions between looks at the clock
constexpr int kBusyTimeoutMs = 100;
// A call gives its rows until it has spent this long or read this many bytes.
constexpr auto kCallTime = std::chrono::milliseconds(50);
constexpr size_t kBytesPerCall = size_t{16} << 20;
constexpr uint64_t kMaxCopyBytes = uint64_t{1} << 30;
constexpr size_t kCopyBytesPerCall = 4 * Slicing::kBytesPerCall;
constexpr size_t kCopyChunk = size_t{1} << 20;

// A problem of the file, not of the query: logged, and the file gives no rows.
class FileError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;
struct StmtFinalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// A directory of our own (mkdtemp: 0700) in $TMPDIR (or /tmp), removed with
// all in it when destroyed.
class PrivateDir {
 public:
  PrivateDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string base = tmp && *tmp ? tmp : "/tmp";
    path_ = base + "/outpost-sqlite-XXXXXX";
    if (!::mkdtemp(path_.data())) throw FileError("cannot make a directory in " + base + ": " + errno_message(errno));
  }
  ~PrivateDir() {
    std::error_code ignored;  // what cannot be removed stays
    std::filesystem::remove_all(path_, ignored);
  }
  PrivateDir(const PrivateDir&) = delete;
  PrivateDir& operator=(const PrivateDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

kj::AutoCloseFd create_private(const std::string& path) {
  kj::AutoCloseFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (fd == nullptr) throw FileError("cannot create " + path + ": " + errno_message(errno));
  return fd;
}

void write_copy(const kj::AutoCloseFd& fd, const char* data, size_t size) {
  if (int error = write_all(fd.get(), data, size))
    throw FileError("cannot write a private copy: " + errno_message(error));
}

// A failed close is a failed copy: NFS and FUSE report write errors there.
void close_copy(kj::AutoCloseFd& fd) {
  if (int error = close_file(fd)) throw FileError("cannot write a private copy: " + errno_message(error));
}

// What the connection's callbacks share with its stream. Like the
// connection (SQLITE_OPEN_NOMUTEX), used only by the thread running the
// query, the callbacks being called within its prepare and step calls.
struct Guard {
  Clock::time_point deadline;  // of the prepare or step under way
  std::string refused;         // why the authorizer refused the statement being prepared
};

// sqlite3_progress_handler: nonzero interrupts the statement (SQLITE_INTERRUPT).
int on_progress(void* guard) { return Clock::now() > static_cast<Guard*>(guard)->deadline ? 1 : 0; }

bool one_of(const char* name, std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (name && sqlite3_stricmp(name, n) == 0) return true;
  return false;
}

// sqlite3_set_authorizer: reading only, as the file comment says. For a
// pragma `a` is its name and `b` its argument; for a function `b` is its
// name. The first refusal is the one reported.
int authorize(void* user, int action, const char* a, const char* b, const char*, const char*) {
  auto& guard = *static_cast<Guard*>(user);
  auto refuse = [&](const std::string& why) {
    if (guard.refused.empty()) guard.refused = why;
    return SQLITE_DENY;
  };
  try {
    switch (action) {
      case SQLITE_SELECT:
      case SQLITE_READ:
      case SQLITE_RECURSIVE:
        return SQLITE_OK;
      case SQLITE_FUNCTION:
        if (!one_of(b, {"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit"})) return SQLITE_OK;
        return refuse(std::string("query refused: function ") + b + "() is not allowed");
      case SQLITE_PRAGMA:
        // Pragmas that report, whatever their argument (a table's name)...
        if (one_of(a, {"table_info", "table_xinfo", "table_list", "index_info", "index_xinfo", "index_list",
                       "foreign_key_list", "foreign_key_check", "database_list", "collation_list",
                       "function_list", "module_list", "pragma_list", "compile_options", "integrity_check",
                       "quick_check"}) ||
            // ...and settings read, not set.
            (!b && one_of(a, {"user_version", "application_id", "schema_version", "data_version", "page_size",
                              "page_count", "max_page_count", "freelist_count", "encoding", "journal_mode",
                              "auto_vacuum"})))
          return SQLITE_OK;
        return refuse(std::string("query refused: PRAGMA ") + (a ? a : "") + (b ? " with a value" : "") +
                      " is not allowed");
      case SQLITE_UPDATE:
        // SQLite asks this of the schema table's columns when a table-valued
        // function (json_each(), pragma_table_info()) is first used. A real
        // UPDATE of the schema SQLite refuses itself (DEFENSIVE), as would
        // sqlite3_stmt_readonly(), query_only and the read-only open.
        if (one_of(a, {"sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema"}))
          return SQLITE_OK;
        return refuse("query is not read-only");
      case SQLITE_ATTACH:
      case SQLITE_DETACH:
        return refuse("query refused: ATTACH and DETACH are not allowed");
      case SQLITE_TRANSACTION:
      case SQLITE_SAVEPOINT:
        return refuse("query refused: transactions are not allowed");
      default:  // INSERT, DELETE, CREATE, DROP, ALTER, ANALYZE, REINDEX...
        return refuse("query is not read-only");
    }
  } catch (const std::exception&) {  // nothing may be thrown through SQLite
    return SQLITE_DENY;
  }
}

// Opens `path` (flags: READONLY in place, READWRITE for a private copy) and
// restricts the connection before any statement of the query runs.
DbPtr open_db(std::string path, int flags, Guard& guard) {
  if (path.compare(0, 5, "file:") == 0) path = "./" + path;  // not a URI (the file comment)
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE, nullptr);
  DbPtr db(raw);
  if (rc != SQLITE_OK) throw FileError(db ? sqlite3_errmsg(db.get()) : sqlite3_errstr(rc));
  sqlite3* d = db.get();
  int* none = nullptr;
  bool ok = sqlite3_db_config(d, SQLITE_DBCONFIG_DEFENSIVE, 1, none) == SQLITE_OK &&
            sqlite3_db_config(d, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, none) == SQLITE_OK &&
            sqlite3_db_config(d, SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, 0, none) == SQLITE_OK &&
            sqlite3_db_config(d, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, none) == SQLITE_OK &&
            // A read-only connection cannot checkpoint anyway; never try in place.
            sqlite3_db_config(d, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, none) == SQLITE_OK &&
            sqlite3_exec(d, "PRAGMA query_only=1", nullptr, nullptr, nullptr) == SQLITE_OK;
  if (!ok) throw FileError(std::string("cannot restrict the connection: ") + sqlite3_errmsg(d));
  sqlite3_limit(d, SQLITE_LIMIT_LENGTH, kMaxLength);
  sqlite3_limit(d, SQLITE_LIMIT_SQL_LENGTH, kMaxSqlLength);
  sqlite3_limit(d, SQLITE_LIMIT_ATTACHED, 0);
  sqlite3_limit(d, SQLITE_LIMIT_WORKER_THREADS, 0);
  sqlite3_set_authorizer(d, authorize, &guard);
  sqlite3_progress_handler(d, kProgressOps, on_progress, &guard);
  sqlite3_busy_timeout(d, kBusyTimeoutMs);
  return db;
}

// Failures of the database in place that a private copy gets around (the file comment).
bool wants_copy(int rc) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PROTOCOL:
      return true;
    default:
      return false;
  }
}

// What an SQLite database starts with. Without it (a shorter file, an
// empty one included) SQLite would take it for an empty database, or
// report nothing until a query reads a page: Velociraptor gives no rows.
constexpr size_t kHeaderBytes = 100;
constexpr char kNoHeader[] = "file is not a database (no SQLite header)";
void check_header(const unsigned char* header, size_t size) {
  if (size < kHeaderBytes || std::memcmp(header, "SQLite format 3", 16) != 0) throw FileError(kNoHeader);
}

// The main database file of `db`, as its connection holds it open.
sqlite3_file* main_file(sqlite3* db) {
  sqlite3_file* file = nullptr;
  if (sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &file) != SQLITE_OK || !file || !file->pMethods)
    return nullptr;
  return file;
}

// A database `from`, with its -wal and -journal when there are, copied to
// `to` (and `to`-wal, `to`-journal) a slice per step(). The database is read
// through `db`'s handle, which must outlive the Copy.
class Copy {
 public:
  Copy(sqlite3* db, const std::string& from, const std::string& to) : buffer_(kCopyChunk, '\0') {
    Part main;
    main.file = main_file(db);
    sqlite3_int64 size = 0;
    if (!main.file || main.file->pMethods->xFileSize(main.file, &size) != SQLITE_OK)
      throw FileError("cannot read it to copy it");
    main.size = static_cast<uint64_t>(size);
    main.out = create_private(to);
    uint64_t total = main.size;
    parts_.push_back(std::move(main));
    for (const char* suffix : {"-wal", "-journal"}) {
      Part side;
      side.in = kj::AutoCloseFd(::open((from + suffix).c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | O_NOFOLLOW));
      if (side.in == nullptr && errno == ENOENT) continue;
      struct stat st;
      if (side.in == nullptr || ::fstat(side.in.get(), &st) != 0)
        throw FileError("cannot read its " + std::string(suffix + 1) + " to copy it: " + errno_message(errno));
      if (!S_ISREG(st.st_mode)) throw FileError("its " + std::string(suffix + 1) + " is not a regular file");
      side.size = static_cast<uint64_t>(st.st_size);
      side.out = create_private(to + suffix);
      side.journal = std::strcmp(suffix, "-journal") == 0;
      total += side.size;
      parts_.push_back(std::move(side));
    }
    if (total > kMaxCopyBytes) throw FileError("too big to copy (more than 1 GiB with its journal or WAL)");
  }

  // Copies up to kCopyBytesPerCall; true when all is copied.
  bool step() {
    for (size_t quota = kCopyBytesPerCall; next_ < parts_.size();) {
      Part& p = parts_[next_];
      if (p.done == p.size) {
        if (p.journal) forget_super_journal(p);
        close_copy(p.out);
        close_file(p.in);  // read to its end: a close error adds nothing
        ++next_;
        continue;
      }
      if (quota == 0) return false;
      size_t want = static_cast<size_t>(std::min<uint64_t>({buffer_.size(), p.size - p.done, quota}));
      size_t got = read(p, want);
      write_copy(p.out, buffer_.data(), got);
      p.done += got;
      quota -= want;
      if (got < want) p.size = p.done;  // it shrank while copied: what there was
    }
    return true;
  }

 private:
  struct Part {
    sqlite3_file* file = nullptr;  // the database, through its connection; else `in`
    kj::AutoCloseFd in, out;
    uint64_t size = 0, done = 0;
    bool journal = false;

    Part() = default;
    Part(Part&&) = default;
    Part& operator=(Part&&) = default;
    // `in` is a file the query named (closed with close_file); `out` is still
    // open here only when the copy did not finish (step() checks its close).
    ~Part() noexcept {
      close_file(in);
      close_file(out);
    }
  };

  // A hot journal may end naming a super-journal (its name, length,
  // checksum, then this magic): rolling the copy back, SQLite would read
  // that file and delete it, whatever file it is. The copy's magic is
  // zeroed, so the name is not read: the journal's own pages still roll back.
  static void forget_super_journal(Part& p) {
    static const unsigned char kMagic[8] = {0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7};
    unsigned char tail[8];
    off_t at = static_cast<off_t>(p.done) - 8;
    if (p.done < 16 || ::pread(p.out.get(), tail, 8, at) != 8 || std::memcmp(tail, kMagic, 8) != 0) return;
    static const unsigned char kZeros[8] = {};
    if (::pwrite(p.out.get(), kZeros, 8, at) != 8)
      throw FileError("cannot make its journal's copy safe to roll back: " + errno_message(errno));
  }

  // Up to `want` bytes at p.done into buffer_; fewer at the file's end.
  size_t read(Part& p, size_t want) {
    if (p.file) {
      int rc = p.file->pMethods->xRead(p.file, buffer_.data(), static_cast<int>(want),
                                       static_cast<sqlite3_int64>(p.done));
      if (rc == SQLITE_OK) return want;
      sqlite3_int64 size = 0;  // a short read fills the rest with zeros: only what the file holds counts
      if (rc != SQLITE_IOERR_SHORT_READ || p.file->pMethods->xFileSize(p.file, &size) != SQLITE_OK)
        throw FileError(std::string("cannot read it to copy it: ") + sqlite3_errstr(rc));
      return static_cast<uint64_t>(size) > p.done ? std::min<size_t>(want, static_cast<uint64_t>(size) - p.done) : 0;
    }
    ssize_t n;
    do n = ::pread(p.in.get(), buffer_.data(), want, static_cast<off_t>(p.done));
    while (n < 0 && errno == EINTR);
    if (n < 0) throw FileError("cannot read its journal or WAL to copy it: " + errno_message(errno));
    return static_cast<size_t>(n);
  }

  std::vector<Part> parts_;
  size_t next_ = 0;
  std::string buffer_;
};

// Binds `v` to parameter `i` of `s`: bool and int as INTEGER, float as
// REAL, NULL as NULL, anything else as TEXT (a string's bytes; other
// values' string form: a path's text, a list's JSON).
void bind_one(sqlite3* db, sqlite3_stmt* s, int i, const Value& v) {
  int rc;
  if (v.is_null())
    rc = sqlite3_bind_null(s, i);
  else if (auto b = v.as_bool())
    rc = sqlite3_bind_int64(s, i, *b ? 1 : 0);
  else if (auto n = v.as_int())
    rc = sqlite3_bind_int64(s, i, *n);
  else if (auto d = v.as_double())
    rc = sqlite3_bind_double(s, i, *d);
  else if (v.as_query())
    throw QueryError("sqlite(): args: a query cannot be bound to parameter " + std::to_string(i));
  else {
    std::string text = v.as_string() ? *v.as_string() : to_string(v);
    rc = sqlite3_bind_text64(s, i, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  }
  if (rc != SQLITE_OK)
    throw QueryError("sqlite(): args: cannot bind parameter " + std::to_string(i) + ": " + sqlite3_errmsg(db));
}

// Binds `args`: a dict by the parameters' names (":name", "@name", "$name"
// or "?NNN", looked up as written, then without their first character); a
// list, or one value as a list of one, in order, one value per parameter.
void bind(sqlite3* db, sqlite3_stmt* s, const Value& args) {
  int count = sqlite3_bind_parameter_count(s);
  if (auto dict = args.as_dict()) {
    for (int i = 1; i <= count; ++i) {
      const char* name = sqlite3_bind_parameter_name(s, i);
      const Value* v = name ? dict->find(name) : nullptr;
      if (!v && name && *name) v = dict->find(name + 1);
      if (!v)
        throw QueryError("sqlite(): args: no value for parameter " +
                         (name ? std::string(name) : "?" + std::to_string(i) + " (a dict binds only named ones)"));
      bind_one(db, s, i, *v);
    }
    return;
  }
  List one;
  const List* list = args.as_list();
  if (!list) {
    if (!args.is_null()) one.push_back(args);
    list = &one;
  }
  if (list->size() != static_cast<size_t>(count))
    throw QueryError("sqlite(): args: " + std::to_string(list->size()) + " values for " + std::to_string(count) +
                     " parameters");
  for (int i = 1; i <= count; ++i) bind_one(db, s, i, (*list)[static_cast<size_t>(i - 1)]);
}

// Column `i` of the current row; its text or blob bytes added to `bytes`.
Value column(sqlite3_stmt* s, int i, size_t& bytes) {
  switch (sqlite3_column_type(s, i)) {
    case SQLITE_INTEGER:
      return Value(static_cast<int64_t>(sqlite3_column_int64(s, i)));
    case SQLITE_FLOAT:
      return Value(sqlite3_column_double(s, i));
    case SQLITE_TEXT:
    case SQLITE_BLOB: {
      // The pointer first, then the size (SQLite's rule). A BLOB's bytes as
      // they are; an empty blob's pointer is null.
      const void* p = sqlite3_column_type(s, i) == SQLITE_TEXT ? static_cast<const void*>(sqlite3_column_text(s, i))
                                                               : sqlite3_column_blob(s, i);
      auto n = static_cast<size_t>(sqlite3_column_bytes(s, i));
      bytes += n;
      return p ? Value(std::string(static_cast<const char*>(p), n)) : Value(std::string());
    }
    default:
      return Value();
  }
}

// One call's rows. Used only by the thread running the query, one call at
// a time (the connection is SQLITE_OPEN_NOMUTEX, which allows that).
class SqliteStream final : public RowStream {
 public:
  SqliteStream(std::string file, bool is_data, std::string sql, Value args)
      : name_(is_data ? "data" : file), sql_(std::move(sql)), args_(std::move(args)), is_data_(is_data) {
    (is_data ? data_ : path_) = std::move(file);
  }

  Step next(std::vector<Row>& out, size_t budget) override {
    try {
      switch (phase_) {
        case Phase::start:
          start();
          return Step::more();
        case Phase::copying:
          if (copy_->step()) open_copy();
          return Step::more();
        case Phase::rows:
          return rows(out, budget);
        case Phase::done:
          return Step::done();
      }
      return Step::done();
    } catch (const FileError& e) {
      spdlog::warn("vql: sqlite(): {}: {}", name_, e.what());
      release();
      return Step::done();
    } catch (...) {
      release();
      throw;
    }
  }

 private:
  enum class Phase { start, copying, rows, done };

  void start() {
    if (is_data_) {
      check_header(reinterpret_cast<const unsigned char*>(data_.data()), data_.size());
      dir_.emplace();
      std::string db = dir_->path() + "/db";
      kj::AutoCloseFd out = create_private(db);
      write_copy(out, data_.data(), data_.size());
      close_copy(out);
      std::string().swap(data_);
      open_private(db);
      return;
    }
    if (path_.find('\0') != std::string::npos) throw FileError("the name holds a NUL byte");
    struct stat st;  // stat, not open: closing a descriptor would drop this process's locks on it
    if (::stat(path_.c_str(), &st) != 0) throw FileError(errno_message(errno));
    // A FIFO would block SQLite's open (it opens without O_NONBLOCK).
    if (!S_ISREG(st.st_mode)) throw FileError("not a regular file");
    // SQLite opens these beside the database when they are there (the
    // journal read-only, which blocks on a FIFO for good) and may write the
    // -shm: whoever can write the directory could make them a FIFO or a link.
    for (const char* suffix : {"-journal", "-wal", "-shm"}) {
      struct stat side;
      if (::lstat((path_ + suffix).c_str(), &side) == 0 && !S_ISREG(side.st_mode))
        throw FileError(std::string("its ") + (suffix + 1) + " is not a regular file");
    }
    db_ = open_db(path_, SQLITE_OPEN_READONLY, guard_);
    if (header_wants_copy()) return begin_copy("a WAL database without its -wal or -shm");
    if (!prepare(true)) return begin_copy(sqlite3_errmsg(db_.get()));
    phase_ = Phase::rows;
  }

  // Checks the header of the file in place, read through db_'s handle (it
  // takes no lock). True when it must be copied: a WAL database whose -wal
  // or -shm is missing, which reading it in place would create beside it.
  bool header_wants_copy() const {
    sqlite3_file* file = main_file(db_.get());
    unsigned char header[kHeaderBytes];
    int rc = file ? file->pMethods->xRead(file, header, sizeof header, 0) : SQLITE_IOERR;
    if (rc == SQLITE_IOERR_SHORT_READ) throw FileError(kNoHeader);
    if (rc != SQLITE_OK) throw FileError(std::string("cannot read its header: ") + sqlite3_errstr(rc));
    check_header(header, sizeof header);
    if (header[18] != 2 && header[19] != 2) return false;
    struct stat st;
    return ::stat((path_ + "-wal").c_str(), &st) != 0 || ::stat((path_ + "-shm").c_str(), &st) != 0;
  }

  void begin_copy(const std::string& why) {
    spdlog::debug("vql: sqlite(): {}: querying a private copy ({})", name_, why);
    stmt_.reset();
    dir_.emplace();
    copy_ = std::make_unique<Copy>(db_.get(), path_, dir_->path() + "/db");
    phase_ = Phase::copying;
  }

  void open_copy() {
    copy_.reset();
    db_.reset();
    open_private(dir_->path() + "/db");
  }

  // A file of ours: read-write, so that SQLite may recover it (the file comment).
  void open_private(const std::string& db) {
    is_private_ = true;
    db_ = open_db(db, SQLITE_OPEN_READWRITE, guard_);
    prepare(false);
    phase_ = Phase::rows;
  }

  // Prepares and binds the query on db_. False when it could not read the
  // database in place and a copy may (`may_copy`); QueryError when the
  // query is refused; FileError when it fails on this file.
  bool prepare(bool may_copy) {
    sqlite3* db = db_.get();
    guard_.refused.clear();
    guard_.deadline = Clock::now() + kStepTimeout;
    sqlite3_stmt* raw = nullptr;
    const char* tail = nullptr;
    int rc = sqlite3_prepare_v2(db, sql_.data(), static_cast<int>(sql_.size()), &raw, &tail);
    stmt_.reset(raw);
    if (!guard_.refused.empty()) throw QueryError("sqlite(): " + guard_.refused);
    if (rc != SQLITE_OK) {
      if (may_copy && wants_copy(rc)) return false;
      throw FileError(rc == SQLITE_INTERRUPT ? timeout_message() : sqlite3_errmsg(db));
    }
    if (!stmt_) throw QueryError("sqlite(): query: no SQL statement");
    if (!sqlite3_stmt_readonly(stmt_.get())) throw QueryError("sqlite(): query is not read-only");
    if (const char* end = sql_.data() + sql_.size(); tail && tail < end) {
      sqlite3_stmt* more = nullptr;  // only blanks and comments may follow
      rc = sqlite3_prepare_v2(db, tail, static_cast<int>(end - tail), &more, nullptr);
      sqlite3_finalize(more);
      if (rc != SQLITE_OK || more) throw QueryError("sqlite(): query: give one SQL statement");
    }
    bind(db, stmt_.get(), args_);
    return true;
  }

  static std::string timeout_message() {
    return "stopped: a step of the query ran longer than " + std::to_string(kStepTimeout.count()) + " s";
  }

  Step rows(std::vector<Row>& out, size_t budget) {
    sqlite3_stmt* s = stmt_.get();
    auto started = Clock::now();
    size_t bytes = 0;
    for (size_t added = 0; added < budget;) {
      guard_.deadline = Clock::now() + kStepTimeout;
      int rc = sqlite3_step(s);
      if (rc == SQLITE_DONE) {
        release();
        return Step::done();
      }
      if (rc != SQLITE_ROW) {
        if (!any_row_ && !is_private_ && wants_copy(rc)) {
          begin_copy(sqlite3_errmsg(db_.get()));
          return Step::more();
        }
        throw FileError(rc == SQLITE_INTERRUPT ? timeout_message() : sqlite3_errmsg(db_.get()));
      }
      Row row;
      for (int i = 0, n = sqlite3_column_count(s); i < n; ++i) {
        const char* name = sqlite3_column_name(s, i);  // null only when out of memory
        row.set(name ? name : std::to_string(i), column(s, i, bytes));
      }
      out.push_back(std::move(row));
      any_row_ = true;
      ++added;
      if (bytes >= kBytesPerCall || Clock::now() - started >= kCallTime) break;
    }
    return Step::more();
  }

  // Finalizes, closes and removes all, in that order.
  void release() {
    copy_.reset();
    stmt_.reset();
    db_.reset();
    dir_.reset();
    phase_ = Phase::done;
  }

  std::string name_, path_, data_, sql_;
  Value args_;
  bool is_data_;
  bool is_private_ = false;  // db_ is a copy, or the data
  bool any_row_ = false;
  Phase phase_ = Phase::start;
  // Destroyed in the reverse order: the copy (reading through db_'s file),
  // the statement, the connection, the directory, and what the
  // connection's callbacks use.
  Guard guard_;
  std::optional<PrivateDir> dir_;
  DbPtr db_;
  StmtPtr stmt_;
  std::unique_ptr<Copy> copy_;
};

// The arguments' values checked. Safe from any thread (Engine::check and
// make, on the thread compiling or running a query).
void check_sqlite(const Args& args) {
  accessor_of(args, {Accessor::data});
  args.string("file");
  if (auto q = args.string("query")) {
    if (q->size() > static_cast<size_t>(kMaxSqlLength)) args.fail("query", "longer than 1 MiB");
    if (q->find('\0') != std::string::npos) args.fail("query", "holds a NUL byte");
  }
  if (auto v = args.find("args"); v && v->as_query()) args.fail("args", "expected a value, a list or a dict, got a query");
}

// Safe from any thread: called by the thread running the query.
std::unique_ptr<RowStream> make_sqlite(const Args& args, Env&) {
  check_sqlite(args);
  bool is_data = accessor_of(args, {Accessor::data}) == Accessor::data;
  std::string file = required_string(args, "file"), sql = required_string(args, "query");
  const Value* v = args.find("args");
  return std::make_unique<SqliteStream>(std::move(file), is_data, std::move(sql), v ? *v : Value());
}

}  // namespace

// Called while the registry is built, before any query runs (one thread).
void add_sqlite_plugin(Registry& r) {
  r.add(PluginSpec{
            "sqlite",
            "Opens an SQLite database and runs one read-only SQL statement against it: a row per result row, "
            "columns as SQLite names them, INTEGER as int, REAL as float, TEXT as string, BLOB as a string of its "
            "bytes, NULL as NULL. Unlike Velociraptor: writes, ATTACH/DETACH, transactions, pragmas that change "
            "settings and more than one statement are refused (an error); a file that cannot be read, is not a "
            "database or is corrupt is logged, naming it and SQLite's message, and gives no rows (Velociraptor "
            "skips a file without the SQLite header silently); a dict in `args` binds named parameters; "
            "connections are not cached; a locked database (or a WAL one without its -wal and -shm) is queried as "
            "a private copy with its -wal or -journal, removed when the rows end, and one over 1 GiB is not "
            "copied; a step that runs longer than 10 s is stopped.",
            {{"file", "string", true, "the database file (with accessor='data': the database's bytes)"},
             {"accessor", "string", false, "file or auto (the default), or data"},
             {"query", "string", true, "one read-only SQL statement (at most 1 MiB)"},
             {"args", "any", false,
              "the statement's parameters: a list (or one value) binds them in order, a dict by name (:name, "
              "@name, $name; its key with or without the prefix)"}},
            false, make_sqlite},
        check_sqlite);
}

}  // namespace outpost::vql
