// The process and system plugins: pslist, users, netstat, mounts, info, and
// the response plugin kill. Everything but kill reads through Env::paths.

#include <arpa/inet.h>
#include <signal.h>
#include <sys/utsname.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <unordered_map>

#include "queries/linux_util.hpp"

namespace outpost::vql {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kNsPerSec = 1'000'000'000;

// ---- /etc/passwd: users() rows, and pslist's uid -> name

struct PasswdEntry {
  std::string name;
  int64_t uid, gid;
  std::string description, home, shell;
};

// name:password:uid:gid:gecos:home:shell. Comments and NIS "+"/"-" lines are
// no users; a line with a bad field count or id is skipped.
std::optional<PasswdEntry> parse_passwd_line(std::string_view line) {
  auto f = split(line, ':');
  if (f.size() != 7 || f[0].empty() || std::strchr("#+-", f[0][0])) return std::nullopt;
  auto uid = parse_number<uint32_t>(f[2]);
  auto gid = parse_number<uint32_t>(f[3]);
  if (!uid || !gid) return std::nullopt;
  return PasswdEntry{std::string(f[0]), *uid, *gid, std::string(f[4]), std::string(f[5]),
                     std::string(f[6])};
}

// uid -> user name, loaded a slice at a time (a directory-backed passwd can be long).
class UserNames {
 public:
  explicit UserNames(const fs::path& passwd) { loading_ = reader_.open(passwd) == 0; }
  // One slice of loading; true when loaded (a missing file loads nothing).
  bool load() {
    reader_.new_slice();
    std::string line;
    while (loading_) {
      auto result = reader_.next(line);
      if (result == LineReader::Result::again) return false;
      if (result == LineReader::Result::end) break;
      if (auto e = parse_passwd_line(line)) names_.emplace(e->uid, e->name);  // first wins, as getpwuid
    }
    loading_ = false;
    return true;
  }
  std::string name(int64_t uid) const {
    auto it = names_.find(uid);
    return it == names_.end() ? std::to_string(uid) : it->second;
  }

 private:
  LineReader reader_;
  bool loading_;
  std::unordered_map<int64_t, std::string> names_;
};

// ---- /proc

}  // namespace

std::optional<int64_t> boot_time(const fs::path& proc) {
  auto stat = read_small_file(proc / "stat", 4 << 20);  // an intr line per CPU makes it big
  if (!stat) return std::nullopt;
  for (auto line : split(*stat, '\n')) {
    auto f = split_ws(line);
    if (f.size() != 2 || f[0] != "btime") continue;
    // Seconds; beyond 2^32 (the year 2106) is no boot time, and would
    // overflow the nanoseconds callers make of it.
    auto secs = parse_number<int64_t>(f[1]);
    if (secs && *secs >= 0 && *secs < (int64_t{1} << 32)) return secs;
    return std::nullopt;
  }
  return std::nullopt;
}

namespace {

class PslistStream : public RowStream {
 public:
  PslistStream(const Paths& paths, std::optional<int64_t> pid)
      : proc_(paths.proc), only_(pid), users_(paths.passwd), scanner_(paths.proc) {
    if (!only_ && scanner_.error())
      throw QueryError("pslist(): cannot read " + proc_.string() + ": " + errno_message(scanner_.error()));
    boot_ns_ = boot_time(proc_).value_or(0) * kNsPerSec;
    hz_ = ::sysconf(_SC_CLK_TCK);
    if (hz_ <= 0) hz_ = 100;
    page_size_ = ::sysconf(_SC_PAGESIZE);
    if (page_size_ <= 0) page_size_ = 4096;
  }

  Step next(std::vector<Row>& out, size_t budget) override {
    if (budget == 0 || !users_.load()) return Step::more();
    if (only_) {
      if (auto row = process(*only_)) out.push_back(std::move(*row));
      return Step::done();
    }
    // A process costs about five file operations, a non-process entry one.
    size_t added = 0;
    for (int entries = 0; entries < 64 && added < budget; ++entries) {
      int64_t pid;
      auto result = scanner_.next(pid);
      if (result == PidScanner::Result::end) return Step::done();
      if (result == PidScanner::Result::other) continue;
      if (auto row = process(pid)) {
        out.push_back(std::move(*row));
        ++added;
      }
    }
    return Step::more();
  }

