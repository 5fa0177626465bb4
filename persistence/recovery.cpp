#include "persistence/recovery.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>

#include <kj/io.h>

#include "persistence/errors.hpp"
#include "persistence/lmdb.hpp"
#include "persistence/meta.hpp"
#include "persistence/record_format.hpp"

namespace outpost::persistence::recovery {
namespace fs = std::filesystem;
namespace rf = record_format;
using schemas::kLaneCount;

namespace {

constexpr const char* kLaneDbNames[kLaneCount] = {"lane.control", "lane.events", "lane.results",
                                                  "lane.uploads"};
// A child that reports nothing for this long is stuck in damaged pages.
constexpr auto kChildTimeout = std::chrono::seconds(60);
// A child's heap may grow this much: LMDB freeing pages without end must end
// in ENOMEM, not swap.
constexpr rlim_t kChildDataGrowth = rlim_t{1} << 30;
// Children restarted past a spot where one died, at most, per salvage.
constexpr int kMaxCrashes = 256;
// Salvaged records per transaction of the new environment.
constexpr size_t kCommitRecords = 1000;
constexpr size_t kCommitBytes = 32u << 20;

// LMDB 0.9's page header (64-bit): pgno, pad, flags, then lower/upper or
// the overflow page count.
constexpr size_t kPageHeader = 16;
constexpr uint16_t kPageLeaf = 0x02, kPageOverflow = 0x04;

// The new environment failed (disk full, say): not damage, so no retrying.
struct WriteError : StoreError {
  using StoreError::StoreError;
};
void check_write(int rc, const char* call, const fs::path& to) {
  if (rc != MDB_SUCCESS)
    throw WriteError(std::string(call) + " failed for " + to.string() + ": " + mdb_strerror(rc), rc);
}

// Lines from a child to its parent, one write each (atomic on a pipe).
struct Out {
  int fd;
  void line(const std::string& s) const {
    std::string l = s + "\n";
    (void)!::write(fd, l.data(), l.size());
  }
};

struct ChildEnd {
  std::string status;  // "exit N", "signal N", "timeout"
  bool finished = false;  // the child said "F": it did all it had to
};

// Runs `body` in a forked child and hands each line it writes to `on_line`.
ChildEnd run_child(const std::function<void(const Out&)>& body,
                   const std::function<void(const std::string&)>& on_line) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    throw StoreError(std::string("pipe for the buffer check: ") + std::strerror(errno), errno);
  kj::AutoCloseFd from_child(fds[0]), to_parent(fds[1]);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    throw StoreError(std::string("fork for the buffer check: ") + std::strerror(err), err);
  }
  if (pid == 0) {
    // The parent's descriptors are not the child's business (it opens what it
    // reads): above all the directory's lock, whose flock the child would
    // otherwise hold after its parent died, until its parent-death signal came.
    int out_fd = to_parent.get();
    if (out_fd != 3) {
      ::dup2(out_fd, 3);
      out_fd = 3;
    }
    ::close_range(4, ~0U, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a parent killed meanwhile takes its child along
    if (::getppid() != parent) ::_exit(4);  // it died before the line above
    // Above what the process already has (a sanitizer's shadow counts too).
    rlim_t data_kib = 0;
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
      if (line.rfind("VmData:", 0) == 0) data_kib = std::stoull(line.substr(7));
    rlimit limit;
    if (data_kib && ::getrlimit(RLIMIT_DATA, &limit) == 0) {
      limit.rlim_cur = std::min(limit.rlim_max, data_kib * 1024 + kChildDataGrowth);
      ::setrlimit(RLIMIT_DATA, &limit);
    }
    Out out{out_fd};
    try {
      body(out);
      out.line("F");
    } catch (const std::exception& e) {
      out.line(std::string("X ") + e.what());
      ::_exit(3);
    }
    ::_exit(0);
  }
  to_parent = nullptr;  // the child holds the only write end: its exit ends the reads
  ChildEnd end;
  std::string partial;
  char buf[4096];
  for (;;) {
    pollfd p{from_child.get(), POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(kChildTimeout).count()));
    if (rc < 0 && errno == EINTR) continue;
    if (rc == 0) {
      ::kill(pid, SIGKILL);
      end.status = "timeout";
      break;
    }
    ssize_t n = ::read(from_child.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    partial.append(buf, n);
    for (size_t nl; (nl = partial.find('\n')) != std::string::npos; partial.erase(0, nl + 1)) {
      std::string l = partial.substr(0, nl);
      if (l == "F") end.finished = true;
      on_line(l);
    }
  }
  from_child = nullptr;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (end.status.empty())
    end.status = WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                                     : "exit " + std::to_string(WEXITSTATUS(status));
  return end;
}

std::string describe(const ChildEnd& end) {
  if (end.status == "timeout") return "the check made no progress for 60 s";
  if (end.status.rfind("signal ", 0) == 0)
    return "LMDB crashed on damaged pages (" + std::string(strsignal(std::stoi(end.status.substr(7)))) + ")";
  return "the check ended with " + end.status;
}

struct PageHeader {
  uint64_t pgno;
  uint16_t flags;
  uint16_t lower, upper;
  uint32_t pages;
};

PageHeader page_header(const char* page) {
  PageHeader h;
  std::memcpy(&h.pgno, page, 8);
  std::memcpy(&h.flags, page + 10, 2);
  std::memcpy(&h.lower, page + 12, 2);
  std::memcpy(&h.upper, page + 14, 2);
  std::memcpy(&h.pages, page + 12, 4);
  return h;
}

// Empty when the page holding `value` is the kind of page a value can lie
// in, and knows its own number; else what is wrong with it. A page that
// lies about its number or size makes LMDB free the wrong pages on write.
std::string page_problem(const lmdb::Env& env, const MDB_val& value) {
  if (!env.in_map(value)) return "a value lies outside the file";
  const char* map = env.map();
  uint64_t psize = env.page_size();
  uint64_t offset = static_cast<const char*>(value.mv_data) - map;
  uint64_t pgno = offset / psize;
  PageHeader h = page_header(map + pgno * psize);
  std::string where = "page " + std::to_string(pgno) + ": ";
  if (h.pgno != pgno) return where + "its header says page " + std::to_string(h.pgno);
  if (offset % psize == kPageHeader) {  // a value right after a header is on overflow pages
    uint64_t need = (kPageHeader + value.mv_size + psize - 1) / psize;
    if (!(h.flags & kPageOverflow) || h.pages != need)
      return where + "overflow header damaged (flags " + std::to_string(h.flags) + ", " +
             std::to_string(h.pages) + " pages for " + std::to_string(need) + ")";
    return "";
  }
  if (!(h.flags & kPageLeaf) || h.lower < kPageHeader || h.lower > h.upper || h.upper > psize)
    return where + "leaf header damaged";
  return "";
}

unsigned source_flags() { return MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS; }

// The child's walk; every damage ends it with a "BAD" line.
void check_body(const Out& out, const fs::path& dir, uint64_t map_size) {
  lmdb::Env env(dir.string(), source_flags(), map_size, kLaneCount + 2);
  lmdb::Txn txn(env, true);
  MDB_val key, value;
  auto bad = [&](const std::string& what) {
    out.line("BAD " + what);
    throw StoreError(what);
  };
  {
    lmdb::Cursor free_list(txn, 0, dir.string() + " (free list)");
    for (bool more = free_list.get(key, value, MDB_FIRST); more;
         more = free_list.get(key, value, MDB_NEXT)) {
      if (auto p = page_problem(env, value); !p.empty()) bad("free list: " + p);
      uint64_t n = 0;
      if (value.mv_size >= 8) std::memcpy(&n, value.mv_data, 8);
      if (value.mv_size % 8 || value.mv_size != (n + 1) * 8) bad("free list: malformed page list");
      uint64_t last = env.info().me_last_pgno;
      for (uint64_t i = 1; i <= n; ++i) {
        uint64_t pg;
        std::memcpy(&pg, static_cast<const char*>(value.mv_data) + i * 8, 8);
        if (pg < 2 || pg > last) bad("free list: page " + std::to_string(pg) + " out of range");
      }
    }
  }
  MDB_dbi meta_db;
  int rc = mdb_dbi_open(txn.get(), "meta", 0, &meta_db);
  if (rc == MDB_SUCCESS) {
    MDB_val k{sizeof meta_format::kKey, const_cast<char*>(meta_format::kKey)};
    rc = mdb_get(txn.get(), meta_db, &k, &value);
    if (rc == MDB_SUCCESS)
      if (auto p = page_problem(env, value); !p.empty()) bad("meta: " + p);
  }
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) bad(std::string("meta: ") + mdb_strerror(rc));
  uint64_t corrupt = 0;
  for (size_t i = 0; i < kLaneCount; ++i) {
    MDB_dbi dbi;
    rc = mdb_dbi_open(txn.get(), kLaneDbNames[i], 0, &dbi);
    if (rc == MDB_NOTFOUND) continue;
    if (rc != MDB_SUCCESS) bad(std::string(kLaneDbNames[i]) + ": " + mdb_strerror(rc));
    lmdb::Cursor cursor(txn, dbi, dir.string() + " (" + kLaneDbNames[i] + ")");
    uint64_t previous = 0, n = 0;
    for (bool more = cursor.get(key, value, MDB_FIRST); more; more = cursor.get(key, value, MDB_NEXT)) {
      auto seq = rf::seq_of(key);
      if (!seq || *seq <= previous)
        bad(std::string(kLaneDbNames[i]) + ": key out of order after seq " + std::to_string(previous));
      if (auto p = page_problem(env, value); !p.empty())
        bad(std::string(kLaneDbNames[i]) + ", seq " + std::to_string(*seq) + ": " + p);
      if (!rf::verify(*seq, value)) ++corrupt;
      previous = *seq;
      if (++n % 100000 == 0) out.line("P");  // progress: not stuck
    }
  }
  rc = mdb_dbi_open(txn.get(), "quarantine", 0, &meta_db);
  if (rc == MDB_SUCCESS) {
    lmdb::Cursor cursor(txn, meta_db, dir.string() + " (quarantine)");
    for (bool more = cursor.get(key, value, MDB_FIRST); more; more = cursor.get(key, value, MDB_NEXT))
      if (auto p = page_problem(env, value); !p.empty()) bad("quarantine: " + p);
  } else if (rc != MDB_NOTFOUND) {
    bad(std::string("quarantine: ") + mdb_strerror(rc));
  }
  out.line("Q " + std::to_string(corrupt));
}

