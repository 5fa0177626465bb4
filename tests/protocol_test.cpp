// The collector's protocol edges, in one process over loopback: a peer with
// another major version, garbage, an oversized upload and a gap are cut off
// or refused while other agents carry on; a thousand agents at once.

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/compat/tls.h>

#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <fstream>
#include <sstream>

#include "net/collector/collector_server.hpp"
#include "net/collector/collector_store.hpp"
#include "tests/process_util.hpp"
#include "tests/temp_dir.hpp"

namespace outpost::net {
namespace {
using outpost::testing::TempDir;

// A raw protocol client: what a well-behaved or a hostile agent sends.
struct RawAgent {
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyVatNetwork> network;
  kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> rpc;
  protocol::Collector::Client collector = nullptr;

  RawAgent(kj::AsyncIoContext& io, uint16_t port) {
    stream = io.provider->getNetwork().parseAddress("127.0.0.1", port).wait(io.waitScope)->connect().wait(io.waitScope);
    network = kj::heap<capnp::TwoPartyVatNetwork>(*stream, capnp::rpc::twoparty::Side::CLIENT);
    rpc = kj::heap<capnp::RpcSystem<capnp::rpc::twoparty::VatId>>(capnp::makeRpcClient(*network));
    capnp::MallocMessageBuilder vat;
    auto id = vat.initRoot<capnp::rpc::twoparty::VatId>();
    id.setSide(capnp::rpc::twoparty::Side::SERVER);
    collector = rpc->bootstrap(id).castAs<protocol::Collector>();
  }

  capnp::RemotePromise<protocol::Collector::HelloResults> hello(const std::string& id, uint16_t major = protocol::MAJOR_VERSION) {
    auto req = collector.helloRequest();
    req.initAgent().setMajorVersion(major);
    req.getAgent().setClaimedId(id);
    req.setController(nullptr);
    return req.send();
  }
};

std::vector<kj::byte> record_bytes(uint64_t n) {
  schemas::RowBatchWriter w(1, "Proto.Test", "q", Lane::EVENTS, {"N"});
  w.add_row()[0].setUint64(n);
  auto e = w.finish();
  return {e.bytes().begin(), e.bytes().end()};
}

struct ProtocolTest : ::testing::Test {
  TempDir tmp;
  kj::AsyncIoContext io = kj::setupAsyncIo();
  CollectorStore store{tmp.path("data")};
  StorageWorker worker{store};
  std::unique_ptr<CollectorServer> server;
  uint16_t port = 0;

  ProtocolTest() {
    CollectorConfig config;
    config.port = 0;
    config.tls.insecure = true;
    server = std::make_unique<CollectorServer>(io, config, store, worker);
    port = server->start().wait(io.waitScope);
  }
  ~ProtocolTest() noexcept override {}  // kj's members may throw from destructors; here they must not