 private:
  // A process's row, or nullopt when it exited or its stat is malformed.
  std::optional<Row> process(int64_t pid) {
    fs::path dir = proc_ / std::to_string(pid);
    auto stat = read_small_file(dir / "stat");
    if (!stat) return std::nullopt;
    // comm may hold spaces and ')': it ends at the last ')'.
    size_t open = stat->find('('), close = stat->rfind(')');
    if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
    // f[k] is field k+3 of proc(5): ppid is field 4, utime 14, stime 15,
    // starttime 22, vsize 23, rss 24.
    auto f = split_ws(std::string_view(*stat).substr(close + 1));
    if (f.size() < 22) return std::nullopt;
    auto ppid = parse_number<int64_t>(f[1]);
    auto utime = parse_number<uint64_t>(f[11]), stime = parse_number<uint64_t>(f[12]);
    auto ticks = parse_number<uint64_t>(f[19]);
    auto vsize = parse_number<int64_t>(f[20]);
    auto rss = parse_number<int64_t>(f[21]);
    if (!ppid || !ticks || !rss || !utime || !stime || !vsize) return std::nullopt;

    std::error_code ec, cwd_error;
    auto exe = fs::read_symlink(dir / "exe", ec);
    auto cwd = fs::read_symlink(dir / "cwd", cwd_error);
    std::string cmdline = read_small_file(dir / "cmdline", kMaxCmdline).value_or("");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    auto uid = real_uid(dir);

    Row row;
    // Velociraptor's columns (gopsutil's), in its order; "" where denied.
    row.set("Pid", pid);
    row.set("Ppid", *ppid);
    row.set("Name", stat->substr(open + 1, close - open - 1));
    row.set("CommandLine", trim(cmdline));
    row.set("CreateTime", Timestamp{boot_ns_ + ticks_to_ns(*ticks)});
    Dict times;
    times.set("user", static_cast<double>(*utime) / static_cast<double>(hz_));
    times.set("system", static_cast<double>(*stime) / static_cast<double>(hz_));
    row.set("Times", std::move(times));
    row.set("Exe", ec ? std::string() : exe.string());
    row.set("Cwd", cwd_error ? std::string() : cwd.string());
    row.set("Username", uid ? users_.name(*uid) : std::string());
    Dict memory;
    memory.set("rss", *rss * page_size_);
    memory.set("vms", *vsize);
    row.set("MemoryInfo", std::move(memory));
    return row;
  }

  static std::optional<int64_t> real_uid(const fs::path& dir) {
    auto status = read_small_file(dir / "status");
    if (!status) return std::nullopt;
    for (auto line : split(*status, '\n')) {
      auto f = split_ws(line);  // Uid: real effective saved fs
      if (f.size() >= 2 && f[0] == "Uid:") return parse_number<uint32_t>(f[1]);
    }
    return std::nullopt;
  }

  int64_t ticks_to_ns(uint64_t ticks) const {
    // Capped so that a hostile stat cannot overflow the timestamp.
    uint64_t secs = std::min<uint64_t>(ticks / hz_, uint64_t{1} << 32);
    return static_cast<int64_t>(secs) * kNsPerSec +
           static_cast<int64_t>(ticks % hz_) * kNsPerSec / hz_;
  }

  static std::string trim(const std::string& s) {
    size_t start = s.find_first_not_of(' ');
    if (start == std::string::npos) return "";
    return s.substr(start, s.find_last_not_of(' ') - start + 1);
  }

  // A command line is cut here: a few of them fill a slice's reading.
  static constexpr size_t kMaxCmdline = 256 << 10;

  fs::path proc_;
  std::optional<int64_t> only_;
  UserNames users_;
  PidScanner scanner_;
  int64_t boot_ns_ = 0, hz_ = 100, page_size_ = 4096;
};

// ---- netstat

struct SocketTable {
  const char* file;
  bool v6;
  bool tcp;
};
constexpr SocketTable kSocketTables[] = {
    {"tcp", false, true}, {"tcp6", true, true}, {"udp", false, false}, {"udp6", true, false}};

const char* tcp_state(unsigned state) {
  static const char* const kNames[] = {"",          "ESTABLISHED", "SYN_SENT",   "SYN_RECV",
                                       "FIN_WAIT1", "FIN_WAIT2",   "TIME_WAIT",  "CLOSE",
                                       "CLOSE_WAIT", "LAST_ACK",   "LISTEN",     "CLOSING",
                                       "NEW_SYN_RECV"};
  return state < std::size(kNames) ? kNames[state] : "";
}

// "0100007F:0050": the address is printed as 32-bit words in host byte
// order, so each word's value copied to memory gives the network bytes.
std::optional<std::pair<std::string, int64_t>> parse_endpoint(std::string_view s, bool v6) {
  size_t colon = s.find(':');
  size_t words = v6 ? 4 : 1;
  if (colon != words * 8) return std::nullopt;
  uint32_t addr[4];
  for (size_t i = 0; i < words; ++i) {
    auto word = parse_number<uint32_t>(s.substr(i * 8, 8), 16);
    if (!word) return std::nullopt;
    addr[i] = *word;
  }
  auto port = parse_number<uint16_t>(s.substr(colon + 1), 16);
  char text[INET6_ADDRSTRLEN];
  if (!port || !::inet_ntop(v6 ? AF_INET6 : AF_INET, addr, text, sizeof text)) return std::nullopt;
  return std::pair{std::string(text), int64_t{*port}};
}

class NetstatStream : public RowStream {
 public:
  explicit NetstatStream(const Paths& paths) : proc_(paths.proc), holders_(paths.proc) {}

