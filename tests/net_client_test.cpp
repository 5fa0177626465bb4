// The real network thread against a scripted collector on 127.0.0.1: the
// reason a session ended reaches the link's status (`last_error`) as what it
// was, not always "the collector closed the connection".

#include <gtest/gtest.h>

#include <capnp/rpc-twoparty.h>
#include <capnp/serialize.h>
#include <kj/async-io.h>

#include <fstream>
#include <functional>
#include <cstring>
#include <future>
#include <mutex>
#include <thread>

#include "net/agent/control_requests.hpp"
#include "net/agent/net_link.hpp"
#include "schemas/protocol.capnp.h"
#include "tests/actor_test_util.hpp"

namespace outpost::net {
namespace {
using namespace std::chrono_literals;
using outpost::testing::eventually;

// What the scripted collector does once an agent said hello.
enum class Script { refuse_uploads, never_answer, close_after_hello, garbage_after_hello };

class ScriptedCollector {
 public:
  explicit ScriptedCollector(Script script) : script_(script) {
    std::promise<uint16_t> port;
    auto ready = port.get_future();
    thread_ = std::thread([this, &port] { run(port); });
    port_ = ready.get();
  }
  ~ScriptedCollector() {
    stop_->fulfill();
    thread_.join();
  }
  uint16_t port() const { return port_; }

 private:
  struct Peer {
    kj::Own<kj::AsyncIoStream> stream;
    kj::Own<capnp::TwoPartyVatNetwork> network;
    kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> rpc;
  };

  class SessionImpl final : public protocol::Session::Server {
   public:
    explicit SessionImpl(Script script) : script_(script) {}
    kj::Promise<void> upload(UploadContext context) override {
      if (script_ == Script::refuse_uploads) return KJ_EXCEPTION(FAILED, "cannot store: No space left on device");
      if (script_ == Script::never_answer) return kj::NEVER_DONE;
      auto records = context.getParams().getRecords();
      context.getResults().setStoredThrough(records[records.size() - 1].getSeq());
      return kj::READY_NOW;
    }

   private:
    Script script_;
  };

  class CollectorImpl final : public protocol::Collector::Server {
   public:
    CollectorImpl(ScriptedCollector& owner, Peer& peer) : owner_(owner), peer_(peer) {}
    kj::Promise<void> hello(HelloContext context) override {
      auto results = context.getResults();
      results.setSession(kj::heap<SessionImpl>(owner_.script_));
      results.setMajorVersion(protocol::MAJOR_VERSION);
      results.setAgentId("scripted");
      // After the answer has gone out.
      owner_.tasks_->add(owner_.io_->provider->getTimer().afterDelay(100 * kj::MILLISECONDS).then([this] {
        if (owner_.script_ == Script::close_after_hello) {
          peer_.stream->shutdownWrite();
        } else if (owner_.script_ == Script::garbage_after_hello) {
          static const std::string junk(4096, '\xff');
          return peer_.stream->write(junk.data(), junk.size());
        }
        return kj::Promise<void>(kj::READY_NOW);
      }));
      return kj::READY_NOW;
    }

   private:
    ScriptedCollector& owner_;
    Peer& peer_;
  };

  struct Ignore : kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&&) override {}
  };

  void run(std::promise<uint16_t>& port) {
    auto io = kj::setupAsyncIo();
    io_ = &io;
    Ignore ignore;
    auto listener = io.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(io.waitScope)->listen();
    std::vector<kj::Own<Peer>> peers;
    kj::TaskSet tasks(ignore);  // ends first: its tasks use the above
    tasks_ = &tasks;
    auto stop = kj::newPromiseAndCrossThreadFulfiller<void>();
    stop_ = kj::mv(stop.fulfiller);
    tasks.add(accept(*listener, peers));
    port.set_value(static_cast<uint16_t>(listener->getPort()));
    stop.promise.wait(io.waitScope);
  }

  kj::Promise<void> accept(kj::ConnectionReceiver& listener, std::vector<kj::Own<Peer>>& peers) {
    return listener.accept().then([this, &listener, &peers](kj::Own<kj::AsyncIoStream> stream) {
      auto peer = kj::heap<Peer>();
      peer->stream = kj::mv(stream);
      peer->network = kj::heap<capnp::TwoPartyVatNetwork>(*peer->stream, capnp::rpc::twoparty::Side::SERVER);
      peer->rpc = kj::heap<capnp::RpcSystem<capnp::rpc::twoparty::VatId>>(
          capnp::makeRpcServer(*peer->network, kj::heap<CollectorImpl>(*this, *peer)));
      peers.push_back(kj::mv(peer));
      return accept(listener, peers);
    });
  }

  Script script_;
  uint16_t port_ = 0;
  kj::AsyncIoContext* io_ = nullptr;
  kj::TaskSet* tasks_ = nullptr;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop_;
  std::thread thread_;
};