  // An upload of records first..last after `after`; resolves to storedThrough.
  kj::Promise<uint64_t> upload(protocol::Session::Client session, uint64_t after, uint64_t first,
                               uint64_t last, std::vector<std::vector<kj::byte>>& keep) {
    auto req = session.uploadRequest();
    req.setLane(Lane::EVENTS);
    req.setAfter(after);
    auto list = req.initRecords(last - first + 1);
    for (uint64_t s = first; s <= last; ++s) {
      keep.push_back(record_bytes(s));
      list[s - first].setSeq(s);
      list[s - first].setData(kj::arrayPtr(keep.back().data(), keep.back().size()));
    }
    return req.send().then([](auto resp) { return resp.getStoredThrough(); });
  }
};

TEST_F(ProtocolTest, AnotherMajorVersionIsRefusedWithAClearErrorAndOthersGoOn) {
  RawAgent future(io, port);
  try {
    future.hello("from-the-future", protocol::MAJOR_VERSION + 1).wait(io.waitScope);
    ADD_FAILURE() << "hello from protocol " << protocol::MAJOR_VERSION + 1 << " was accepted";
  } catch (const kj::Exception& e) {
    EXPECT_NE(std::string(e.getDescription().cStr()).find("this collector speaks 1.x"), std::string::npos)
        << e.getDescription().cStr();
  }
  RawAgent today(io, port);
  auto hello = today.hello("today").wait(io.waitScope);
  EXPECT_EQ(std::string(hello.getAgentId().cStr()), "today");
}

TEST_F(ProtocolTest, GarbageAndOversizedUploadsCloseOnlyThatConnection) {
  auto garbage = io.provider->getNetwork().parseAddress("127.0.0.1", port).wait(io.waitScope)
                     ->connect().wait(io.waitScope);
  std::string junk(4096, '\xff');
  garbage->write(junk.data(), junk.size()).wait(io.waitScope);
  // The collector hangs up on it: reading reaches the end (or an error), it does not hang.
  char buf[256];
  bool ended = false;
  try {
    for (int i = 0; i < 100 && !ended; ++i) ended = garbage->tryRead(buf, 1, sizeof buf).wait(io.waitScope) == 0;
  } catch (const kj::Exception&) {
    ended = true;
  }
  EXPECT_TRUE(ended);

  RawAgent big(io, port);
  auto session = big.hello("big").wait(io.waitScope).getSession();
  std::vector<std::vector<kj::byte>> keep;
  EXPECT_THROW(upload(session, 0, 1, protocol::MAX_RECORDS_PER_UPLOAD + 1, keep).wait(io.waitScope),
               kj::Exception);

  RawAgent fine(io, port);
  auto ok = fine.hello("fine").wait(io.waitScope).getSession();
  EXPECT_EQ(upload(ok, 0, 1, 3, keep).wait(io.waitScope), 3u);
}

// Sends garbage on a new connection and reads until the collector hangs up;
// returns the connection's local port.
uint16_t send_garbage(kj::AsyncIoContext& io, uint16_t port) {
  auto garbage = io.provider->getNetwork().parseAddress("127.0.0.1", port).wait(io.waitScope)
                     ->connect().wait(io.waitScope);
  sockaddr_in local{};
  uint len = sizeof local;
  garbage->getsockname(reinterpret_cast<sockaddr*>(&local), &len);
  std::string junk(4096, '\xff');
  garbage->write(junk.data(), junk.size()).wait(io.waitScope);
  char buf[256];
  try {
    while (garbage->tryRead(buf, 1, sizeof buf).wait(io.waitScope) > 0) {
    }
  } catch (const kj::Exception&) {
  }
  return ntohs(local.sin_port);
}

size_t occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST_F(ProtocolTest, GarbageIsLoggedWithThePeerAndTheReasonOncePerMinute) {
  std::ostringstream log;
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>(
      "test", std::make_shared<spdlog::sinks::ostream_sink_mt>(log)));
  KJ_DEFER(spdlog::set_default_logger(previous));
  uint16_t first = send_garbage(io, port);
  for (int i = 0; i < 20; ++i) send_garbage(io, port);
  std::string text = log.str();
  std::string line = "closed 127.0.0.1:" + std::to_string(first) + " (no hello yet): ";
  auto at = text.find(line);
  ASSERT_NE(at, std::string::npos) << "no reason logged for garbage:\n" << text;
  EXPECT_NE(text[at + line.size()], '\n') << "an empty reason";
  EXPECT_EQ(occurrences(text, "closed 127.0.0.1:"), 1u) << "not rate-limited:\n" << text;
}

TEST_F(ProtocolTest, AGapIsRefusedAndTheMarkIsWhatTheAgentResumesFrom) {
  RawAgent agent(io, port);
  auto session = agent.hello("gappy").wait(io.waitScope).getSession();
  std::vector<std::vector<kj::byte>> keep;
  EXPECT_EQ(upload(session, 0, 1, 5, keep).wait(io.waitScope), 5u);
  EXPECT_THROW(upload(session, 9, 10, 12, keep).wait(io.waitScope), kj::Exception);
  RawAgent again(io, port);
  auto hello = again.hello("gappy").wait(io.waitScope);
  EXPECT_EQ(hello.getResumeFrom()[static_cast<size_t>(Lane::EVENTS)].getSeq(), 5u);
}

TEST_F(ProtocolTest, AThousandAgentsAtOnce) {
  constexpr int kAgents = 1000;
  std::vector<std::unique_ptr<RawAgent>> agents;
  std::vector<std::vector<kj::byte>> keep;
  keep.reserve(kAgents);
  kj::Vector<kj::Promise<uint64_t>> stored;
  for (int i = 0; i < kAgents; ++i) agents.push_back(std::make_unique<RawAgent>(io, port));
  for (int i = 0; i < kAgents; ++i) {
    auto session = agents[i]->hello("agent-" + std::to_string(i)).getSession();  // pipelined
    stored.add(upload(session, 0, 1, 1, keep));
  }
  auto results = kj::joinPromises(stored.releaseAsArray()).wait(io.waitScope);
  for (auto r : results) EXPECT_EQ(r, 1u);
  EXPECT_EQ(server->connections(), static_cast<size_t>(kAgents));
  EXPECT_EQ(store.agents().size(), static_cast<size_t>(kAgents));
  EXPECT_LT(worker.stats().groups, static_cast<uint64_t>(kAgents)) << "no group commit across agents";
}

size_t open_descriptors() {
  size_t n = 0;
  for (auto& e : std::filesystem::directory_iterator("/proc/self/fd")) n += e.exists() ? 1 : 0;
  return n;
}

TEST_F(ProtocolTest, AcceptGoesOnAfterRunningOutOfDescriptors) {
  rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
  rlimit low = old;
  low.rlim_cur = open_descriptors() + 8;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  // Connections the kernel completes but the collector cannot accept: EMFILE.
  std::vector<int> peers;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int fd; (fd = ::socket(AF_INET, SOCK_STREAM, 0)) >= 0;) {
    peers.push_back(fd);
    ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  }
  io.provider->getTimer().afterDelay(300 * kj::MILLISECONDS).wait(io.waitScope);
  for (int fd : peers) ::close(fd);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);

  RawAgent later(io, port);
  auto hello = later.hello("after-emfile").exclusiveJoin(
      io.provider->getTimer().afterDelay(10 * kj::SECONDS).then(
          []() -> capnp::Response<protocol::Collector::HelloResults> {
            throw KJ_EXCEPTION(FAILED, "the collector stopped accepting after EMFILE");
          }));
  EXPECT_EQ(std::string(hello.wait(io.waitScope).getAgentId().cStr()), "after-emfile");
}