// Where a salvage stands, kept by the parent across children.
struct Progress {
  size_t lane = 0;
  uint64_t from = 1;    // next seq of `lane` to seek to
  uint64_t gap = 1;     // how far past a spot that killed a child the next one seeks
  bool careful = false; // commit every record: a crash then shows exactly where
};

// Copies lanes from `progress` on; reports "S lane seq" before each seek,
// "C lane seq n" after each commit of n records, "E what" for each damage met, "L"
// when a lane is done.
void salvage_body(const Out& out, const fs::path& from, const fs::path& to, uint64_t map_size,
                  Progress progress) {
  lmdb::Env src(from.string(), source_flags(), map_size, kLaneCount + 2);
  {
    lmdb::Txn txn(src, true);
    MDB_dbi meta_db;
    MDB_val k{sizeof meta_format::kKey, const_cast<char*>(meta_format::kKey)}, value;
    Meta meta;
    if (mdb_dbi_open(txn.get(), "meta", 0, &meta_db) == MDB_SUCCESS &&
        mdb_get(txn.get(), meta_db, &k, &value) == MDB_SUCCESS && src.in_map(value) &&
        meta_format::decode(value, meta) == meta_format::Decoded::ok)
      out.line("M " + std::to_string(meta.records()));
  }
  lmdb::Env dst(to.string(), MDB_NOTLS | MDB_NOSYNC, map_size, kLaneCount + 2);
  std::array<MDB_dbi, kLaneCount> dst_dbs;
  {
    lmdb::Txn txn(dst, false);
    for (size_t i = 0; i < kLaneCount; ++i)
      check_write(mdb_dbi_open(txn.get(), kLaneDbNames[i], MDB_CREATE, &dst_dbs[i]), "mdb_dbi_open", to);
    check_write(txn.commit(), "mdb_txn_commit", to);
  }
  for (size_t lane = progress.lane; lane < kLaneCount; ++lane) {
    uint64_t from_seq = lane == progress.lane ? progress.from : 1;
    bool careful = lane == progress.lane && progress.careful;
    std::string name = kLaneDbNames[lane];
    auto seek = [&](uint64_t seq) {  // "S" first: the parent resumes past a seek that kills us
      out.line("S " + std::to_string(lane) + " " + std::to_string(seq));
      lmdb::Txn rtxn(src, true);
      MDB_dbi dbi;
      lmdb::check(mdb_dbi_open(rtxn.get(), name.c_str(), 0, &dbi), "mdb_dbi_open", name);
      lmdb::Cursor cursor(rtxn, dbi, name);
      rf::Key start(seq);
      MDB_val key = start.val(), value;
      cursor.get(key, value, MDB_SET_RANGE);
    };
    auto works = [&](uint64_t seq) {
      try {
        seek(seq);
        return true;
      } catch (const StoreError&) {
        return false;
      }
    };
    uint64_t gap = 1, stuck_at = UINT64_MAX;
    while (from_seq != 0) {  // 0: past the end of the seq space
      out.line("S " + std::to_string(lane) + " " + std::to_string(from_seq));
      uint64_t last = from_seq - 1;
      auto wtxn = std::make_unique<lmdb::Txn>(dst, false);
      size_t pending = 0, pending_bytes = 0;
      auto commit_pending = [&] {
        if (!pending) return;
        check_write(wtxn->commit(), "mdb_txn_commit", to);
        out.line("C " + std::to_string(lane) + " " + std::to_string(last) + " " + std::to_string(pending));
        pending = pending_bytes = 0;
        wtxn = std::make_unique<lmdb::Txn>(dst, false);
      };
      try {
        try {
          lmdb::Txn rtxn(src, true);
          MDB_dbi dbi;
          int rc = mdb_dbi_open(rtxn.get(), name.c_str(), 0, &dbi);
          if (rc == MDB_NOTFOUND) break;
          lmdb::check(rc, "mdb_dbi_open", name);
          lmdb::Cursor cursor(rtxn, dbi, from.string() + " (" + name + ")");
          rf::Key start(from_seq);
          MDB_val key = start.val(), value;
          for (bool more = cursor.get(key, value, MDB_SET_RANGE); more;
               more = cursor.get(key, value, MDB_NEXT)) {
            auto seq = rf::seq_of(key);
            if (!seq || *seq <= last) continue;  // a damaged key: its record is lost
            if (!page_problem(src, value).empty() || !rf::verify(*seq, value)) continue;
            rc = mdb_put(wtxn->get(), dst_dbs[lane], &key, &value, MDB_APPEND);
            if (rc == MDB_KEYEXIST) continue;
            check_write(rc, "mdb_put", to);
            last = *seq;
            pending_bytes += value.mv_size;
            if (++pending >= (careful ? 1 : kCommitRecords) || pending_bytes >= kCommitBytes) commit_pending();
          }
          commit_pending();
          break;  // the lane's end
        } catch (const WriteError&) {
          throw;
        } catch (const StoreError& e) {
          commit_pending();  // what was read before the damage is good
          out.line("E " + name + " after seq " + std::to_string(last) + ": " + e.what());
        }
      } catch (const WriteError& e) {
        out.line(std::string("W ") + e.what());
        throw;
      }
      // Past the damage: the nearest seq after `last` from which a seek
      // works. Double the distance until one does, then bisect back (seeks
      // fail throughout the damaged pages' key range and work after it).
      // Stuck at the same record again: start further out.
      careful = true;
      gap = last == stuck_at && gap <= (UINT64_MAX >> 1) ? gap * 2 : 1;
      stuck_at = last;
      for (;;) {
        if (last + gap < last) {
          from_seq = 0;
          break;
        }
        from_seq = last + gap;
        if (works(from_seq)) break;
        if (gap > (UINT64_MAX >> 1)) {
          from_seq = 0;
          break;
        }
        gap *= 2;
      }
      if (from_seq == 0) break;
      for (uint64_t lo = gap > 1 ? last + gap / 2 + 1 : from_seq; lo < from_seq;) {
        uint64_t mid = lo + (from_seq - lo) / 2;
        if (works(mid))
          from_seq = mid;
        else
          lo = mid + 1;
      }
    }
    out.line("L " + std::to_string(lane));
  }
  check_write(mdb_env_sync(dst.get(), 1), "mdb_env_sync", to);
}

}  // namespace

