#include "queries/linux_plugins.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>

#include "tests/log_capture.hpp"
#include "tests/temp_dir.hpp"

namespace outpost::vql {
namespace {

namespace fs = std::filesystem;
using outpost::testing::TempDir;
using Arguments = std::vector<std::pair<std::string, Value>>;

void write_file(const fs::path& path, const std::string& content) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << content;
  ASSERT_TRUE(out.good()) << path;
}

const Value& field(const Row& row, const char* key) {
  static const Value kMissing;
  auto v = row.find(key);
  if (!v) ADD_FAILURE() << "no column " << key << " in " << to_json(row);
  return v ? *v : kMissing;
}
std::string str(const Row& row, const char* key) {
  auto s = field(row, key).as_string();
  if (!s) ADD_FAILURE() << key << " is not a string in " << to_json(row);
  return s ? *s : "";
}
int64_t num(const Row& row, const char* key) {
  auto i = field(row, key).as_int();
  if (!i) ADD_FAILURE() << key << " is not an int in " << to_json(row);
  return i ? *i : -12345;
}
bool flag(const Row& row, const char* key) {
  auto b = field(row, key).as_bool();
  if (!b) ADD_FAILURE() << key << " is not a bool in " << to_json(row);
  return b && *b;
}
int64_t time_ns(const Row& row, const char* key) {
  auto t = field(row, key).as_timestamp();
  if (!t) ADD_FAILURE() << key << " is not a timestamp in " << to_json(row);
  return t ? t->ns : -12345;
}
std::vector<std::string> column(const std::vector<Row>& rows, const char* key) {
  std::vector<std::string> out;
  for (auto& row : rows) out.push_back(str(row, key));
  return out;
}
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const QueryError& e) {
    return e.what();
  }
  return "(no error)";
}

class LinuxPlugins : public ::testing::Test {
 protected:
  LinuxPlugins() { add_linux_plugins(registry_); }

  std::unique_ptr<RowStream> make(const std::string& plugin, Arguments args) {
    auto spec = registry_.plugin(plugin);
    if (!spec) throw std::runtime_error("no plugin " + plugin);
    Args a(plugin, std::move(args));
    check_args(a, spec->args);
    env_.paths = std::make_shared<const Paths>(paths_);
    return spec->make(a, env_);
  }

  // Drains with a small budget, so that every stream is sliced.
  static std::vector<Row> drain(RowStream& stream, size_t budget = 3) {
    std::vector<Row> rows;
    for (int calls = 0; calls < 10'000'000; ++calls) {
      size_t before = rows.size();
      Step step = stream.next(rows, budget);
      EXPECT_LE(rows.size() - before, budget);
      if (step.state == Step::State::done) return rows;
      EXPECT_TRUE(step.state == Step::State::more);
    }
    ADD_FAILURE() << "the stream never ended";
    return rows;
  }

  std::vector<Row> run(const std::string& plugin, Arguments args = {}, size_t budget = 3) {
    auto stream = make(plugin, std::move(args));
    return drain(*stream, budget);
  }

  Value call(const std::string& function, Arguments args) {
    auto spec = registry_.function(function);
    if (!spec) throw std::runtime_error("no function " + function);
    Args a(function, std::move(args));
    check_args(a, spec->args);
    env_.paths = std::make_shared<const Paths>(paths_);
    return spec->call(a, env_);
  }

  // A fake <proc> with a boot time.
  fs::path fake_proc() {
    fs::path proc = dir_.path("proc");
    write_file(proc / "stat", "cpu  1 2 3 4\nintr 1 2 3\nbtime 1700000000\nprocesses 9\n");
    paths_.proc = proc;
    return proc;
  }

  Registry registry_;
  Paths paths_;  // what the next call's Env gets
  Env env_;
  TempDir dir_;
};

TEST_F(LinuxPlugins, RegistersEverything) {
  for (auto name : {"pslist", "users", "netstat", "mounts", "info", "glob", "read_file",
                    "parse_lines", "kill"})
    EXPECT_NE(registry_.plugin(name), nullptr) << name;
  EXPECT_NE(registry_.function("hash"), nullptr);
  EXPECT_NE(registry_.function("stat"), nullptr);
}

// ---- pslist

std::string stat_line(int pid, const std::string& comm, int ppid, uint64_t start_ticks, int64_t rss) {
  return std::to_string(pid) + " (" + comm + ") S " + std::to_string(ppid) +
         " 1 1 0 -1 4194560 10 0 0 0 5 6 0 0 20 0 1 0 " + std::to_string(start_ticks) + " 1000000 " +
         std::to_string(rss) + " 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
}