// A TLS collector in this process, with a CA, its certificate and the
// agents' certificates made by outpost-certs.
struct TlsCollector {
  TempDir tmp;
  std::filesystem::path certs = tmp.path("certs");
  kj::AsyncIoContext io = kj::setupAsyncIo();
  CollectorStore store{tmp.path("data")};
  StorageWorker worker{store};
  CollectorConfig config;
  std::unique_ptr<CollectorServer> server;
  uint16_t port = 0;

  explicit TlsCollector(const std::vector<std::string>& agents = {}) {
    std::vector<std::vector<std::string>> runs{{OUTPOST_CERTS, "init", certs.string()}};
    for (auto& name : agents) runs.push_back({OUTPOST_CERTS, "agent", certs.string(), name});
    for (auto& args : runs)
      if (outpost::testing::wait_exit(outpost::testing::spawn(args, tmp.path("certs.log"))) != 0)
        throw std::runtime_error("outpost-certs failed: " + args[1]);
    config.port = 0;
    config.tls = {(certs / "ca.pem").string(), (certs / "collector.pem").string(),
                  (certs / "collector.key").string(), false};
  }
  void start() {
    server = std::make_unique<CollectorServer>(io, config, store, worker);
    port = server->start().wait(io.waitScope);
  }
};

// A peer that connects and never starts TLS holds a connection only until
// the handshake timeout.
TEST(CollectorTls, APeerThatNeverHandshakesIsDroppedAtTheTimeout) {
  TlsCollector c;
  c.config.handshake_timeout = std::chrono::milliseconds(300);
  c.start();
  auto& io = c.io;
  uint16_t port = c.port;

  auto silent = io.provider->getNetwork().parseAddress("127.0.0.1", port).wait(io.waitScope)
                    ->connect().wait(io.waitScope);
  char buf[64];
  auto ended = silent->tryRead(buf, 1, sizeof buf)
                   .then([](size_t n) { return n == 0; }, [](kj::Exception&&) { return true; })
                   .exclusiveJoin(io.provider->getTimer().afterDelay(10 * kj::SECONDS).then([] {
                     return false;
                   }));
  EXPECT_TRUE(ended.wait(io.waitScope)) << "a silent peer kept its connection";
}

