// connections() and the process tracker's fallback functions: on this
// process's own sockets and ancestors, and on a fake <proc>.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "queries/engine.hpp"
#include "queries/linux_util.hpp"
#include "tests/temp_dir.hpp"
#include "tests/vql_test_util.hpp"

namespace outpost::vql {


namespace {

namespace fs = std::filesystem;
using outpost::testing::TempDir;

const Registry& registry() { return default_registry(); }

// Every row of `vql` over `paths`, pulled two at a time so that streams are sliced.
std::vector<Row> run(const std::string& vql, const Paths& paths = Paths()) {
  Engine engine(registry());
  Env env;
  env.paths = std::make_shared<const Paths>(paths);
  auto stream = engine.start(vql, {}, env);
  std::vector<Row> rows;
  for (int calls = 0; calls < 1'000'000; ++calls) {
    Step step = stream->next(rows, 2);
    if (step.state == Step::State::done) return rows;
    EXPECT_EQ(step.state, Step::State::more);
  }
  ADD_FAILURE() << "the query never ended";
  return rows;
}

// The one value of `SELECT <expr> AS X`, as JSON.
std::string one(const std::string& expr, const Paths& paths = Paths()) {
  auto rows = run("SELECT " + expr + " AS X FROM scope()", paths);
  if (rows.size() != 1) return "<" + std::to_string(rows.size()) + " rows>";
  std::string json = to_json(rows[0]);
  return json.substr(5, json.size() - 6);  // {"X":...}
}

std::vector<std::string> sorted(std::vector<std::string> lines) {
  std::sort(lines.begin(), lines.end());
  return lines;
}

void write_file(const fs::path& path, const std::string& content) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << content;
}

std::string q(const std::string& s) { return "\"" + s + "\""; }
const std::string kPid = std::to_string(::getpid());

// This process's Uids as connections() gives them (fsuid: the effective uid).
std::string own_uids() {
  uid_t r, e, s;
  ::getresuid(&r, &e, &s);
  return "[" + std::to_string(r) + "," + std::to_string(e) + "," + std::to_string(s) + "," + std::to_string(e) + "]";
}

std::string endpoint(const std::string& ip, int port) {
  return "{\"IP\":" + q(ip) + ",\"Port\":" + std::to_string(port) + "}";
}

// A socket of this process that closes itself.
struct Socket {
  explicit Socket(int fd) : fd(fd) { EXPECT_GE(fd, 0) << errno_message(errno); }
  int port() const {
    sockaddr_in a{};
    socklen_t size = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &size);
    return ntohs(a.sin_port);
  }
  kj::AutoCloseFd fd;
};

sockaddr_in loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