  Step next(std::vector<Row>& out, size_t budget) override {
    if (budget == 0 || !holders_scanned_) {
      holders_scanned_ = holders_.scan(256);
      return Step::more();
    }
    reader_.new_slice();
    std::string line;
    for (size_t added = 0; added < budget && table_ < std::size(kSocketTables);) {
      if (!open_) {
        open_ = true;
        reader_ = LineReader();
        if (reader_.open(proc_ / "net" / kSocketTables[table_].file) != 0) next_table();
        continue;
      }
      auto result = reader_.next(line);
      if (result == LineReader::Result::again) return Step::more();
      if (result == LineReader::Result::end) {
        next_table();  // a read error ends a table, as a missing file skips it
      } else if (auto row = socket_row(line, kSocketTables[table_])) {
        out.push_back(std::move(*row));
        ++added;
      }
    }
    return table_ < std::size(kSocketTables) ? Step::more() : Step::done();
  }

 private:
  void next_table() {
    ++table_;
    open_ = false;
  }

  //   sl  local_address rem_address   st tx:rx tr:when retrnsmt   uid  timeout inode
  //   0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 21765
  std::optional<Row> socket_row(std::string_view line, const SocketTable& table) const {
    auto f = split_ws(line);
    if (f.size() < 10 || f[0].back() != ':') return std::nullopt;  // the header, or garbage
    auto local = parse_endpoint(f[1], table.v6);
    auto remote = parse_endpoint(f[2], table.v6);
    auto state = parse_number<unsigned>(f[3], 16);
    auto uid = parse_number<uint32_t>(f[7]);
    auto inode = parse_number<uint64_t>(f[9]);
    if (!local || !remote || !state || !uid || !inode) return std::nullopt;
    // UDP has no connection states: only a connected socket says so.
    const char* status = table.tcp ? tcp_state(*state) : *state == 1 ? "ESTABLISHED" : "";
    Row row;
    row.set("Family", table.v6 ? "IPv6" : "IPv4");
    row.set("Type", table.tcp ? "TCP" : "UDP");
    row.set("Status", status);
    row.set("Laddr", local->first);
    row.set("Lport", local->second);
    row.set("Raddr", remote->first);
    row.set("Rport", remote->second);
    row.set("Uid", int64_t{*uid});
    row.set("Inode", Value(*inode));
    // -1: nobody's (inode 0 is no socket's); a shared socket's, the first
    // holder found: the lowest pid, as /proc lists them.
    auto holders = *inode ? holders_.find(*inode) : nullptr;
    row.set("Pid", holders ? holders->front().pid : int64_t{-1});
    return row;
  }