// Admission: with one handshake at a time, a peer that never speaks TLS
// holds the slot until its timeout; the agents that came meanwhile wait, and
// the newest goes first (in a storm the oldest are the likeliest given up).
TEST(CollectorTls, HandshakesBeyondTheLimitWaitAndTheNewestGoesFirst) {
  TlsCollector c({"first", "second"});
  c.config.handshake_timeout = std::chrono::milliseconds(1000);
  c.config.handshake_wait = std::chrono::seconds(60);  // no waiting agent is dropped here
  c.config.max_handshakes = 1;
  c.start();
  auto& io = c.io;
  uint16_t port = c.port;
  auto& certs = c.certs;
  auto& timer = io.provider->getTimer();
  auto address = io.provider->getNetwork().parseAddress("127.0.0.1", port).wait(io.waitScope);

  std::vector<std::string> order;  // events as they happen
  auto silent = address->connect().wait(io.waitScope);
  char buf[64];
  auto silent_ended = silent->tryRead(buf, 1, sizeof buf)
                          .then([](size_t) {}, [](kj::Exception&&) {})
                          .then([&] { order.push_back("silent dropped"); })
                          .eagerlyEvaluate(nullptr);
  timer.afterDelay(50 * kj::MILLISECONDS).wait(io.waitScope);  // accepted before the agents

  struct Agent {
    kj::Own<kj::TlsCertificate> ca;
    kj::Own<kj::TlsKeypair> pair;
    kj::Own<kj::TlsContext> tls;
    kj::Own<kj::AsyncIoStream> stream;
    kj::Own<capnp::TwoPartyClient> client;
  };
  auto read = [](const std::filesystem::path& f) {
    std::ifstream in(f);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  std::string ca_pem = read(certs / "ca.pem");
  auto hello = [&](const std::string& name, Agent& a) {
    std::string cert = read(certs / (name + ".pem")), key = read(certs / (name + ".key"));
    a.ca = kj::heap<kj::TlsCertificate>(kj::StringPtr(ca_pem.c_str()));
    a.pair = kj::heap<kj::TlsKeypair>(
        kj::TlsKeypair{kj::TlsPrivateKey(kj::StringPtr(key.c_str())), kj::TlsCertificate(kj::StringPtr(cert.c_str()))});
    kj::TlsContext::Options options;
    options.useSystemTrustStore = false;
    options.trustedCertificates = kj::arrayPtr(a.ca.get(), 1);
    options.defaultKeypair = *a.pair;
    a.tls = kj::heap<kj::TlsContext>(kj::mv(options));
    return address->connect()
        .then([&a](kj::Own<kj::AsyncIoStream> raw) { return a.tls->wrapClient(kj::mv(raw), "localhost"); })
        .then([&a, &order, name](kj::Own<kj::AsyncIoStream> stream) {
          // The handshakes' order is the admission's; the hellos' answers
          // come from another thread (the marks' lookup), in either order.
          order.push_back(name + " connected");
          a.stream = kj::mv(stream);
          a.client = kj::heap<capnp::TwoPartyClient>(*a.stream);
          auto req = a.client->bootstrap().castAs<protocol::Collector>().helloRequest();
          req.getAgent().setMajorVersion(protocol::MAJOR_VERSION);
          return req.send();
        })
        .then([](auto) {});
  };
  Agent first, second;
  auto first_done = hello("first", first).eagerlyEvaluate(nullptr);
  timer.afterDelay(50 * kj::MILLISECONDS).wait(io.waitScope);  // accepted in this order
  auto second_done = hello("second", second).eagerlyEvaluate(nullptr);
  first_done.exclusiveJoin(timer.afterDelay(10 * kj::SECONDS).then([] {
    throw KJ_EXCEPTION(FAILED, "the first agent never connected");
  })).wait(io.waitScope);
  second_done.wait(io.waitScope);
  silent_ended.wait(io.waitScope);
  EXPECT_EQ(order, (std::vector<std::string>{"silent dropped", "second connected", "first connected"}));
}

}  // namespace
}  // namespace outpost::net