// Lane events holds seqs 1..5; acks are taken.
caf::behavior fake_store(caf::event_based_actor*) {
  return {
      [](read_atom, Lane lane, uint64_t after, uint64_t, uint64_t) {
        auto v = std::make_shared<std::vector<persistence::BufferedRecord>>();
        for (uint64_t seq = after + 1; lane == Lane::EVENTS && seq <= 5; ++seq) {
          persistence::BufferedRecord r;
          r.seq = seq;
          r.size = 64;
          r.words = kj::heapArray<capnp::word>(8);
          v->push_back(std::move(r));
        }
        return BufferedRecords{v};
      },
      [](ack_atom, Lane, uint64_t through) { return through; },
  };
}

std::string last_error_after(Script script, const std::string& expected) {
  ScriptedCollector collector(script);
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  auto store = sys.spawn(fake_store);
  ClientConfig config;
  config.port = collector.port();
  config.tls.insecure = true;
  config.claimed_id = "agent";
  config.backoff = {std::chrono::milliseconds(50), std::chrono::milliseconds(200)};
  config.upload_timeout = std::chrono::milliseconds(300);
  auto link = sys.spawn(net_link, caf::actor_cast<buffer_actor>(store),
                        caf::actor_cast<buffer_reader_actor>(store), config);
  std::string last;
  eventually([&] {
    auto status = outpost::testing::status_of(self, link);
    last = caf::get_or(status, "last_error", std::string());
    return last.find(expected) != std::string::npos;
  });
  self->send_exit(link, caf::exit_reason::user_shutdown);
  self->send_exit(store, caf::exit_reason::user_shutdown);
  return last;
}

TEST(NetClientReasons, AStorageFailureIsNamed) {
  auto last = last_error_after(Script::refuse_uploads, "the collector refused an upload");
  EXPECT_NE(last.find("the collector refused an upload"), std::string::npos) << last;
  EXPECT_NE(last.find("No space left on device"), std::string::npos) << last;
}

TEST(NetClientReasons, AnUploadTimeoutIsNamed) {
  auto last = last_error_after(Script::never_answer, "upload timeout");
  EXPECT_NE(last.find("upload timeout: no answer to an upload within 300 ms"), std::string::npos) << last;
}

TEST(NetClientReasons, ThePeerClosingIsNamed) {
  auto last = last_error_after(Script::close_after_hello, "closed");
  EXPECT_NE(last.find("the collector closed the connection"), std::string::npos) << last;
}

TEST(NetClientReasons, GarbageFromThePeerIsAConnectionFailure) {
  auto last = last_error_after(Script::garbage_after_hello, "the connection failed");
  EXPECT_NE(last.find("the connection failed: "), std::string::npos) << last;
}

TEST(NetClientReasons, NoCollectorIsACannotConnect) {
  uint16_t port;
  {
    ScriptedCollector gone(Script::refuse_uploads);
    port = gone.port();
  }
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  auto store = sys.spawn(fake_store);
  ClientConfig config;
  config.port = port;
  config.tls.insecure = true;
  config.backoff = {std::chrono::milliseconds(50), std::chrono::milliseconds(200)};
  auto link = sys.spawn(net_link, caf::actor_cast<buffer_actor>(store),
                        caf::actor_cast<buffer_reader_actor>(store), config);
  std::string last;
  EXPECT_TRUE(eventually([&] {
    last = caf::get_or(outpost::testing::status_of(self, link), "last_error", std::string());
    return !last.empty();
  }));
  EXPECT_EQ(last.rfind("cannot connect to 127.0.0.1:", 0), 0u) << last;
  self->send_exit(link, caf::exit_reason::user_shutdown);
  self->send_exit(store, caf::exit_reason::user_shutdown);
}

// What the network thread reported, for a test to wait on.
struct Reports {
  struct Ended {
    uint64_t session;
    std::string why;
    std::chrono::milliseconds retry_in;
    std::chrono::steady_clock::time_point at;
  };
  std::mutex mutex;
  std::vector<Ended> ended;
  uint64_t sessions = 0;

  ClientEvents events() {
    ClientEvents e;
    e.connected = [this](uint64_t, std::vector<uint64_t>) {
      std::lock_guard<std::mutex> lock(mutex);
      ++sessions;
    };
    e.disconnected = [this](uint64_t s, std::string why, std::chrono::milliseconds retry_in) {
      std::lock_guard<std::mutex> lock(mutex);
      ended.push_back({s, std::move(why), retry_in, std::chrono::steady_clock::now()});
    };
    e.stored = [](uint64_t, Lane, uint64_t) {};
    return e;
  }
  size_t ended_count() {
    std::lock_guard<std::mutex> lock(mutex);
    return ended.size();
  }
  Ended ended_at(size_t i) {
    std::lock_guard<std::mutex> lock(mutex);
    return ended.at(i);
  }
  uint64_t session_count() {
    std::lock_guard<std::mutex> lock(mutex);
    return sessions;
  }
};