Check check(const fs::path& dir, uint64_t map_size) {
  Check result;
  bool said = false;
  auto end = run_child([&](const Out& out) { check_body(out, dir, map_size); },
                       [&](const std::string& line) {
                         if (line.rfind("BAD ", 0) == 0 && !said) {
                           result.problem = line.substr(4);
                           said = true;
                         } else if (line.rfind("X ", 0) == 0 && !said) {
                           result.problem = line.substr(2);
                           said = true;
                         } else if (line.rfind("Q ", 0) == 0) {
                           result.corrupt_records = std::stoull(line.substr(2));
                         }
                       });
  result.healthy = end.finished;
  if (!result.healthy && result.problem.empty()) result.problem = describe(end);
  return result;
}

Salvage salvage(const fs::path& from, const fs::path& to, uint64_t map_size) {
  Salvage result;
  Progress progress;
  for (int attempt = 0;; ++attempt) {
    bool opened = false, seeking = false;
    std::string write_error;
    uint64_t seek_at = 0;
    auto end = run_child(
        [&](const Out& out) { salvage_body(out, from, to, map_size, progress); },
        [&](const std::string& line) {
          std::istringstream in(line);
          std::string tag;
          in >> tag;
          if (tag == "M") {
            uint64_t n;
            in >> n;
            result.expected = n;
          } else if (tag == "S") {
            opened = true;
            in >> progress.lane >> seek_at;
            seeking = true;
          } else if (tag == "C") {
            uint64_t last, n;
            in >> progress.lane >> last >> n;
            result.salvaged += n;
            progress.from = last + 1;
            progress.gap = 1;
            seeking = false;
          } else if (tag == "L") {
            in >> progress.lane;
            ++progress.lane;
            progress.from = 1;
            progress.careful = false;
            seeking = false;
          } else if (tag == "W") {
            write_error = line.substr(2);
          } else if ((tag == "E" || tag == "X") && result.problem.empty()) {
            result.problem = line.substr(2);
          }
        });
    if (end.finished) return result;
    if (!write_error.empty()) throw StoreError("salvaging into " + to.string() + ": " + write_error);
    if (result.problem.empty()) result.problem = describe(end);
    // The child died: resume where it was, past the spot if it died there.
    ++result.crashes;
    if (!opened || attempt >= kMaxCrashes || progress.lane >= kLaneCount) {
      // The file cannot even be opened, or damage everywhere: the rest is lost.
      break;
    }
    if (seeking) {
      uint64_t next = seek_at + progress.gap;
      if (next < seek_at) {
        ++progress.lane, progress.from = 1, progress.gap = 1, progress.careful = false;
        continue;
      }
      progress.from = next;
      progress.gap = progress.gap > (UINT64_MAX >> 1) ? UINT64_MAX : progress.gap * 2;
    }
    progress.careful = true;
  }
  // Make sure the new environment exists, empty if nothing could be read.
  if (!fs::exists(to / "data.mdb")) {
    lmdb::Env dst(to.string(), MDB_NOTLS, map_size, kLaneCount + 2);
  }
  return result;
}

}  // namespace outpost::persistence::recovery
