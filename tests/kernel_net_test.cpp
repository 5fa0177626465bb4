// watch_ebpf()'s network events with real sockets on 127.0.0.1: a child
// process connects to a listener of this one (connect, accept, both ends'
// close, an HTTP request line), and asks a DNS stub this test runs on
// 127.0.0.1:53; each event names the process that did it. Skipped, with the
// reason, where the programs cannot load.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <caf/all.hpp>
#include <kj/io.h>

#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <map>
#include <tuple>
#include <functional>
#include <thread>

#include "actors/agent_config.hpp"
#include "queries/engine.hpp"
#include "queries/kernel_net.hpp"
#include "queries/kernel_process.hpp"
#include "queries/sensors.hpp"
#include "tests/vql_test_util.hpp"

namespace outpost::vql {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A child process doing `work` (plain system calls only: this process has
// threads); its pid, reaped.
pid_t in_child(const std::function<void()>& work) {
  pid_t pid = ::fork();
  if (pid == 0) {
    work();
    ::_exit(0);
  }
  ::waitpid(pid, nullptr, 0);
  return pid;
}

sockaddr_in loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

uint16_t port_of(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

// A DNS query, type A, id 0x4f50, for "p<this process's pid>.outpost.test",
// written into `out` (64 bytes) without allocating (it runs in a child);
// its length.
size_t own_dns_query(char* out) {
  char label[16];
  int n = std::snprintf(label, sizeof label, "p%d", static_cast<int>(::getpid()));
  size_t at = 0;
  std::memcpy(out, "\x4f\x50\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00", 12);
  at = 12;
  out[at++] = static_cast<char>(n);
  std::memcpy(out + at, label, static_cast<size_t>(n));
  at += static_cast<size_t>(n);
  std::memcpy(out + at, "\x07outpost\x04test\x00\x00\x01\x00\x01", 18);
  return at + 18;
}

// The query answered: one A record, 10.1.2.3.
std::string dns_answer(std::string query) {
  query[2] = '\x81';
  query[3] = '\x80';
  query[7] = 1;  // ANCOUNT
  return query + std::string("\xc0\x0c\0\x01\0\x01\0\0\0\x3c\0\x04\x0a\x01\x02\x03", 16);
}

const Value* at(const Row& row, std::initializer_list<const char*> path) {
  const Value* v = nullptr;
  const Dict* d = &row;
  for (auto key : path) {
    if (!d || !(v = d->find(key))) return nullptr;
    d = v->as_dict();
  }
  return v;
}
std::string text(const Row& row, std::initializer_list<const char*> path) {
  auto v = at(row, path);
  return v ? to_string(*v) : "<none>";
}

// A TCP socket listening on 127.0.0.1 (any free port), whose accept()
// gives up after 2 s (a child that could not connect must not hang the test).
struct Listener {
  kj::AutoCloseFd fd;
  sockaddr_in address{};  // where it listens
  uint16_t port = 0;
  Listener() {
    fd = kj::AutoCloseFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    timeval timeout{2, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    address = loopback(0);
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 || ::listen(fd, 16) != 0)
      throw std::runtime_error(std::string("cannot listen on 127.0.0.1: ") + std::strerror(errno));
    port = port_of(fd);
    address = loopback(port);
  }
  // A child process connects and closes (before this end accepts: the
  // client closes first), then this end accepts and closes. The child's pid
  // and port (0 when it could not connect).
  std::pair<pid_t, uint16_t> connection_from_a_child() const {
    int pipe_fds[2];
    if (::pipe(pipe_fds) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
    uint16_t client_port = 0;
    pid_t client = in_child([&] {
      int s = ::socket(AF_INET, SOCK_STREAM, 0);
      if (::connect(s, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) return;
      uint16_t local = port_of(s);
      [[maybe_unused]] auto w = ::write(pipe_fds[1], &local, sizeof local);
      ::close(s);
    });
    ::close(pipe_fds[1]);
    [[maybe_unused]] auto r = ::read(pipe_fds[0], &client_port, sizeof client_port);
    ::close(pipe_fds[0]);
    int accepted = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (accepted >= 0) ::close(accepted);
    return {client, client_port};
  }
};

struct WatchNet : ::testing::Test {
  AgentSystemConfig cfg;
  caf::actor_system sys{cfg};
  std::unique_ptr<SensorHub> hub = std::make_unique<SensorHub>(sys);
  Engine engine{default_registry()};
  Env env;
  std::unique_ptr<RowStream> events;
  std::vector<Row> rows;

  ~WatchNet() override {
    events.reset();
    hub.reset();
    sys.await_all_actors_done();
  }

  // Why the group's programs (for the tcp group, `with_accept`: accept's
  // too) cannot load here ("" when they can).
  static std::string unavailable(NetGroup group, bool with_accept = false) {
    try {
      auto source = open_net_events(group, {1 << 16});
      for (auto& u : source->unavailable())
        if (with_accept && u.kind == NetEvent::Kind::accept) return u.why;
      return "";
    } catch (const std::exception& e) {
      return e.what();
    }
  }

  // Repeats `act` until `seen` holds of the rows so far (20 s at most): the
  // sensor watches from when its programs are attached, a moment after the
  // query subscribes.
  bool watch(const std::string& names, const std::function<void()>& act,
             const std::function<bool(const std::vector<Row>&)>& seen) {
    env.sensors = hub.get();
    events = engine.start("SELECT * FROM watch_ebpf(events=" + names + ")", {}, env);
    for (auto deadline = Clock::now() + 20s; Clock::now() < deadline;) {
      act();
      for (auto until = Clock::now() + 300ms; Clock::now() < until; std::this_thread::sleep_for(10ms)) {
        events->next(rows, 10000);
        if (seen(rows)) return true;
      }
    }
    return false;
  }
};

TEST_F(WatchNet, AConnectionToALocalListenerNamesTheProcessAtEachEnd) {
  if (auto why = unavailable(NetGroup::tcp, true); !why.empty()) GTEST_SKIP() << why;
  Listener listening;
  pid_t client = 0;
  uint16_t client_port = 0;
  auto connect_once = [&] { std::tie(client, client_port) = listening.connection_from_a_child(); };
  const std::string me = std::to_string(::getpid());
  auto is = [&](const Row& r, const char* event) { return text(r, {"System", "EventName"}) == event; };
  auto ours = [&](const Row& r, const char* port_field, uint16_t port_value) {
    return text(r, {"EventData", port_field}) == std::to_string(port_value);
  };
  const Row *connect = nullptr, *accept = nullptr, *client_end = nullptr, *server_end = nullptr;
  bool all = watch("['security_socket_connect', 'security_socket_accept', 'net_flow_tcp_end']", connect_once,
                   [&](const std::vector<Row>& got) {
                     connect = accept = client_end = server_end = nullptr;
                     for (auto& r : got) {
                       if (is(r, "security_socket_connect") && text(r, {"System", "ProcessID"}) == std::to_string(client) &&
                           text(r, {"EventData", "remote_addr", "sin_port"}) == std::to_string(listening.port))
                         connect = &r;
                       if (is(r, "security_socket_accept") &&
                           text(r, {"EventData", "remote_addr", "sin_port"}) == std::to_string(client_port))
                         accept = &r;
                       if (is(r, "net_flow_tcp_end") && ours(r, "src_port", client_port)) client_end = &r;
                       if (is(r, "net_flow_tcp_end") && ours(r, "dst_port", client_port)) server_end = &r;
                     }
                     return connect && accept && client_end && server_end;
                   });
  ASSERT_TRUE(all) << "connect " << bool(connect) << ", accept " << bool(accept) << ", ends " << bool(client_end)
                   << bool(server_end) << " in " << rows.size() << " rows";
  EXPECT_EQ(text(*connect, {"EventData", "remote_addr", "sin_addr"}), "127.0.0.1");
  EXPECT_EQ(text(*connect, {"EventData", "local_addr", "sin_port"}), std::to_string(client_port));
  EXPECT_EQ(text(*connect, {"EventData", "established"}), "true");
  EXPECT_EQ(text(*accept, {"System", "ProcessID"}), me);
  EXPECT_EQ(text(*accept, {"EventData", "local_addr", "sin_port"}), std::to_string(listening.port));
  // Each end: the process that made or accepted it, and the one that closed it.
  EXPECT_EQ(text(*client_end, {"System", "ProcessID"}), std::to_string(client));
  EXPECT_EQ(text(*client_end, {"EventData", "closer_pid"}), std::to_string(client));
  EXPECT_EQ(text(*server_end, {"System", "ProcessID"}), me);
  EXPECT_EQ(text(*server_end, {"EventData", "dst_port"}), std::to_string(client_port));
  EXPECT_EQ(env.dropped_events, 0u);
}

// A kernel that will not take accept's program (here: asked to attach it
// to sched_switch, whose first argument is no pointer to the registers the
// program reads, so the verifier refuses it): the tcp group opens without it, says
// why, and still reports a connection's connect and both ends' close; a
// query asking for accepts fails with why, one asking for connects runs.
TEST_F(WatchNet, WithoutAcceptsProgramConnectsAndClosesAreStillReported) {
  if (auto why = unavailable(NetGroup::tcp); !why.empty()) GTEST_SKIP() << why;
  NetSourceOptions options;
  options.ring_buffer_bytes = 1 << 16;
  options.accept_tracepoint = "sched_switch";
  std::unique_ptr<NetEventSource> source;
  ASSERT_NO_THROW(source = open_net_events(NetGroup::tcp, options));
  auto unavailable = source->unavailable();
  ASSERT_EQ(unavailable.size(), 1u);
  EXPECT_EQ(unavailable[0].kind, NetEvent::Kind::accept);
  EXPECT_NE(unavailable[0].why.find("ebpf: loading the network programs: "), std::string::npos) << unavailable[0].why;
  EXPECT_NE(unavailable[0].why.find("'outpost_accept'"), std::string::npos) << unavailable[0].why;

  Listener listening;
  pid_t client = 0;
  uint16_t client_port = 0;
  auto connect_once = [&] { std::tie(client, client_port) = listening.connection_from_a_child(); };
  connect_once();
  ASSERT_NE(client_port, 0) << "the child could not connect";
  bool connect = false, client_end = false, server_end = false;
  size_t accepts = 0;
  std::vector<NetEvent> raw;
  for (auto deadline = Clock::now() + 10s; !(connect && client_end && server_end) && Clock::now() < deadline;) {
    raw.clear();
    source->read(raw, 200);
    for (auto& e : raw) {
      if (e.kind == NetEvent::Kind::accept) ++accepts;
      if (e.kind == NetEvent::Kind::connect && e.pid == client && e.remote_port == listening.port) connect = true;
      if (e.kind == NetEvent::Kind::close && e.local_port == client_port) client_end = true;
      if (e.kind == NetEvent::Kind::close && e.remote_port == client_port) server_end = true;
    }
  }
  EXPECT_TRUE(connect && client_end && server_end) << connect << client_end << server_end;
  EXPECT_EQ(accepts, 0u) << "no accept program runs";
  source.reset();

  SensorSettings settings;
  settings.accept_tracepoint = options.accept_tracepoint;
  hub = std::make_unique<SensorHub>(sys, settings);
  bool seen = watch("['security_socket_connect']", connect_once, [&](const std::vector<Row>& got) {
    for (auto& r : got)
      if (text(r, {"System", "ProcessID"}) == std::to_string(client)) return true;
    return false;
  });
  EXPECT_TRUE(seen) << "no connect by the child in " << rows.size() << " rows";
  Env accept_env;
  accept_env.sensors = hub.get();
  auto accepting = engine.start("SELECT * FROM watch_ebpf(events=['security_socket_accept'])", {}, accept_env);
  std::string error;
  for (auto deadline = Clock::now() + 10s; error.empty() && Clock::now() < deadline; std::this_thread::sleep_for(10ms)) {
    try {
      std::vector<Row> got;
      accepting->next(got, 1000);
    } catch (const QueryError& e) {
      error = e.what();
    }
  }
  ASSERT_NE(error.find("security_socket_accept cannot be watched here (the others can: ask without it): " +
                       unavailable[0].why),
            std::string::npos)
      << error;
  EXPECT_EQ(hub->running(), 1u) << "both queries on the tcp group's one sensor";
  // The connects' query goes on.
  rows.clear();
  bool again = false;
  for (auto deadline = Clock::now() + 10s; !again && Clock::now() < deadline;) {
    connect_once();
    for (auto until = Clock::now() + 300ms; !again && Clock::now() < until; std::this_thread::sleep_for(10ms)) {
      events->next(rows, 10000);
      for (auto& r : rows) again = again || text(r, {"System", "ProcessID"}) == std::to_string(client);
    }
  }
  EXPECT_TRUE(again) << "no connect after the accepts' query failed, in " << rows.size() << " rows";
  // The sensor's status (what outpostctl shows) says so too.
  Env me;
  me.system = &sys;
  std::vector<Row> listed;
  auto actors = engine.start("SELECT Status FROM actors(kind='sensor')", {}, me);
  for (auto deadline = Clock::now() + 10s; listed.empty() && Clock::now() < deadline; std::this_thread::sleep_for(10ms))
    actors->next(listed, 10);
  ASSERT_EQ(listed.size(), 1u);
  auto* status = listed[0].find("Status")->as_dict();
  ASSERT_TRUE(status && status->find("unavailable")) << to_string(*listed[0].find("Status"));
  EXPECT_EQ(to_string(*status->find("unavailable")), error.substr(error.find("security_socket_accept")));
}

#ifdef OUTPOST_ACCEPT32
// A 32-bit program's accept() is another system call than a 64-bit one's
// (socketcall, or accept4 under its 32-bit number): both are reported, with
// its process, so that a 32-bit binary does not hide the connections it takes.
TEST_F(WatchNet, AThirtyTwoBitProcessesAcceptsAreReportedBothWays) {
  if (auto why = unavailable(NetGroup::tcp, true); !why.empty()) GTEST_SKIP() << why;
  Listener listening;
  struct Round {
    pid_t pid = 0;
    uint16_t client_ports[2] = {};
  };
  std::vector<Round> rounds;
  std::string cannot_run;
  // One round: the 32-bit program, given the listening socket as its descriptor 3,
  // accepts two connections made here (one through socketcall, one through
  // accept4).
  auto accept_in_32_bits = [&] {
    if (!cannot_run.empty()) return;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, listening.fd, 3);
    char* argv[] = {const_cast<char*>(OUTPOST_ACCEPT32), nullptr};
    Round round;
    int err = ::posix_spawn(&round.pid, OUTPOST_ACCEPT32, &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (err == ENOEXEC) {
      cannot_run = "this kernel runs no 32-bit programs (no IA32 emulation)";
      return;
    }
    ASSERT_EQ(err, 0) << OUTPOST_ACCEPT32 << ": " << std::strerror(err);
    for (auto& client_port : round.client_ports) {
      int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      ASSERT_EQ(::connect(s, reinterpret_cast<const sockaddr*>(&listening.address), sizeof listening.address), 0)
          << std::strerror(errno);
      client_port = port_of(s);
      ::close(s);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(round.pid, &status, 0), round.pid);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the 32-bit program failed: status " << status;
    rounds.push_back(round);
  };
  accept_in_32_bits();  // a first round, unwatched: whether this kernel runs 32-bit programs at all
  if (!cannot_run.empty()) GTEST_SKIP() << cannot_run;
  rounds.clear();
  bool seen = watch("['security_socket_accept']", accept_in_32_bits, [&](const std::vector<Row>& got) {
    for (auto& round : rounds) {
      int accepted = 0;
      for (auto client_port : round.client_ports)
        for (auto& r : got)
          if (text(r, {"EventData", "remote_addr", "sin_port"}) == std::to_string(client_port) &&
              text(r, {"EventData", "local_addr", "sin_port"}) == std::to_string(listening.port) &&
              text(r, {"System", "ProcessID"}) == std::to_string(round.pid)) {
            ++accepted;
            break;
          }
      if (accepted == 2) return true;
    }
    return false;
  });
  ASSERT_FALSE(rounds.empty());
  EXPECT_TRUE(seen) << "no round of " << rounds.size() << " had both of its accepts reported with the 32-bit "
                    << "process's pid, in " << rows.size() << " rows";
}
#endif

TEST_F(WatchNet, AnHttpRequestLineNamesItsHostPathAndProcess) {
  if (auto why = unavailable(NetGroup::tcp_data); !why.empty()) GTEST_SKIP() << why;
  Listener listening;
  pid_t client = 0;
  auto request = [&] {
    client = in_child([&] {
      int s = ::socket(AF_INET, SOCK_STREAM, 0);
      if (::connect(s, reinterpret_cast<const sockaddr*>(&listening.address), sizeof listening.address) != 0) return;
      char line[128];  // the path names the process sending it
      int n = std::snprintf(line, sizeof line, "GET /outpost/probe/%d?x=1 HTTP/1.1\r\nHost: outpost.test\r\n\r\n",
                            static_cast<int>(::getpid()));
      [[maybe_unused]] auto w = ::write(s, line, static_cast<size_t>(n));
      ::close(s);
    });
    int accepted = ::accept4(listening.fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (accepted >= 0) ::close(accepted);
  };
  // A row of a client whose path names the process the row names.
  const Row* seen = nullptr;
  ASSERT_TRUE(watch("'net_packet_http_request'", request, [&](const std::vector<Row>& got) {
    for (auto& r : got)
      if (text(r, {"EventData", "http_request", "uri_path"}) == "/outpost/probe/" + text(r, {"System", "ProcessID"}))
        seen = &r;
    return seen != nullptr;
  })) << rows.size() << " rows, none from the process that sent it";
  EXPECT_EQ(text(*seen, {"EventData", "http_request", "method"}), "GET");
  EXPECT_EQ(text(*seen, {"EventData", "http_request", "host"}), "outpost.test");
  EXPECT_EQ(text(*seen, {"EventData", "metadata", "dst_port"}), std::to_string(ntohs(listening.address.sin_port)));
}

TEST_F(WatchNet, ADnsQueryToALocalResolverAndItsAnswerNameTheAskingProcess) {
  if (auto why = unavailable(NetGroup::dns); !why.empty()) GTEST_SKIP() << why;
  int stub = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  auto address = loopback(53);
  if (::bind(stub, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0)
    GTEST_SKIP() << "127.0.0.1:53 is taken or not ours: " << std::strerror(errno);
  std::atomic<bool> stop{false};
  std::thread resolver([&] {  // answers each query, until stopped
    timeval timeout{0, 100'000};
    ::setsockopt(stub, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    while (!stop) {
      char buffer[512];
      sockaddr_in from{};
      socklen_t len = sizeof from;
      ssize_t n = ::recvfrom(stub, buffer, sizeof buffer, 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n <= 0) continue;
      std::string answer = dns_answer(std::string(buffer, static_cast<size_t>(n)));
      ::sendto(stub, answer.data(), answer.size(), 0, reinterpret_cast<sockaddr*>(&from), len);
    }
  });
  auto ask = [&] {
    in_child([&] {
      char query[64];
      size_t length = own_dns_query(query);
      int s = ::socket(AF_INET, SOCK_DGRAM, 0);
      timeval timeout{2, 0};
      ::setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
      ::sendto(s, query, length, 0, reinterpret_cast<const sockaddr*>(&address), sizeof address);
      char buffer[512];
      [[maybe_unused]] auto n = ::recv(s, buffer, sizeof buffer, 0);
      ::close(s);
    });
  };
  // A query and its answer whose name names the process both rows name.
  const Row *asked = nullptr, *answered = nullptr;
  std::string name;
  bool both = watch("'net_packet_dns'", ask, [&](const std::vector<Row>& got) {
    std::map<std::string, std::pair<const Row*, const Row*>> by_name;
    for (auto& r : got) {
      const Value* questions = at(r, {"EventData", "proto_dns", "questions"});
      if (!questions || !questions->as_list() || questions->as_list()->empty()) continue;
      std::string asked_for = to_string(*(*questions->as_list())[0].as_dict()->find("name"));
      if (asked_for != "p" + text(r, {"System", "ProcessID"}) + ".outpost.test") continue;
      auto& pair = by_name[asked_for];
      (text(r, {"EventData", "dst_port"}) == "53" ? pair.first : pair.second) = &r;
      if (pair.first && pair.second) {
        std::tie(asked, answered) = pair;
        name = asked_for;
        return true;
      }
    }
    return false;
  });
  stop = true;
  resolver.join();
  ::close(stub);
  ASSERT_TRUE(both) << "query " << bool(asked) << ", answer " << bool(answered) << " in " << rows.size() << " rows";
  EXPECT_EQ(text(*asked, {"EventData", "dst"}), "127.0.0.1");
  EXPECT_EQ(value_json(*at(*asked, {"EventData", "proto_dns", "questions"})),
            "[{\"name\":\"" + name + "\",\"type\":\"A\",\"class\":\"IN\"}]");
  EXPECT_EQ(text(*answered, {"EventData", "src_port"}), "53");
  const Value* answers = at(*answered, {"EventData", "proto_dns", "answers"});
  ASSERT_TRUE(answers && answers->as_list() && answers->as_list()->size() == 1) << value_json(*answered->find("EventData"));
  EXPECT_EQ(to_string(*(*answers->as_list())[0].as_dict()->find("IP")), "10.1.2.3");
}

}  // namespace
}  // namespace outpost::vql