std::unique_ptr<Socket> listener() {
  auto s = std::make_unique<Socket>(::socket(AF_INET, SOCK_STREAM, 0));
  auto a = loopback(0);
  EXPECT_EQ(::bind(s->fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  EXPECT_EQ(::listen(s->fd, 4), 0);
  return s;
}

TEST(Connections, AListeningSocketIsListedWithItsProcess) {
  auto server = listener();
  std::string port = std::to_string(server->port());
  auto rows = run("SELECT * FROM connections() WHERE Pid = " + kPid + " AND Laddr.Port = " + port);
  EXPECT_EQ(json_lines(rows), std::vector<std::string>{
      "{\"FD\":" + std::to_string(server->fd.get()) + ",\"Family\":\"AF_INET\",\"Type\":\"TCP\",\"Laddr\":" +
      endpoint("127.0.0.1", server->port()) + ",\"Raddr\":" + endpoint("0.0.0.0", 0) +
      ",\"Status\":\"LISTEN\",\"Pid\":" + kPid + ",\"Uids\":" + own_uids() + "}"});
}

TEST(Connections, BothEndsOfAConnectionAreEstablished) {
  auto server = listener();
  Socket client(::socket(AF_INET, SOCK_STREAM, 0));
  auto a = loopback(server->port());
  ASSERT_EQ(::connect(client.fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  Socket accepted(::accept(server->fd, nullptr, nullptr));
  std::string s = std::to_string(server->port()), c = std::to_string(client.port());
  auto rows = run("SELECT FD, Laddr, Raddr, Status FROM connections() WHERE Pid = " + kPid +
                  " AND Status = 'ESTABLISHED' AND (Laddr.Port = " + s + " OR Raddr.Port = " + s + ")");
  auto line = [](int fd, int local, int remote) {
    return "{\"FD\":" + std::to_string(fd) + ",\"Laddr\":" + endpoint("127.0.0.1", local) +
           ",\"Raddr\":" + endpoint("127.0.0.1", remote) + ",\"Status\":\"ESTABLISHED\"}";
  };
  EXPECT_EQ(sorted(json_lines(rows)), sorted({line(accepted.fd, server->port(), client.port()),
                                              line(client.fd, client.port(), server->port())}));
}

TEST(Connections, DatagramAndUnixSockets) {
  Socket udp(::socket(AF_INET, SOCK_DGRAM, 0));
  auto a = loopback(0);
  ASSERT_EQ(::bind(udp.fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  EXPECT_EQ(json_lines(run("SELECT Type, Status, Raddr FROM connections() WHERE Pid = " + kPid +
                           " AND Laddr.Port = " + std::to_string(udp.port()))),
            std::vector<std::string>{"{\"Type\":\"UCP\",\"Status\":\"NONE\",\"Raddr\":" +
                                     endpoint("0.0.0.0", 0) + "}"});  // sic: UCP

  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
  Socket left(pair[0]), right(pair[1]);
  TempDir dir;
  std::string path = dir.path("s.sock").string();
  Socket named(::socket(AF_UNIX, SOCK_DGRAM, 0));
  sockaddr_un u{};
  u.sun_family = AF_UNIX;
  path.copy(u.sun_path, sizeof u.sun_path - 1);
  ASSERT_EQ(::bind(named.fd, reinterpret_cast<sockaddr*>(&u), sizeof u), 0);
  auto rows = run("SELECT FD, Family, Type, Laddr, Raddr, Status FROM connections() WHERE Pid = " + kPid +
                  " AND Family = 'AF_UNIX' AND (FD = " + std::to_string(left.fd.get()) + " OR FD = " +
                  std::to_string(right.fd.get()) + " OR FD = " + std::to_string(named.fd.get()) + ")");
  auto line = [](int fd, const std::string& type, const std::string& path) {
    return "{\"FD\":" + std::to_string(fd) + ",\"Family\":\"AF_UNIX\",\"Type\":" + q(type) + ",\"Laddr\":" +
           endpoint(path, 0) + ",\"Raddr\":" + endpoint("", 0) + ",\"Status\":\"NONE\"}";
  };
  EXPECT_EQ(sorted(json_lines(rows)),
            sorted({line(left.fd, "TCP", ""), line(right.fd, "TCP", ""), line(named.fd, "UCP", path)}));
}

TEST(Connections, FakeProc) {
  TempDir dir;
  Paths paths;
  paths.proc = dir.path("proc");
  const std::string tail = " 00000000:00000000 00:00000000 00000000  1000        0 ";
  write_file(paths.proc / "net/tcp",
             "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
             "   0: 0100007F:1F90 00000000:0000 0A" + tail + "111 1 0 100 0 0 10 0\n"
             "   1: 0100007F:1F90 0100007F:C350 01" + tail + "112 1 0 20 4 30 10 -1\n"
             "   2: 0100007F:1F90 0100007F:C350 01" + tail + "113 1 0 20 4 30 10 -1\n"   // the same again: dropped
             "   3: 0100007F:1F91 0200007F:C351 0C" + tail + "0 1 0 20 4 30 10 -1\n"     // NEW_SYN_RECV: no name
             "   4: 0100007F 00000000:0000 0A" + tail + "114\n"                            // malformed: skipped
             "   5: 0100007F:1F92\n");                                                     // short: skipped
  auto v6 = [&](const std::string& addr, const std::string& inode) {
    return "   0: " + addr + ":0016 00000000000000000000000000000000:0000 0A" + tail + inode + "\n";
  };
  write_file(paths.proc / "net/tcp6",
             "  sl  local_address remote_address st ...\n" + v6("0000000000000000FFFF00000100007F", "120") +
                 v6("00000000000000000000000001000000", "121") + v6("B80D0120000000000000000001000000", "122") +
                 v6("00000000000000000000000004030201", "123") + v6("B80D0120010000000100010001000100", "124"));
  write_file(paths.proc / "net/udp",
             "  sl  local_address rem_address   st ...\n   7: 00000000:0044 00000000:0000 07" + tail + "200\n");
  // udp6 missing: skipped
  write_file(paths.proc / "net/unix",
             "Num       RefCount Protocol Flags    Type St Inode Path\n"
             "0000000000000000: 00000002 00000000 00010000 0001 01 300 /run/x.sock\n"
             "0000000000000000: 00000003 00000000 00000000 0002 03 301\n"
             "0000000000000000: 00000003 00000000 00000000 0005 03 302 @abstract\n");
  for (auto [pid, fd, target] : {std::tuple{"4242", "3", "socket:[111]"}, {"4242", "4", "socket:[112]"},
                                 {"4242", "5", "socket:[300]"}, {"4343", "7", "socket:[300]"},
                                 {"4343", "8", "/dev/null"}, {"4343", "9", "socket:[200]"}}) {
    fs::create_directories(paths.proc / pid / "fd");
    fs::create_symlink(target, paths.proc / pid / "fd" / fd);
  }
  write_file(paths.proc / "4242/status", "Name:\tx\nUid:\t1000\t1001\t1002\t1003\nGid:\t5\t5\t5\t5\n");
  write_file(paths.proc / "self", "");  // not a pid

  auto row = [](int fd, const std::string& family, const std::string& type, const std::string& local,
                const std::string& remote, const std::string& status, int pid, const std::string& uids) {
    return "{\"FD\":" + std::to_string(fd) + ",\"Family\":" + q(family) + ",\"Type\":" + q(type) +
           ",\"Laddr\":" + local + ",\"Raddr\":" + remote + ",\"Status\":" + q(status) +
           ",\"Pid\":" + std::to_string(pid) + ",\"Uids\":" + uids + "}";
  };
  const std::string none = endpoint("", 0), v6_any = endpoint("::", 0), uids = "[1000,1001,1002,1003]";
  EXPECT_EQ(sorted(json_lines(run("SELECT * FROM connections()", paths))), sorted({
      row(3, "AF_INET", "TCP", endpoint("127.0.0.1", 8080), endpoint("0.0.0.0", 0), "LISTEN", 4242, uids),
      row(4, "AF_INET", "TCP", endpoint("127.0.0.1", 8080), endpoint("127.0.0.1", 50000), "ESTABLISHED", 4242, uids),
      row(0, "AF_INET", "TCP", endpoint("127.0.0.1", 8081), endpoint("127.0.0.2", 50001), "", 0, "[]"),
      row(0, "AF_INET6", "TCP", endpoint("127.0.0.1", 22), v6_any, "LISTEN", 0, "[]"),  // IPv4-mapped: as Go prints it
      row(0, "AF_INET6", "TCP", endpoint("::1", 22), v6_any, "LISTEN", 0, "[]"),
      row(0, "AF_INET6", "TCP", endpoint("2001:db8::1", 22), v6_any, "LISTEN", 0, "[]"),
      row(0, "AF_INET6", "TCP", endpoint("::102:304", 22), v6_any, "LISTEN", 0, "[]"),
      row(0, "AF_INET6", "TCP", endpoint("2001:db8:0:1:1:1:1:1", 22), v6_any, "LISTEN", 0, "[]"),
      row(9, "AF_INET", "UCP", endpoint("0.0.0.0", 68), endpoint("0.0.0.0", 0), "NONE", 4343, "[]"),
      row(5, "AF_UNIX", "TCP", endpoint("/run/x.sock", 0), none, "NONE", 4242, uids),  // one row per holder
      row(7, "AF_UNIX", "TCP", endpoint("/run/x.sock", 0), none, "NONE", 4343, "[]"),
      row(0, "AF_UNIX", "UCP", none, none, "NONE", 0, "[]"),
      row(0, "AF_UNIX", "5", endpoint("@abstract", 0), none, "NONE", 0, "[]")}));

  Env env;  // a row at a time: a line's second holder waits for the next call
  env.paths = std::make_shared<const Paths>(paths);
  auto stream = registry().plugin("connections")->make(Args("connections", {}), env);
  size_t rows = 0;
  for (Step step = Step::more(); step.state == Step::State::more;) {
    std::vector<Row> out;
    step = stream->next(out, 1);
    EXPECT_LE(out.size(), 1u);
    rows += out.size();
  }
  EXPECT_EQ(rows, 13u);

  Paths empty;
  empty.proc = dir.path("nowhere");
  EXPECT_EQ(error_of_run([&] { run("SELECT * FROM connections()", empty); }),
            "connections(): cannot read " + empty.proc.string() + ": No such file or directory");
}

// ---- the process tracker's fallback

std::string comm_of(const std::string& pid) {
  auto comm = read_small_file("/proc/" + pid + "/comm").value_or("");
  return comm.substr(0, comm.find('\n'));
}

TEST(ProcessTracker, GetGivesThisProcess) {
  std::string ppid = std::to_string(::getppid());
  EXPECT_EQ(one("process_tracker_get(id=" + kPid + ").Id"), q(kPid));  // an int id is read as its text
  EXPECT_EQ(one("process_tracker_get(id='" + kPid + "').ParentId"), q(ppid));
  auto data = "process_tracker_get(id=" + kPid + ").Data";
  EXPECT_EQ(one(data + ".Name"), q(comm_of(kPid)));
  EXPECT_EQ(one(data + ".Pid"), q(kPid));
  EXPECT_EQ(one(data + ".Ppid"), q(ppid));
  EXPECT_EQ(one(data + ".StartTime = " + data + ".CreateTime"), "true");
  EXPECT_EQ(one("process_tracker_get(id='no such process')"), "null");
}

TEST(ProcessTracker, CallChainRunsFromAnAncestorToThisProcess) {
  std::vector<std::string> expected;  // from this process up to a root, 10 at most, as the chain goes
  for (std::string pid = kPid; expected.size() < 10 && pid != "0";) {
    auto stat = read_small_file("/proc/" + pid + "/stat");
    if (!stat) break;
    expected.insert(expected.begin(), pid);
    pid = std::string(split_ws(stat->substr(stat->rfind(')') + 1))[1]);
  }
  std::string ids;
  for (auto& id : expected) ids += (ids.empty() ? "" : ",") + q(id);
  EXPECT_EQ(one("process_tracker_callchain(id=" + kPid + ").Id"), "[" + ids + "]");
  std::string chain = one("join(array=process_tracker_callchain(id=" + kPid + ").Data.Name, sep=' -> ')");
  std::string name = " -> " + comm_of(kPid) + "\"";
  EXPECT_EQ(chain.substr(chain.size() - std::min(chain.size(), name.size())), name) << chain;
  EXPECT_EQ(one("process_tracker_callchain(id='no such process')"), "[]");
}

TEST(ProcessTracker, TreeHasThisProcess) {
  std::string tree = "process_tracker_tree(id=" + kPid + ")";
  EXPECT_EQ(one(tree + ".id"), q(kPid));
  EXPECT_EQ(one(tree + ".name"), q(comm_of(kPid)));
  EXPECT_EQ(one(tree + ".data.Pid"), q(kPid));
  EXPECT_EQ(one("process_tracker_tree(id='no such process')"), "null");
  EXPECT_EQ(one("process_tracker_tree()"), "null");
}

// A fake <proc>: 1 init > 10 sh > {21 a (started first), 20 b > 30 c}; 50 orphan, its parent unknown.
class FakeTracker : public ::testing::Test {
 protected:
  FakeTracker() {
    paths_.proc = dir_.path("proc");
    paths_.passwd = dir_.path("passwd");  // absent: user names are uids
    write_file(paths_.proc / "stat", "cpu  1 2 3 4\nbtime 1700000000\n");
    for (auto [pid, name, ppid, start] : {std::tuple{1, "init", 0, 7}, {10, "sh", 1, 100}, {20, "b", 10, 300},
                                          {21, "a", 10, 200}, {30, "c", 20, 400}, {50, "orphan", 999, 50}}) {
      fs::path dir = paths_.proc / std::to_string(pid);
      write_file(dir / "stat", std::to_string(pid) + " (" + name + ") S " + std::to_string(ppid) +
                                   " 1 1 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 " + std::to_string(start) + " 1000 10 0\n");
      write_file(dir / "status", std::string("Uid:\t7\t7\t7\t7\n"));
      write_file(dir / "cmdline", name);
    }
  }
  std::string one(const std::string& expr) { return vql::one(expr, paths_); }

  TempDir dir_;
  Paths paths_;
};

TEST_F(FakeTracker, Get) {
  EXPECT_EQ(one("process_tracker_get(id=10).Children"), "[\"20\",\"21\"]");
  EXPECT_EQ(one("process_tracker_get(id=30).Children"), "[]");
  std::string start = one("process_tracker_get(id=21).StartTime");
  EXPECT_EQ(one("process_tracker_get(id=21).Data"),
            "{\"Pid\":\"21\",\"Ppid\":\"10\",\"Name\":\"a\",\"CommandLine\":\"a\",\"CreateTime\":" + start +
                ",\"Times\":" + one("process_tracker_get(id=21).Data.Times") +
                ",\"Exe\":\"\",\"Cwd\":\"\",\"Username\":\"7\",\"MemoryInfo\":" +
                one("process_tracker_get(id=21).Data.MemoryInfo") + ",\"StartTime\":" + start +
                ",\"EndTime\":\"1970-01-01T00:00:00.000000000Z\"}");
  EXPECT_EQ(one("process_tracker_get(id=21).EndTime"), "\"1970-01-01T00:00:00.000000000Z\"");
}

TEST_F(FakeTracker, CallChain) {
  EXPECT_EQ(one("process_tracker_callchain(id=30).Id"), "[\"1\",\"10\",\"20\",\"30\"]");
  EXPECT_EQ(one("join(array=process_tracker_callchain(id=30).Data.Name, sep=' -> ')"), "\"init -> sh -> b -> c\"");
  EXPECT_EQ(one("process_tracker_callchain(id=30, max_items=1).Id"), "[\"20\",\"30\"]");  // max_items + 1
  EXPECT_EQ(one("process_tracker_callchain(id=50).Id"), "[\"50\"]");
}

TEST_F(FakeTracker, Tree) {
  auto tree = [&](const std::string& args) {
    auto rows = run("SELECT process_tracker_tree(" + args + ") AS X FROM scope()", paths_);
    return rows.size() == 1 ? tree_shape(*rows[0].find("X")) : "<rows>";
  };
  EXPECT_EQ(tree("id=1"), "init(sh(a b(c)))");  // children by start time
  EXPECT_EQ(tree("id=1, data_callback='x => x.Name'"), "init(sh(a b(c)))");  // accepted, unused as upstream
  EXPECT_EQ(tree("id=1, max_items=3"), "init(sh(b))");  // truncated where the limit struck: by pid there
  EXPECT_EQ(tree("id=20"), "b(c)");
  EXPECT_EQ(one("process_tracker_tree(id=30)"),
            "{\"name\":\"c\",\"id\":\"30\",\"start_time\":" + one("process_tracker_get(id=30).StartTime") +
                ",\"data\":" + one("process_tracker_get(id=30).Data") + ",\"children\":null}");
}

}  // namespace
}  // namespace outpost::vql