  fs::path proc_;
  SocketHolders holders_;
  bool holders_scanned_ = false;
  size_t table_ = 0;
  bool open_ = false;
  LineReader reader_;
};

// ---- mounts

// mountinfo escapes ' ', '\t', '\n' and '\\' as \ooo.
std::string unescape_octal(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    auto octal = [&](size_t k) { return s[k] >= '0' && s[k] <= '7'; };
    if (s[i] == '\\' && i + 3 < s.size() && octal(i + 1) && octal(i + 2) && octal(i + 3)) {
      out += static_cast<char>(((s[i + 1] - '0') << 6) | ((s[i + 2] - '0') << 3) | (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
// (optional fields until "-"; fields never hold a raw space).
std::optional<Row> mount_row(std::string_view line) {
  auto f = split(line, ' ');
  size_t dash = 6;
  while (dash < f.size() && f[dash] != "-") ++dash;
  if (dash + 4 != f.size()) return std::nullopt;
  auto id = parse_number<int64_t>(f[0]);
  auto parent = parse_number<int64_t>(f[1]);
  if (!id || !parent) return std::nullopt;
  Row row;
  row.set("MountId", *id);
  row.set("ParentId", *parent);
  row.set("Device", f[2]);
  row.set("Root", unescape_octal(f[3]));
  row.set("MountPoint", unescape_octal(f[4]));
  row.set("Options", unescape_octal(f[5]));
  row.set("FSType", unescape_octal(f[dash + 1]));
  row.set("Source", unescape_octal(f[dash + 2]));
  row.set("SuperOptions", unescape_octal(f[dash + 3]));
  return row;
}

// ---- info

// PRETTY_NAME from os-release(5).
std::string platform(const Paths& paths) {
  for (auto& path : paths.os_release) {
    auto text = read_small_file(path);
    if (!text) continue;
    for (auto line : split(*text, '\n')) {
      constexpr std::string_view kKey = "PRETTY_NAME=";
      if (line.substr(0, kKey.size()) != kKey) continue;
      auto value = line.substr(kKey.size());
      if (value.size() >= 2 && (value[0] == '"' || value[0] == '\'') && value.back() == value[0])
        value = value.substr(1, value.size() - 2);
      return std::string(value);
    }
    return "";
  }
  return "";
}

Row info_row(const Paths& paths) {
  struct utsname uts;
  if (::uname(&uts) != 0) throw QueryError("info(): uname: " + errno_message(errno));
  int64_t uptime = 0;
  if (auto text = read_small_file(paths.proc / "uptime")) {
    auto f = split_ws(*text);  // "12345.67 54321.00"
    if (!f.empty()) uptime = parse_number<int64_t>(f[0].substr(0, f[0].find('.'))).value_or(0);
  }
  Row row;
  row.set("Hostname", uts.nodename);
  row.set("OS", "linux");
  row.set("Platform", platform(paths));
  row.set("KernelVersion", uts.release);
  row.set("Architecture", uts.machine);
  row.set("BootTime", Timestamp{boot_time(paths.proc).value_or(0) * kNsPerSec});
  row.set("Uptime", uptime);
  row.set("Pid", int64_t{::getpid()});
  return row;
}

// ---- kill

// Signals when pulled, not when made: a query that never reads it kills nothing.
class KillStream : public RowStream {
 public:
  KillStream(pid_t pid, int signal) : pid_(pid), signal_(signal) {}
  Step next(std::vector<Row>& out, size_t budget) override {
    if (budget == 0) return Step::more();
    int error = ::kill(pid_, signal_) == 0 ? 0 : errno;
    Row row;
    row.set("Pid", int64_t{pid_});
    row.set("Signal", int64_t{signal_});
    row.set("Success", error == 0);
    row.set("Error", error ? errno_message(error) : std::string());
    out.push_back(std::move(row));
    return Step::done();
  }

 private:
  pid_t pid_;
  int signal_;
};

// The pid and signal, when given.
void check_kill(const Args& args) {
  auto pid = args.integer("pid");
  // 0 and negative pids signal process groups or every process; a pid past
  // pid_t would be truncated to another one.
  if (pid && (*pid <= 0 || *pid > std::numeric_limits<pid_t>::max()))
    args.fail("pid", "must be a single process id, got " + std::to_string(*pid));
  if (pid && *pid == ::getpid()) args.fail("pid", "refusing to signal the agent itself");
  int64_t signal = args.integer("signal").value_or(SIGTERM);
  if (signal < 0 || signal > SIGRTMAX) args.fail("signal", "no such signal: " + std::to_string(signal));
}

std::unique_ptr<RowStream> make_kill(const Args& args, Env&) {
  auto pid = args.integer("pid");
  if (!pid) args.fail("pid", "required");
  check_kill(args);
  int64_t signal = args.integer("signal").value_or(SIGTERM);
  return std::make_unique<KillStream>(static_cast<pid_t>(*pid), static_cast<int>(signal));
}

void check_pslist(const Args& args) {
  auto pid = args.integer("pid");
  if (pid && *pid <= 0) args.fail("pid", "must be positive, got " + std::to_string(*pid));
}

std::unique_ptr<RowStream> make_pslist(const Args& args, Env& env) {
  check_pslist(args);
  return std::make_unique<PslistStream>(*env.paths, args.integer("pid"));
}

}  // namespace

bool SocketHolders::scan(int ops) {
  for (; ops > 0; --ops) {
    if (fds_) {
      dirent* entry = ::readdir(fds_.get());
      if (!entry) {
        fds_.reset();
        continue;
      }
      auto fd = parse_number<int64_t>(entry->d_name);
      char target[64];
      ssize_t n = fd ? ::readlinkat(::dirfd(fds_.get()), entry->d_name, target, sizeof target) : -1;
      if (n <= 0 || static_cast<size_t>(n) >= sizeof target) continue;  // not a socket
      std::string_view link(target, static_cast<size_t>(n));
      constexpr std::string_view kPrefix = "socket:[";
      if (link.substr(0, kPrefix.size()) != kPrefix || link.back() != ']') continue;
      if (auto inode = parse_number<uint64_t>(link.substr(kPrefix.size(), link.size() - kPrefix.size() - 1)))
        holders_[*inode].push_back({pid_, *fd});
      continue;
    }
    auto result = pids_.next(pid_);
    if (result == PidScanner::Result::end) return true;
    if (result == PidScanner::Result::pid)
      fds_.reset(::opendir((proc_ / std::to_string(pid_) / "fd").c_str()));  // EACCES, gone: skipped
  }
  return false;
}

std::optional<int64_t> process_of(const std::string& name) {
  std::string_view digits = name;
  if (!digits.empty() && digits.front() == '/') digits.remove_prefix(1);
  int64_t pid = 0;
  auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), pid);
  if (digits.empty() || error != std::errc() || end != digits.data() + digits.size() || pid <= 0) return std::nullopt;
  return pid;
}

std::optional<std::vector<MemoryRange>> readable_ranges(const Paths& paths, int64_t pid) {
  std::ifstream maps(paths.proc / std::to_string(pid) / "maps");
  if (!maps) return std::nullopt;
  std::vector<MemoryRange> out;
  std::string line;
  while (std::getline(maps, line)) {
    // start-end perms offset dev inode [path]
    uint64_t start = 0, end = 0;
    auto dash = line.find('-'), space = line.find(' ');
    if (dash == std::string::npos || space == std::string::npos || space < dash || space + 1 >= line.size()) continue;
    auto parse = [&](size_t from, size_t to, uint64_t& v) {
      return std::from_chars(line.data() + from, line.data() + to, v, 16).ec == std::errc();
    };
    if (!parse(0, dash, start) || !parse(dash + 1, space, end) || end <= start) continue;
    if (line[space + 1] != 'r' || line.find("[vsyscall]") != std::string::npos) continue;
    out.push_back({start, end - start});
  }
  return out;
}

void add_linux_proc_plugins(Registry& registry) {
  registry.add(PluginSpec{
      "pslist",
      "Processes: Pid, Ppid, Name, CommandLine, CreateTime, Times {user, system} (seconds), Exe, Cwd, Username, "
      "MemoryInfo {rss, vms} (bytes).",
      {{"pid", "int", false, "only this process"}}, false, make_pslist},
      check_pslist);
  registry.add(PluginSpec{
      "users", "Local accounts from passwd: Name, Uid, Gid, Description, Homedir, Shell.", {}, false,
      [](const Args&, Env& env) -> std::unique_ptr<RowStream> {
        return line_rows("users()", env.paths->passwd.string(),
                         [](std::string_view line) -> std::optional<Row> {
                           auto e = parse_passwd_line(line);
                           if (!e) return std::nullopt;
                           Row row;
                           row.set("Name", e->name);
                           row.set("Uid", e->uid);
                           row.set("Gid", e->gid);
                           row.set("Description", e->description);
                           row.set("Homedir", e->home);
                           row.set("Shell", e->shell);
                           return row;
                         });
      }});
  registry.add(PluginSpec{
      "netstat",
      "TCP and UDP sockets: Family, Type, Status, Laddr, Lport, Raddr, Rport, Uid, Inode, Pid.", {},
      false, [](const Args&, Env& env) -> std::unique_ptr<RowStream> {
        return std::make_unique<NetstatStream>(*env.paths);
      }});
  registry.add(PluginSpec{
      "mounts",
      "Mounts from mountinfo: MountId, ParentId, Device, Root, MountPoint, Options, FSType, "
      "Source, SuperOptions.",
      {}, false, [](const Args&, Env& env) -> std::unique_ptr<RowStream> {
        return line_rows("mounts()", env.paths->mountinfo.string(), mount_row);
      }});
  registry.add(PluginSpec{
      "info", "This host: Hostname, OS, Platform, KernelVersion, Architecture, BootTime, Uptime, Pid.",
      {}, false, [](const Args&, Env& env) -> std::unique_ptr<RowStream> {
        std::vector<Row> rows;
        rows.push_back(info_row(*env.paths));
        return rows_stream(std::move(rows));
      }});
  registry.add(PluginSpec{"kill", "Sends a signal to a process (a response): Pid, Signal, Success, Error.",
                          {{"pid", "int", true, "the process"},
                           {"signal", "int", false, "the signal number (default 15, SIGTERM)"}},
                          false, make_kill},
                  check_kill);
}

}  // namespace outpost::vql