TEST_F(LinuxPlugins, PslistFakeProc) {
  fs::path proc = fake_proc();
  paths_.passwd = dir_.path("passwd");
  write_file(paths_.passwd, "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n"
                                "bob:x:1001:1001::/home/bob:/bin/sh\n");
  // comm holds ") " and spaces: only the last ')' ends it.
  write_file(proc / "100/stat", stat_line(100, "a) b", 1, 250, 10));
  write_file(proc / "100/status", "Name:\ta) b\nUmask:\t0022\nUid:\t1000\t1001\t1000\t1000\nGid:\t5\t5\t5\t5\n");
  write_file(proc / "100/cmdline", std::string("a) b\0--x\0y z\0", 13));
  write_file(proc / "200/stat", stat_line(200, "init", 0, 7, 3));
  write_file(proc / "200/status", "Name:\tinit\nUid:\t4242\t4242\t4242\t4242\n");
  write_file(proc / "200/cmdline", "");
  fs::create_directory_symlink("/sbin/init", proc / "200/exe");
  write_file(proc / "300/stat", "300 (trunc");   // truncated: skipped
  write_file(proc / "301/stat", stat_line(301, "x", 1, 1, 1).substr(0, 40));  // too few fields
  fs::create_directories(proc / "400");           // exited: skipped
  fs::create_directory_symlink("100", proc / "self");

  auto rows = run("pslist");
  std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) { return num(a, "Pid") < num(b, "Pid"); });
  ASSERT_EQ(rows.size(), 2u);
  std::vector<std::string> columns;
  for (auto& [k, v] : rows[0].items()) columns.push_back(k);
  EXPECT_EQ(columns, (std::vector<std::string>{"Pid", "Ppid", "Name", "CommandLine", "CreateTime", "Times", "Exe",
                                               "Cwd", "Username", "MemoryInfo"}));
  int64_t hz = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
  int64_t boot = 1700000000LL * 1'000'000'000;

  EXPECT_EQ(num(rows[0], "Pid"), 100);
  EXPECT_EQ(num(rows[0], "Ppid"), 1);
  EXPECT_EQ(str(rows[0], "Name"), "a) b");
  EXPECT_EQ(str(rows[0], "Exe"), "");
  EXPECT_EQ(str(rows[0], "CommandLine"), "a) b --x y z");
  EXPECT_EQ(str(rows[0], "Username"), "alice");  // the real uid, not the effective one
  EXPECT_EQ(time_ns(rows[0], "CreateTime"), boot + 250 * 1'000'000'000LL / hz);
  EXPECT_EQ(num(*field(rows[0], "MemoryInfo").as_dict(), "rss"), 10 * page);
  EXPECT_EQ(num(*field(rows[0], "MemoryInfo").as_dict(), "vms"), 1000000);
  ASSERT_TRUE(field(rows[0], "Times").as_dict());
  EXPECT_DOUBLE_EQ(*field(*field(rows[0], "Times").as_dict(), "user").as_double(), 5.0 / static_cast<double>(hz));
  EXPECT_DOUBLE_EQ(*field(*field(rows[0], "Times").as_dict(), "system").as_double(), 6.0 / static_cast<double>(hz));

  EXPECT_EQ(num(rows[1], "Pid"), 200);
  EXPECT_EQ(num(rows[1], "Ppid"), 0);
  EXPECT_EQ(str(rows[1], "Name"), "init");
  EXPECT_EQ(str(rows[1], "Exe"), "/sbin/init");
  EXPECT_EQ(str(rows[1], "CommandLine"), "");
  EXPECT_EQ(str(rows[1], "Username"), "4242");  // not in passwd
  EXPECT_EQ(time_ns(rows[1], "CreateTime"), boot + 7 * 1'000'000'000LL / hz);
  EXPECT_EQ(num(*field(rows[1], "MemoryInfo").as_dict(), "rss"), 3 * page);

  auto one = run("pslist", {{"pid", Value(int64_t{200})}});
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(str(one[0], "Name"), "init");
  EXPECT_TRUE(run("pslist", {{"pid", Value(int64_t{300})}}).empty());
  EXPECT_TRUE(run("pslist", {{"pid", Value(int64_t{999})}}).empty());
}

TEST_F(LinuxPlugins, PslistRealSelf) {
  auto rows = run("pslist", {{"pid", Value(int64_t{getpid()})}});
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(num(rows[0], "Pid"), getpid());
  EXPECT_EQ(num(rows[0], "Ppid"), getppid());
  EXPECT_EQ(str(rows[0], "Exe"), fs::read_symlink("/proc/self/exe").string());
  std::string comm;
  std::getline(std::ifstream("/proc/self/comm"), comm);
  EXPECT_EQ(str(rows[0], "Name"), comm);
  EXPECT_NE(str(rows[0], "CommandLine").find("outpost-query-tests"), std::string::npos);
  ASSERT_TRUE(field(rows[0], "MemoryInfo").as_dict());
  EXPECT_GT(num(*field(rows[0], "MemoryInfo").as_dict(), "rss"), 0);
  EXPECT_GE(num(*field(rows[0], "MemoryInfo").as_dict(), "vms"), num(*field(rows[0], "MemoryInfo").as_dict(), "rss"));
  EXPECT_EQ(str(rows[0], "Cwd"), fs::current_path().string());
  int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_LE(time_ns(rows[0], "CreateTime"), now);
  EXPECT_GT(time_ns(rows[0], "CreateTime"), now - 3600LL * 1'000'000'000);
  EXPECT_FALSE(str(rows[0], "Username").empty());
}

TEST_F(LinuxPlugins, PslistRealScanFindsSelf) {
  auto rows = run("pslist", {}, 7);
  EXPECT_GT(rows.size(), 1u);
  EXPECT_EQ(std::count_if(rows.begin(), rows.end(), [](auto& r) { return num(r, "Pid") == getpid(); }), 1);
}

TEST_F(LinuxPlugins, PslistBadArguments) {
  EXPECT_EQ(error_of([&] { make("pslist", {{"pid", Value("x")}}); }),
            "pslist(): pid: expected int, got string");
  EXPECT_NE(error_of([&] { make("pslist", {{"pid", Value(int64_t{0})}}); }).find("pslist(): pid:"),
            std::string::npos);
  EXPECT_NE(error_of([&] { make("pslist", {{"bogus", Value(1)}}); }).find("pslist(): bogus:"),
            std::string::npos);
}

// Truncated and random /proc, passwd and mountinfo content: rows or no
// rows, never a crash (run under ASan/UBSan too).
TEST_F(LinuxPlugins, HostileInputDoesNotCrash) {
  fs::path proc = fake_proc();
  paths_.passwd = dir_.path("passwd");
  paths_.mountinfo = dir_.path("mountinfo");
  std::string good_stat = stat_line(77, "x) (y", 1, 5, 5);
  std::string good_tcp =
      "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000  0 55555 1\n";
  std::string good_mount = "36 22 0:31 /a\\040 /b rw master:1 - tmpfs src rw\n";
  uint64_t seed = 12345;
  auto random = [&] { return (seed = seed * 6364136223846793005ULL + 1442695040888963407ULL) >> 33; };
  auto mangle = [&](std::string s) {
    if (random() % 2) s = s.substr(0, random() % (s.size() + 1));
    for (int i = random() % 6; i > 0 && !s.empty(); --i) s[random() % s.size()] = static_cast<char>(random());
    return s;
  };
  for (int round = 0; round < 300; ++round) {
    write_file(proc / "77/stat", mangle(good_stat));
    write_file(proc / "77/status", mangle("Uid:\t1000\t1000\t1000\t1000\n"));
    write_file(proc / "77/cmdline", mangle(std::string("a\0b\0", 4)));
    write_file(proc / "stat", mangle("btime 1700000000\n"));
    write_file(proc / "uptime", mangle("12.5 3.0\n"));
    write_file(proc / "net/tcp", mangle(good_tcp));
    write_file(proc / "net/udp6", mangle(good_tcp));
    write_file(paths_.passwd, mangle("alice:x:1000:1000::/home:/bin/sh\n"));
    write_file(paths_.mountinfo, mangle(good_mount));
    for (auto plugin : {"pslist", "netstat", "mounts", "users", "info"}) {
      try {
        auto rows = run(plugin);
        EXPECT_LE(rows.size(), 1u) << plugin;
      } catch (const QueryError& e) {
        ADD_FAILURE() << plugin << ": " << e.what();
      }
    }
  }
}

// ---- users

TEST_F(LinuxPlugins, UsersSkipMalformedLines) {
  paths_.passwd = dir_.path("passwd");
  write_file(paths_.passwd,
             "root:x:0:0:root:/root:/bin/bash\n"
             "# a comment\n"
             "daemon:x:1:1:daemon,,,:/usr/sbin:/usr/sbin/nologin\n"
             "broken line\n"
             "bad:x:notanumber:1::/:/bin/sh\n"
             "negative:x:-1:1::/:/bin/sh\n"
             "short:x:1:2\n"
             "toolong:x:1:1:a:b:c:d\n"
             "+nisuser::::::\n"
             ":x:3:3::/:/bin/sh\n"
             "\n"
             "alice:x:1000:1000:Alice Liddell:/home/alice:/bin/zsh\n"
             "last:x:5:6:::");  // no final newline
  auto rows = run("users");
  EXPECT_EQ(column(rows, "Name"), (std::vector<std::string>{"root", "daemon", "alice", "last"}));
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(num(rows[2], "Uid"), 1000);
  EXPECT_EQ(num(rows[2], "Gid"), 1000);
  EXPECT_EQ(str(rows[2], "Description"), "Alice Liddell");
  EXPECT_EQ(str(rows[2], "Homedir"), "/home/alice");
  EXPECT_EQ(str(rows[2], "Shell"), "/bin/zsh");
  EXPECT_EQ(num(rows[3], "Gid"), 6);
  EXPECT_EQ(str(rows[3], "Shell"), "");

  paths_.passwd = dir_.path("nothing");
  EXPECT_NE(error_of([&] { run("users"); }).find("users(): cannot open"), std::string::npos);
}

// ---- netstat

TEST_F(LinuxPlugins, NetstatFakeProc) {
  fs::path proc = fake_proc();
  const char* header =
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
  write_file(proc / "net/tcp",
             std::string(header) +
                 "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 "
                 "55555 1 0000000000000000 100 0 0 10 0\n"
                 "   1: 0100007F:1F90 0200007F:C350 06 00000000:00000000 03:00000A2B 00000000     0        0 "
                 "0 3 0000000000000000\n"
                 "garbage\n");
  write_file(proc / "net/tcp6",
             std::string(header) +
                 "   0: 00000000000000000000000001000000:0016 B80D0120000000000000000001000000:D431 01 "
                 "00000000:00000000 00:00000000 00000000     0        0 66666 1 0000000000000000 20 4 30 "
                 "10 -1\n");
  // udp and udp6 are missing: skipped.
  fs::create_directories(proc / "123/fd");
  fs::create_symlink("socket:[55555]", proc / "123/fd/4");
  fs::create_symlink("/dev/null", proc / "123/fd/5");
  fs::create_directories(proc / "456/fd");
  fs::create_symlink("pipe:[66666]", proc / "456/fd/1");  // not a socket
  fs::create_symlink("socket:[66666]", proc / "456/fd/7");

  auto rows = run("netstat");
  ASSERT_EQ(rows.size(), 3u);
  std::vector<std::string> columns;
  for (auto& [k, v] : rows[0].items()) columns.push_back(k);
  EXPECT_EQ(columns, (std::vector<std::string>{"Family", "Type", "Status", "Laddr", "Lport", "Raddr",
                                               "Rport", "Uid", "Inode", "Pid"}));
  EXPECT_EQ(str(rows[0], "Family"), "IPv4");
  EXPECT_EQ(str(rows[0], "Type"), "TCP");
  EXPECT_EQ(str(rows[0], "Status"), "LISTEN");
  EXPECT_EQ(str(rows[0], "Laddr"), "127.0.0.1");
  EXPECT_EQ(num(rows[0], "Lport"), 8080);
  EXPECT_EQ(str(rows[0], "Raddr"), "0.0.0.0");
  EXPECT_EQ(num(rows[0], "Rport"), 0);
  EXPECT_EQ(num(rows[0], "Uid"), 1000);
  EXPECT_EQ(num(rows[0], "Inode"), 55555);
  EXPECT_EQ(num(rows[0], "Pid"), 123);

  EXPECT_EQ(str(rows[1], "Status"), "TIME_WAIT");
  EXPECT_EQ(str(rows[1], "Raddr"), "127.0.0.2");
  EXPECT_EQ(num(rows[1], "Rport"), 50000);
  EXPECT_EQ(num(rows[1], "Pid"), -1);  // inode 0: nobody's

  EXPECT_EQ(str(rows[2], "Family"), "IPv6");
  EXPECT_EQ(str(rows[2], "Status"), "ESTABLISHED");
  EXPECT_EQ(str(rows[2], "Laddr"), "::1");
  EXPECT_EQ(num(rows[2], "Lport"), 22);
  EXPECT_EQ(str(rows[2], "Raddr"), "2001:db8::1");
  EXPECT_EQ(num(rows[2], "Rport"), 0xD431);
  EXPECT_EQ(num(rows[2], "Pid"), 456);
}

// A socket several processes hold is the first one found's; one nobody
// holds is -1's.
TEST_F(LinuxPlugins, NetstatPidOfSharedAndUnheldSockets) {
  fs::path proc = fake_proc();
  const std::string line = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000  0 ";
  write_file(proc / "net/tcp", "  sl  local_address rem_address   st ...\n" + line + "700 1\n" + line + "800 1\n");
  for (auto pid : {"300", "400"}) {
    fs::create_directories(proc / pid / "fd");
    fs::create_symlink("socket:[700]", proc / pid / "fd/3");
  }
  auto rows = run("netstat");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(num(rows[0], "Inode"), 700);
  EXPECT_TRUE(num(rows[0], "Pid") == 300 || num(rows[0], "Pid") == 400) << num(rows[0], "Pid");
  EXPECT_EQ(num(rows[1], "Inode"), 800);
  EXPECT_EQ(num(rows[1], "Pid"), -1);
}

// Without <proc>, pslist() fails saying why; netstat() has no rows.
TEST_F(LinuxPlugins, WithoutProcPslistFailsAndNetstatHasNoRows) {
  paths_.proc = dir_.path("nowhere");
  EXPECT_EQ(error_of([&] { run("pslist"); }),
            "pslist(): cannot read " + paths_.proc.string() + ": No such file or directory");
  EXPECT_TRUE(run("netstat").empty());
}

TEST_F(LinuxPlugins, NetstatRealListeningSocket) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  int port = ntohs(addr.sin_port);

  auto rows = run("netstat", {}, 5);
  close(fd);
  auto it = std::find_if(rows.begin(), rows.end(), [&](auto& r) {
    return str(r, "Type") == "TCP" && str(r, "Laddr") == "127.0.0.1" && num(r, "Lport") == port;
  });
  ASSERT_NE(it, rows.end()) << "port " << port;
  EXPECT_EQ(str(*it, "Status"), "LISTEN");
  EXPECT_EQ(str(*it, "Family"), "IPv4");
  EXPECT_EQ(num(*it, "Pid"), getpid());
  EXPECT_EQ(num(*it, "Uid"), static_cast<int64_t>(getuid()));
}

// ---- mounts

TEST_F(LinuxPlugins, MountsUnescape) {
  paths_.mountinfo = dir_.path("mountinfo");
  write_file(paths_.mountinfo,
             "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n"
             "36 22 0:31 /my\\040dir /mnt/with\\040space rw,nosuid master:1 shared:5 - tmpfs my\\040src "
             "rw,size=10k\n"
             "garbage line\n"
             "x 22 0:1 / /bad rw - proc proc rw\n"
             "40 22 0:40 / /back\\134slash rw - proc proc rw");
  auto rows = run("mounts", {}, 2);
  ASSERT_EQ(rows.size(), 3u);
  std::vector<std::string> columns;
  for (auto& [k, v] : rows[0].items()) columns.push_back(k);
  EXPECT_EQ(columns, (std::vector<std::string>{"MountId", "ParentId", "Device", "Root", "MountPoint",
                                               "Options", "FSType", "Source", "SuperOptions"}));
  EXPECT_EQ(num(rows[1], "MountId"), 36);
  EXPECT_EQ(num(rows[1], "ParentId"), 22);
  EXPECT_EQ(str(rows[1], "Device"), "0:31");
  EXPECT_EQ(str(rows[1], "Root"), "/my dir");
  EXPECT_EQ(str(rows[1], "MountPoint"), "/mnt/with space");
  EXPECT_EQ(str(rows[1], "Options"), "rw,nosuid");
  EXPECT_EQ(str(rows[1], "FSType"), "tmpfs");
  EXPECT_EQ(str(rows[1], "Source"), "my src");
  EXPECT_EQ(str(rows[1], "SuperOptions"), "rw,size=10k");
  EXPECT_EQ(str(rows[0], "Source"), "/dev/sda1");
  EXPECT_EQ(str(rows[2], "MountPoint"), "/back\\slash");
  EXPECT_EQ(str(rows[2], "FSType"), "proc");
}

// ---- info

TEST_F(LinuxPlugins, InfoRow) {
  fs::path proc = fake_proc();
  write_file(proc / "uptime", "12345.67 54321.00\n");
  write_file(dir_.path("os-release"), "NAME=Test\nPRETTY_NAME=\"Outpost Test OS 1\"\n");
  paths_.os_release = {dir_.path("missing"), dir_.path("os-release")};
  auto rows = run("info");
  ASSERT_EQ(rows.size(), 1u);
  struct utsname uts;
  ASSERT_EQ(uname(&uts), 0);
  EXPECT_EQ(str(rows[0], "Hostname"), uts.nodename);
  EXPECT_EQ(str(rows[0], "OS"), "linux");
  EXPECT_EQ(str(rows[0], "KernelVersion"), uts.release);
  EXPECT_EQ(str(rows[0], "Architecture"), uts.machine);
  EXPECT_EQ(time_ns(rows[0], "BootTime"), 1700000000LL * 1'000'000'000);
  EXPECT_EQ(num(rows[0], "Uptime"), 12345);
  EXPECT_EQ(num(rows[0], "Pid"), getpid());
  EXPECT_EQ(str(rows[0], "Platform"), "Outpost Test OS 1");
}

// The parsers fuzzer's finding: a btime whose nanoseconds do not fit in 64
// bits was multiplied anyway (signed overflow); it is no boot time now.
TEST_F(LinuxPlugins, ABootTimeBeyondTheYear2106IsNone) {
  fs::path proc = fake_proc();
  write_file(proc / "stat", "cpu 1 2 3\nbtime 99999999999999\n");
  auto rows = run("info");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(time_ns(rows[0], "BootTime"), 0);
  write_file(proc / "stat", "btime 4294967295\n");
  EXPECT_EQ(time_ns(run("info").at(0), "BootTime"), 4294967295LL * 1'000'000'000);
  write_file(proc / "stat", "btime -5\n");
  EXPECT_EQ(time_ns(run("info").at(0), "BootTime"), 0);
}

// ---- glob

class Glob : public LinuxPlugins {
 protected:
  Glob() {
    root_ = dir_.path("tree");
    write_file(root_ / "a.txt", "hello");
    write_file(root_ / "b.log", "");
    write_file(root_ / "b1.txt", "");
    write_file(root_ / "c/d.txt", "");
    write_file(root_ / "c/e/f.txt", "");
    write_file(root_ / "c/e/g.bin", "");
    write_file(root_ / "file5", "");
    write_file(root_ / "x9", "");
    fs::create_directory_symlink("..", root_ / "c/loop");  // c/loop is the tree: a loop for **
  }
  std::vector<std::string> glob(Arguments args) {
    args.push_back({"root", Value(root_.string())});
    std::vector<std::string> out;
    for (auto& row : run("glob", std::move(args))) {
      auto path = str(row, "FullPath");
      EXPECT_EQ(path.substr(0, root_.string().size() + 1), root_.string() + "/");
      out.push_back(path.substr(root_.string().size() + 1));
    }
    return out;
  }
  using Paths = std::vector<std::string>;
  fs::path root_;
};

TEST_F(Glob, RecursiveDoesNotFollowLinkLoops) {
  EXPECT_EQ(glob({{"globs", Value("**/*.txt")}}), (Paths{"a.txt", "b1.txt", "c/d.txt", "c/e/f.txt"}));
  EXPECT_EQ(glob({{"globs", Value("**")}}),
            (Paths{"a.txt", "b.log", "b1.txt", "c", "file5", "x9", "c/d.txt", "c/e", "c/loop",
                   "c/e/f.txt", "c/e/g.bin"}));
  EXPECT_EQ(glob({{"globs", Value("c/**/f.txt")}}), (Paths{"c/e/f.txt"}));
  EXPECT_EQ(glob({{"globs", Value("**/**/g.bin")}}), (Paths{"c/e/g.bin"}));
  // A named link is followed: it takes a part of the pattern, so it cannot loop.
  EXPECT_EQ(glob({{"globs", Value("c/loop/*.txt")}}), (Paths{"c/loop/a.txt", "c/loop/b1.txt"}));
  EXPECT_EQ(glob({{"globs", Value("c/loop/c/lo?p/x9")}}), (Paths{"c/loop/c/loop/x9"}));
}

TEST_F(Glob, WildcardsBracesAndSets) {
  EXPECT_EQ(glob({{"globs", Value("{a,b}*")}}), (Paths{"a.txt", "b.log", "b1.txt"}));
  EXPECT_EQ(glob({{"globs", Value("x[0-9]")}}), (Paths{"x9"}));
  EXPECT_EQ(glob({{"globs", Value("x[!0-9]")}}), (Paths{}));
  EXPECT_EQ(glob({{"globs", Value("file[!0-4]")}}), (Paths{"file5"}));
  EXPECT_EQ(glob({{"globs", Value("b[1.]*")}}), (Paths{"b.log", "b1.txt"}));
  EXPECT_EQ(glob({{"globs", Value("?.txt")}}), (Paths{"a.txt"}));
  EXPECT_EQ(glob({{"globs", Value("c/{d.txt,e/{f,g}.*}")}}), (Paths{"c/d.txt", "c/e/f.txt", "c/e/g.bin"}));
  EXPECT_EQ(glob({{"globs", Value("*/*/*.bin")}}), (Paths{"c/e/g.bin"}));
  EXPECT_EQ(glob({{"globs", Value("nothing*")}}), (Paths{}));
  EXPECT_EQ(glob({{"globs", Value("missing/dir/x")}}), (Paths{}));
}

TEST_F(Glob, RootAndAbsolutePatterns) {
  // An absolute pattern goes under root.
  EXPECT_EQ(glob({{"globs", Value("/c/*.txt")}}), (Paths{"c/d.txt"}));
  auto rows = run("glob", {{"globs", Value((root_ / "c/e/*").string())}});
  EXPECT_EQ(column(rows, "FullPath"),
            (Paths{(root_ / "c/e/f.txt").string(), (root_ / "c/e/g.bin").string()}));
  rows = run("glob", {{"globs", Value("e/f.txt")}, {"root", Value((root_ / "c/").string())}});
  EXPECT_EQ(column(rows, "FullPath"), (Paths{(root_ / "c/e/f.txt").string()}));
}

TEST_F(Glob, OverlappingPatternsGiveEachFileOnce) {
  Value globs(List{Value("**/*.txt"), Value("*.txt"), Value("c/d.txt"), Value("{a,a}.txt"),
                   Value("c//d.txt"), Value("c/**")});
  EXPECT_EQ(glob({{"globs", globs}}),
            (Paths{"a.txt", "b1.txt", "c/d.txt", "c/e", "c/loop", "c/e/f.txt", "c/e/g.bin"}));
}

TEST_F(Glob, RowColumns) {
  ASSERT_EQ(chmod((root_ / "a.txt").c_str(), 0644), 0);
  ASSERT_EQ(chmod((root_ / "c").c_str(), 0755), 0);
  auto rows = run("glob", {{"globs", Value(List{Value("a.txt"), Value("c"), Value("c/loop")})},
                           {"root", Value(root_.string())}});
  ASSERT_EQ(rows.size(), 3u);
  std::vector<std::string> columns;
  for (auto& [k, v] : rows[0].items()) columns.push_back(k);
  // Velociraptor's columns, in its order; then Sys (NULL in Velociraptor's glob rows) and FullPath.
  EXPECT_EQ(columns, (std::vector<std::string>{"Name", "OSPath", "Mtime", "Atime", "Ctime", "Btime", "Size", "Mode",
                                               "IsDir", "IsLink", "Data", "Sys", "FullPath"}));
  struct stat st;
  ASSERT_EQ(lstat((root_ / "a.txt").c_str(), &st), 0);
  EXPECT_EQ(str(rows[0], "Name"), "a.txt");
  EXPECT_EQ(num(rows[0], "Size"), 5);
  EXPECT_EQ(to_string(field(rows[0], "Mode")), "-rw-r--r--");  // Go's FileMode.String()
  EXPECT_EQ(to_json(rows[0]).find("\"Mode\":420,") != std::string::npos, true);  // its bits in JSON
  EXPECT_EQ(to_string(field(rows[0], "OSPath")), (root_ / "a.txt").string());
  EXPECT_FALSE(flag(rows[0], "IsDir"));
  EXPECT_FALSE(flag(rows[0], "IsLink"));
  EXPECT_EQ(time_ns(rows[0], "Mtime"), st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec);
  EXPECT_EQ(time_ns(rows[0], "Atime"), st.st_atim.tv_sec * 1'000'000'000LL + st.st_atim.tv_nsec);
  EXPECT_EQ(time_ns(rows[0], "Ctime"), st.st_ctim.tv_sec * 1'000'000'000LL + st.st_ctim.tv_nsec);
  ASSERT_TRUE(field(rows[0], "Sys").as_dict());
  EXPECT_EQ(num(*field(rows[0], "Sys").as_dict(), "Uid"), static_cast<int64_t>(st.st_uid));
  EXPECT_EQ(num(*field(rows[0], "Sys").as_dict(), "Gid"), static_cast<int64_t>(st.st_gid));
  EXPECT_EQ(to_string(field(rows[1], "Mode")), "drwxr-xr-x");
  EXPECT_TRUE(flag(rows[1], "IsDir"));
  EXPECT_EQ(str(rows[2], "Name"), "loop");
  EXPECT_EQ(to_string(field(rows[2], "Mode")), "Lrwxrwxrwx");
  ASSERT_TRUE(field(rows[2], "Data").as_dict());
  EXPECT_EQ(str(*field(rows[2], "Data").as_dict(), "Link"), "..");
  EXPECT_TRUE(flag(rows[2], "IsLink"));
  EXPECT_FALSE(flag(rows[2], "IsDir"));
}

TEST_F(Glob, OddNamesAndSpecialModes) {
  write_file(root_ / "bad\xff name.txt", "");
  ASSERT_EQ(mkfifo((root_ / "fifo").c_str(), 0600), 0);
  ASSERT_EQ(chmod((root_ / "x9").c_str(), 04755), 0);
  EXPECT_EQ(glob({{"globs", Value("bad*.txt")}}), (Paths{"bad\xff name.txt"}));
  EXPECT_EQ(glob({{"globs", Value("bad\xff?name.*")}}), (Paths{"bad\xff name.txt"}));
  auto rows = run("glob", {{"globs", Value(List{Value("fifo"), Value("x9")})}, {"root", Value(root_.string())}});
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(to_string(field(rows[0], "Mode")), "prw-------");
  EXPECT_EQ(to_string(field(rows[1], "Mode")), "urwxr-xr-x");  // Go writes setuid as a leading u
}

TEST_F(Glob, LargeDirectoryIsSliced) {
  for (int i = 0; i < 2000; ++i) write_file(root_ / "big" / ("f" + std::to_string(i)), "");
  auto stream = make("glob", {{"globs", Value("big/*")}, {"root", Value(root_.string())}});
  std::vector<Row> first;
  EXPECT_TRUE(stream->next(first, 1'000'000).state == Step::State::more);
  EXPECT_LT(first.size(), 2000u);  // bounded work per call, not bounded rows only
  auto rest = drain(*stream, 1'000'000);
  EXPECT_EQ(first.size() + rest.size(), 2000u);
}

TEST_F(Glob, BadPatternsAreRefused) {
  auto error = [&](Value globs) { return error_of([&] { make("glob", {{"globs", globs}}); }); };
  EXPECT_NE(error(Value("/tmp/[abc")).find("glob(): globs: unterminated ["), std::string::npos);
  EXPECT_NE(error(Value("/tmp/{a,b")).find("glob(): globs: unterminated {"), std::string::npos);
  EXPECT_NE(error(Value("/tmp/a}")).find("glob(): globs: unbalanced }"), std::string::npos);
  EXPECT_NE(error(Value("[z-a]")).find("glob(): globs: empty range"), std::string::npos);
  EXPECT_NE(error(Value("")).find("glob(): globs: empty pattern"), std::string::npos);
  EXPECT_NE(error(Value("{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}")).find("glob(): globs:"),
            std::string::npos);
  EXPECT_NE(error(Value(int64_t{5})).find("glob(): globs: expected"), std::string::npos);
  EXPECT_NE(error(Value(List{Value("a"), Value(int64_t{1})})).find("glob(): globs:"), std::string::npos);
  EXPECT_EQ(error_of([&] { make("glob", {}); }), "glob(): globs: required");
}

// ---- read_file and parse_lines

TEST_F(LinuxPlugins, ReadFileOffsetAndLength) {
  write_file(dir_.path("digits"), "0123456789");
  write_file(dir_.path("abc"), "abc");
  auto rows = run("read_file", {{"filenames", Value(List{Value(dir_.path("digits").string()),
                                                        Value(dir_.path("missing").string()),
                                                        Value(dir_.path("abc").string())})},
                                {"offset", Value(int64_t{2})},
                                {"length", Value(int64_t{5})}});
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(str(rows[0], "Filename"), dir_.path("digits").string());
  EXPECT_EQ(num(rows[0], "Offset"), 2);
  EXPECT_EQ(str(rows[0], "Data"), "23456");
  EXPECT_EQ(str(rows[0], "Error"), "");
  // The missing file is said, not skipped in silence.
  EXPECT_EQ(str(rows[1], "Filename"), dir_.path("missing").string());
  EXPECT_EQ(str(rows[1], "Data"), "");
  EXPECT_EQ(str(rows[1], "Error"), "cannot open: No such file or directory");
  EXPECT_EQ(str(rows[2], "Data"), "c");

  rows = run("read_file", {{"filenames", Value(dir_.path("digits").string())}});
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(str(rows[0], "Data"), "0123456789");
  EXPECT_EQ(num(rows[0], "Offset"), 0);
  rows = run("read_file", {{"filenames", Value(dir_.path("digits").string())}, {"offset", Value(int64_t{50})}});
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(str(rows[0], "Data"), "");
  // A directory or a FIFO cannot be read at an offset: said in the row.
  rows = run("read_file", {{"filenames", Value(dir_.root().string())}});
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(str(rows[0], "Error"), "read at offset 0: a directory");
  ASSERT_EQ(mkfifo(dir_.path("fifo").c_str(), 0600), 0);
  rows = run("read_file", {{"filenames", Value(dir_.path("fifo").string())}});
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(str(rows[0], "Error"), "read at offset 0: not seekable (a FIFO or socket): cannot read at an offset");

  auto error = [&](const char* arg, int64_t v) {
    return error_of([&] { make("read_file", {{"filenames", Value("x")}, {arg, Value(v)}}); });
  };
  EXPECT_NE(error("length", -1).find("read_file(): length:"), std::string::npos);
  EXPECT_NE(error("length", (int64_t{64} << 20) + 1).find("read_file(): length:"), std::string::npos);
  EXPECT_NE(error("offset", -1).find("read_file(): offset:"), std::string::npos);
  EXPECT_NE(error_of([&] { make("read_file", {{"filenames", Value("x")}, {"offset", Value("1")}}); })
                .find("read_file(): offset: expected int"),
            std::string::npos);
}

TEST_F(LinuxPlugins, ReadFileLargeIsSliced) {
  std::string data(3 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7 + i / 4096);
  write_file(dir_.path("big"), data);
  auto stream = make("read_file", {{"filenames", Value(dir_.path("big").string())},
                                   {"length", Value(int64_t{64} << 20)}});
  // 1 MiB read per call, in rows of at most 1 MiB (each far below the
  // record-size limit), each with its offset.
  std::vector<Row> rows;
  for (int calls = 0; calls < 100; ++calls) {
    size_t before = rows.size();
    Step step = stream->next(rows, 100);
    ASSERT_LE(rows.size() - before, 1u);
    if (step.state == Step::State::done) break;
  }
  ASSERT_EQ(rows.size(), 3u);
  std::string joined;
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(num(rows[i], "Offset"), static_cast<int64_t>(i << 20));
    EXPECT_EQ(str(rows[i], "Data").size(), size_t{1} << 20);
    joined += str(rows[i], "Data");
  }
  EXPECT_TRUE(joined == data);
}

TEST_F(LinuxPlugins, ParseLinesStreamsManyLines) {
  std::string text;
  for (int i = 0; i < 100000; ++i) {
    char line[32];
    snprintf(line, sizeof line, "line %06d of many", i);
    text += line;
    if (i + 1 < 100000) text += '\n';  // the last line has no newline
  }
  ASSERT_GT(text.size(), size_t{1} << 20);
  write_file(dir_.path("lines"), text);
  auto stream = make("parse_lines", {{"filename", Value(dir_.path("lines").string())}});
  std::vector<Row> rows;
  EXPECT_TRUE(stream->next(rows, 1'000'000).state == Step::State::more);
  EXPECT_GT(rows.size(), 0u);
  EXPECT_LT(rows.size(), 100000u);  // one slice reads about 1 MiB
  auto rest = drain(*stream);
  rows.insert(rows.end(), rest.begin(), rest.end());
  ASSERT_EQ(rows.size(), 100000u);
  EXPECT_EQ(str(rows[0], "Line"), "line 000000 of many");
  EXPECT_EQ(str(rows[54321], "Line"), "line 054321 of many");
  EXPECT_EQ(str(rows[99999], "Line"), "line 099999 of many");
}

TEST_F(LinuxPlugins, ParseLinesCutsHugeLines) {
  write_file(dir_.path("huge"), std::string(3 << 20, 'x') + "\n\nshort\n" + std::string(1 << 20, 'y') + "\nend\n");
  auto rows = run("parse_lines", {{"filename", Value(dir_.path("huge").string())}});
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_TRUE(str(rows[0], "Line") == std::string(1 << 20, 'x'));
  EXPECT_EQ(str(rows[1], "Line"), "");
  EXPECT_EQ(str(rows[2], "Line"), "short");
  EXPECT_TRUE(str(rows[3], "Line") == std::string(1 << 20, 'y'));  // exactly the limit: whole
  EXPECT_EQ(str(rows[4], "Line"), "end");

  // A newline that arrives in the same read as the limit: still cut.
  write_file(dir_.path("near"), std::string(100000, 'a') + "\n" + std::string((1 << 20) + 5000, 'z') + "\nend");
  rows = run("parse_lines", {{"filename", Value(dir_.path("near").string())}});
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(str(rows[0], "Line").size(), 100000u);
  EXPECT_TRUE(str(rows[1], "Line") == std::string(1 << 20, 'z'));
  EXPECT_EQ(str(rows[2], "Line"), "end");

  write_file(dir_.path("empty"), "");
  EXPECT_TRUE(run("parse_lines", {{"filename", Value(dir_.path("empty").string())}}).empty());
}

// As Velociraptor's: a file that cannot be read is a warning in the log and
// no rows, and the query goes on.
TEST_F(LinuxPlugins, ParseLinesErrors) {
  testing::LogCapture lines;
  auto missing = dir_.path("missing").string();
  EXPECT_TRUE(run("parse_lines", {{"filename", Value(missing)}}).empty());
  // One that opens but then cannot be read fails the query.
  EXPECT_NE(error_of([&] { run("parse_lines", {{"filename", Value(dir_.root().string())}}); }).find("Is a directory"),
            std::string::npos);
  // A device never ends (/dev/zero has no newline either): refused before any read.
  EXPECT_TRUE(run("parse_lines", {{"filename", Value("/dev/zero")}}).empty());
  lines.stop();
  EXPECT_EQ(lines.text().substr(0, lines.text().find('\n') + 1),
            "warning vql: parse_lines(): filename: cannot open " + missing + ": No such file or directory\n");
  EXPECT_NE(lines.text().find("warning vql: parse_lines(): filename: /dev/zero: a character device, not a regular "
                             "file (it may never end)\n"),
            std::string::npos);
  EXPECT_EQ(error_of([&] { make("parse_lines", {}); }), "parse_lines(): filename: required");
}

// ---- hash() and stat()

std::string digest_of(const std::string& tool, const fs::path& file) {
  std::string command = tool + " '" + file.string() + "'";
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return "";
  char buf[256] = {};
  std::string out = fgets(buf, sizeof buf, pipe) ? buf : "";
  pclose(pipe);
  return out.substr(0, out.find(' '));
}

TEST_F(LinuxPlugins, HashKnownDigests) {
  write_file(dir_.path("abc"), "abc");
  Value v = call("hash", {{"path", Value(dir_.path("abc").string())}});
  ASSERT_NE(v.as_dict(), nullptr);
  EXPECT_EQ(str(*v.as_dict(), "MD5"), "900150983cd24fb0d6963f7d28e17f72");
  EXPECT_EQ(str(*v.as_dict(), "SHA1"), "a9993e364706816aba3e25717850c26c9cd0d89d");
  EXPECT_EQ(str(*v.as_dict(), "SHA256"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

  // Several 1 MiB chunks, checked against coreutils.
  std::string data(5 * (1 << 20) + 123, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31 + i / 1000);
  write_file(dir_.path("big"), data);
  v = call("hash", {{"path", Value(dir_.path("big").string())}});
  ASSERT_NE(v.as_dict(), nullptr);
  EXPECT_EQ(str(*v.as_dict(), "MD5"), digest_of("md5sum", dir_.path("big")));
  EXPECT_EQ(str(*v.as_dict(), "SHA1"), digest_of("sha1sum", dir_.path("big")));
  EXPECT_EQ(str(*v.as_dict(), "SHA256"), digest_of("sha256sum", dir_.path("big")));

  // What cannot be hashed says why, naming the file.
  auto error = [&](const std::string& path) {
    Value e = call("hash", {{"path", Value(path)}});
    return e.as_dict() ? str(*e.as_dict(), "Path") + ": " + str(*e.as_dict(), "Error") : "not a dict";
  };
  EXPECT_EQ(error(dir_.path("missing").string()),
            dir_.path("missing").string() + ": cannot open: No such file or directory");
  EXPECT_EQ(error(dir_.root().string()), dir_.root().string() + ": a directory");
  EXPECT_EQ(error("/dev/zero"), "/dev/zero: a character device, not a regular file (it may never end)");
  EXPECT_NE(error_of([&] { call("hash", {{"path", Value(List{})}}); }).find("hash(): path:"), std::string::npos);
  // accessor= as Velociraptor's artifacts pass it: file or auto here.
  EXPECT_EQ(error_of([&] { call("hash", {{"path", Value("/x")}, {"accessor", Value("ntfs")}}); }),
            "hash(): accessor: \"ntfs\" is not supported: file, auto");
  EXPECT_TRUE(call("hash", {{"path", Value(dir_.root().string())}, {"accessor", Value("auto")}}).as_dict());
}

TEST_F(LinuxPlugins, StatMatchesGlobRow) {
  write_file(dir_.path("f"), "12345678");
  fs::create_symlink("f", dir_.path("link"));
  auto rows = run("glob", {{"globs", Value(List{Value("f"), Value("link")})}, {"root", Value(dir_.root().string())}});
  ASSERT_EQ(rows.size(), 2u);
  Value f = call("stat", {{"filename", Value(dir_.path("f").string())}});
  ASSERT_NE(f.as_dict(), nullptr);
  EXPECT_EQ(to_json(*f.as_dict()), to_json(rows[0]));
  EXPECT_EQ(num(*f.as_dict(), "Size"), 8);
  Value link = call("stat", {{"filename", Value(dir_.path("link").string())}});
  ASSERT_NE(link.as_dict(), nullptr);
  // Reading the link (Data.Link) may touch its Atime: the rest is the same.
  auto without_atime = [](Row row) {
    row.set("Atime", Value());
    return to_json(row);
  };
  EXPECT_EQ(without_atime(*link.as_dict()), without_atime(rows[1]));
  EXPECT_TRUE(flag(*link.as_dict(), "IsLink"));
  Value root = call("stat", {{"filename", Value(dir_.root().string() + "/")}});
  ASSERT_NE(root.as_dict(), nullptr);
  EXPECT_EQ(str(*root.as_dict(), "Name"), dir_.root().filename().string());
  EXPECT_TRUE(flag(*root.as_dict(), "IsDir"));
  EXPECT_TRUE(call("stat", {{"filename", Value(dir_.path("missing").string())}}).is_null());
}

// ---- kill

TEST_F(LinuxPlugins, KillSignalsAChild) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    execl("/bin/sleep", "sleep", "30", static_cast<char*>(nullptr));
    _exit(127);
  }
  auto stream = make("kill", {{"pid", Value(int64_t{child})}, {"signal", Value(int64_t{9})}});
  int status = 0;
  EXPECT_EQ(waitpid(child, &status, WNOHANG), 0);  // nothing happens until the rows are pulled
  auto rows = drain(*stream);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(num(rows[0], "Pid"), child);
  EXPECT_EQ(num(rows[0], "Signal"), 9);
  EXPECT_TRUE(flag(rows[0], "Success"));
  EXPECT_EQ(str(rows[0], "Error"), "");
  if (!flag(rows[0], "Success")) kill(child, SIGKILL);
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
}

TEST_F(LinuxPlugins, KillRefusesGroupsAndSelf) {
  auto error = [&](int64_t pid) { return error_of([&] { make("kill", {{"pid", Value(pid)}}); }); };
  EXPECT_NE(error(0).find("kill(): pid:"), std::string::npos);
  EXPECT_NE(error(-1).find("kill(): pid:"), std::string::npos);
  EXPECT_NE(error(getpid()).find("kill(): pid:"), std::string::npos);
  EXPECT_NE(error((int64_t{1} << 32) | 1).find("kill(): pid:"), std::string::npos);  // not truncated to 1
  EXPECT_NE(error_of([&] { make("kill", {{"pid", Value(int64_t{2})}, {"signal", Value(int64_t{-3})}}); })
                .find("kill(): signal:"),
            std::string::npos);
  EXPECT_EQ(error_of([&] { make("kill", {}); }), "kill(): pid: required");
}

TEST_F(LinuxPlugins, KillMissingProcessFails) {
  // Beyond PID_MAX_LIMIT (4194304): no such process can exist.
  auto rows = run("kill", {{"pid", Value(int64_t{2147483647})}});
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(num(rows[0], "Signal"), SIGTERM);
  EXPECT_FALSE(flag(rows[0], "Success"));
  EXPECT_EQ(str(rows[0], "Error"), "No such process");
}

}  // namespace
}  // namespace outpost::vql