// With nothing listening and a day between attempts, the operator's
// reconnect makes the next attempt at once, long before the one scheduled.
TEST(NetClientReconnect, CutsTheWaitForTheNextAttempt) {
  uint16_t port;
  {
    ScriptedCollector gone(Script::refuse_uploads);
    port = gone.port();
  }
  ClientConfig config;
  config.port = port;
  config.tls.insecure = true;
  config.backoff = {std::chrono::hours(24), std::chrono::hours(24)};
  Reports reports;
  NetClient client(config, reports.events());
  ASSERT_TRUE(eventually([&] { return reports.ended_count() == 1; }));
  auto first = reports.ended_at(0);
  EXPECT_EQ(first.why.rfind("cannot connect to 127.0.0.1:", 0), 0u) << first.why;
  client.reconnect();
  ASSERT_TRUE(eventually([&] { return reports.ended_count() == 2; }));
  auto second = reports.ended_at(1);
  EXPECT_LT(second.at - first.at, first.retry_in) << "the attempt came when it was due anyway";
  EXPECT_EQ(second.why.rfind("cannot connect to 127.0.0.1:", 0), 0u) << second.why;
}

// A session that is up ends with the operator's reason, and the next one
// comes with no delay.
TEST(NetClientReconnect, EndsTheSessionAndConnectsAgainAtOnce) {
  ScriptedCollector collector(Script::refuse_uploads);  // nothing is uploaded: the session stays up
  ClientConfig config;
  config.port = collector.port();
  config.tls.insecure = true;
  config.claimed_id = "agent";
  config.backoff = {std::chrono::hours(24), std::chrono::hours(24)};
  Reports reports;
  NetClient client(config, reports.events());
  ASSERT_TRUE(eventually([&] { return reports.session_count() == 1; }));
  client.reconnect();
  ASSERT_TRUE(eventually([&] { return reports.session_count() == 2; }));
  ASSERT_EQ(reports.ended_count(), 1u);
  auto ended = reports.ended_at(0);
  EXPECT_EQ(ended.session, 1u);
  EXPECT_EQ(ended.why, "the operator asked for a new connection");
  EXPECT_EQ(ended.retry_in, std::chrono::milliseconds(0));
}

// A collector's request is bounded before the agent copies it: an event
// table of more entries and parameters than kMaxRequestItems is refused with
// the count, as is a collect() of more parameters; the bound itself is taken.
std::string refusal(const std::function<void()>& take) {
  try {
    take();
  } catch (const kj::Exception& e) {
    return e.getDescription().cStr();
  }
  return "<taken>";
}

TEST(ControlRequests, ARequestOfMoreEntriesOrParametersThanTheBoundIsRefused) {
  capnp::MallocMessageBuilder message;
  auto table = message.initRoot<protocol::AgentController::SetEventTableParams>();
  auto entries = table.initArtifacts(kMaxRequestItems - 1);
  entries[0].initParameters(1);
  EXPECT_EQ(refusal([&] { EXPECT_EQ(event_table_specs(table.asReader().getArtifacts()).size(), kMaxRequestItems - 1); }),
            "<taken>");
  entries[1].initParameters(1);
  EXPECT_EQ(refusal([&] { event_table_specs(table.asReader().getArtifacts()); }),
            "setEventTable: 100001 entries and parameters; an agent takes at most 100000");

  capnp::MallocMessageBuilder one;
  auto request = one.initRoot<protocol::CollectRequest>();
  request.initParameters(kMaxRequestItems);
  EXPECT_EQ(refusal([&] { collect_spec(request.asReader()); }), "<taken>");
  request.initParameters(kMaxRequestItems + 1);
  EXPECT_EQ(refusal([&] { collect_spec(request.asReader()); }),
            "collect: 100001 entries and parameters; an agent takes at most 100000");
}

// The fuzzer's finding: 81 bytes whose list of empty entries claims 8
// million of them (1.5 GB once copied) are refused before any is copied.
TEST(ControlRequests, EightMillionEmptyEntriesIn81BytesAreRefused) {
  std::ifstream in(std::string(OUTPOST_FUZZ_CORPUS) + "/request/regress-zero-size-entries.bin", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_EQ(bytes.size(), 81u);
  ASSERT_EQ(bytes[0] % 3, 2) << "a setEventTable";
  auto words = kj::heapArray<capnp::word>((bytes.size() - 1 + 7) / 8);
  std::memset(words.begin(), 0, words.size() * sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data() + 1, bytes.size() - 1);
  capnp::FlatArrayMessageReader message(words);
  auto entries = message.getRoot<protocol::AgentController::SetEventTableParams>().getArtifacts();
  EXPECT_GT(entries.size(), 8'000'000u);
  EXPECT_NE(refusal([&] { event_table_specs(entries); }).find("; an agent takes at most 100000"), std::string::npos);
}

}  // namespace
}  // namespace outpost::net
