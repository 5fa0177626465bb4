// The collector's admin socket is served on a thread of its own: `agents`
// and `storage` are answered while the loop serving the agents does not turn
// at all (here: the test's thread, which serves them, is busy elsewhere),
// and a call that needs an agent's connection is run by that loop once it
// turns. Real sockets, a real agent connection, admin clients on threads.
// And the hourly call that lets a fleet's state forget silent agents.

#include <capnp/rpc-twoparty.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <chrono>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>

#include "net/collector/collector_server.hpp"
#include "net/collector/collector_store.hpp"
#include "net/collector/storage_worker.hpp"
#include "persistence/errors.hpp"
#include "schemas/protocol.capnp.h"
#include "tests/temp_dir.hpp"

namespace outpost::net {
namespace {
using outpost::testing::TempDir;

// An agent's controller that answers status with a fixed text.
class StatusController final : public protocol::AgentController::Server {
 public:
  kj::Promise<void> status(StatusContext context) override {
    context.getResults().setJson("{\"state\":\"fine\"}");
    return kj::READY_NOW;
  }
};

// An agent named `id` on 127.0.0.1:`port`, its hello answered, until this goes.
struct TestAgent {
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyClient client;
  capnp::Response<protocol::Collector::HelloResults> session;
  TestAgent(kj::AsyncIoContext& io, uint16_t port, const std::string& id)
      : stream(io.provider->getNetwork().parseAddress("127.0.0.1", port).wait(io.waitScope)->connect().wait(
            io.waitScope)),
        client(*stream),
        session(hello(client, id).wait(io.waitScope)) {}
  static capnp::RemotePromise<protocol::Collector::HelloResults> hello(capnp::TwoPartyClient& client,
                                                                       const std::string& id) {
    auto req = client.bootstrap().castAs<protocol::Collector>().helloRequest();
    req.initAgent().setMajorVersion(protocol::MAJOR_VERSION);
    req.getAgent().setClaimedId(id);
    req.setController(kj::heap<StatusController>());
    return req.send();
  }
};

// Runs `call` with an admin client on a thread and event loop of its own.
template <typename R>
std::future<R> from_another_thread(const std::string& socket,
                                   std::function<R(protocol::Admin::Client&, kj::WaitScope&)> call) {
  return std::async(std::launch::async, [socket, call] {
    auto io = kj::setupAsyncIo();
    auto stream = io.provider->getNetwork().parseAddress("unix:" + socket).wait(io.waitScope)->connect().wait(
        io.waitScope);
    capnp::TwoPartyClient client(*stream);
    auto admin = client.bootstrap().castAs<protocol::Admin>();
    return call(admin, io.waitScope);
  });
}

struct AdminSocket : ::testing::Test {
  TempDir tmp;
  kj::AsyncIoContext io = kj::setupAsyncIo();
  CollectorStore store{tmp.path("data")};
  StorageWorker worker{store};
  CollectorConfig config;
  std::unique_ptr<CollectorServer> server;
  uint16_t port = 0;

  AdminSocket() {
    config.port = 0;
    config.tls.insecure = true;
    config.admin_socket = tmp.path("admin.sock").string();
    server = std::make_unique<CollectorServer>(io, config, store, worker);
    port = server->start().wait(io.waitScope);
  }
  ~AdminSocket() noexcept override {}

  // Waits for `f` without turning this thread's loop (the agents' loop); if
  // it does not come, turns the loop until it does, so the test can end.
  template <typename R>
  bool ready_without_the_loop(std::future<R>& f) {
    if (f.wait_for(std::chrono::seconds(60)) == std::future_status::ready) return true;
    while (f.wait_for(std::chrono::milliseconds(0)) != std::future_status::ready)
      io.provider->getTimer().afterDelay(10 * kj::MILLISECONDS).wait(io.waitScope);
    return false;
  }
};

TEST_F(AdminSocket, AgentsAndStorageAreAnsweredWhileTheAgentsLoopDoesNotTurn) {
  auto& ws = io.waitScope;
  TestAgent agent(io, port, "busy-1");

  struct Listing {
    std::string backend, id, peer;
    bool connected = false;
    size_t agents = 0;
  };
  auto listing = from_another_thread<Listing>(config.admin_socket, [](protocol::Admin::Client& admin,
                                                                      kj::WaitScope& ws) {
    Listing got;
    got.backend = admin.storageRequest().send().wait(ws).getBackend().cStr();
    auto listed = admin.listAgentsRequest().send().wait(ws);
    auto agents = listed.getAgents();
    got.agents = agents.size();
    if (agents.size() > 0) {
      got.id = agents[0].getId().cStr();
      got.peer = agents[0].getPeer().cStr();
      got.connected = agents[0].getConnected();
    }
    return got;
  });
  // This thread serves the agents, and does not turn its loop meanwhile.
  ASSERT_TRUE(ready_without_the_loop(listing)) << "agents waited for the agents' loop";
  auto got = listing.get();
  EXPECT_EQ(got.backend, "jsonl");
  ASSERT_EQ(got.agents, 1u);
  EXPECT_EQ(got.id, "busy-1");
  EXPECT_TRUE(got.connected);
  EXPECT_NE(got.peer.find("127.0.0.1:"), std::string::npos) << got.peer;

  // Status needs the agent's connection: the agents' loop runs it when it turns.
  auto status = from_another_thread<std::string>(config.admin_socket, [](protocol::Admin::Client& admin,
                                                                         kj::WaitScope& ws) {
    auto req = admin.agentStatusRequest();
    req.setAgent("busy-1");
    return std::string(req.send().wait(ws).getJson().cStr());
  });
  while (status.wait_for(std::chrono::milliseconds(0)) != std::future_status::ready)
    io.provider->getTimer().afterDelay(5 * kj::MILLISECONDS).wait(ws);
  EXPECT_EQ(status.get(), "{\"state\":\"fine\"}");

  // A call for an agent that was never here is refused by the agents' loop, saying so.
  auto refused = from_another_thread<std::string>(config.admin_socket, [](protocol::Admin::Client& admin,
                                                                          kj::WaitScope& ws) {
    auto req = admin.collectRequest();
    req.setAgent("nobody");
    req.getRequest().setArtifact("Generic.Client.Info");
    try {
      req.send().wait(ws);
      return std::string("accepted");
    } catch (const kj::Exception& e) {
      return std::string(e.getDescription().cStr());
    }
  });
  while (refused.wait_for(std::chrono::milliseconds(0)) != std::future_status::ready)
    io.provider->getTimer().afterDelay(5 * kj::MILLISECONDS).wait(ws);
  EXPECT_NE(refused.get().find("no agent nobody has ever connected"), std::string::npos);
}

TEST_F(AdminSocket, ACollectorStoppedWhileACallWaitsForItsLoopAnswersItWithAnError) {
  // The client lists (answered without the loop), says so, then asks for a
  // status, which waits for the agents' loop; that loop never turns again:
  // the server goes meanwhile.
  std::promise<void> listed;
  auto listed_now = listed.get_future();
  auto pending = from_another_thread<std::string>(
      config.admin_socket, [&listed](protocol::Admin::Client& admin, kj::WaitScope& ws) {
        admin.listAgentsRequest().send().wait(ws);
        listed.set_value();
        auto req = admin.agentStatusRequest();
        req.setAgent("anyone");
        try {
          req.send().wait(ws);
          return std::string("answered");
        } catch (const kj::Exception& e) {
          return std::string(e.getType() == kj::Exception::Type::DISCONNECTED ? "disconnected: " : "failed: ") +
                 e.getDescription().cStr();
        }
      });
  ASSERT_EQ(listed_now.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  server.reset();
  ASSERT_EQ(pending.wait_for(std::chrono::seconds(60)), std::future_status::ready) << "the call was left hanging";
  // The admin thread ended with the server: its connections with it.
  std::string outcome = pending.get();
  EXPECT_EQ(outcome.rfind("disconnected: ", 0), 0u) << outcome;
}

TEST_F(AdminSocket, ASocketThatCannotBeMadeIsAnErrorNamingIt) {
  CollectorConfig bad = config;
  bad.admin_socket = tmp.path("no-such-dir/admin.sock").string();
  CollectorServer other(io, bad, store, worker);
  try {
    other.start().wait(io.waitScope);
    ADD_FAILURE() << "started with an admin socket in a missing directory";
  } catch (const kj::Exception& e) {
    std::string text = e.getDescription().cStr();
    EXPECT_NE(text.find("cannot take admin commands on " + bad.admin_socket + ": No such file or directory"),
              std::string::npos)
        << text;
  }
}

// The collector's own state, recording each forget_silent_agents call; the
// first fails, as a NATS that does not answer would.
class ForgetRecorder final : public AdminState {
 public:
  explicit ForgetRecorder(AdminState& inner) : inner_(inner) {}
  uint64_t next_flow_ids(uint64_t count) override { return inner_.next_flow_ids(count); }
  uint64_t flows_given_below() const override { return inner_.flows_given_below(); }
  bool known_agent(const std::string& agent) const override { return inner_.known_agent(agent); }
  void remember_agent(const std::string& agent) override { inner_.remember_agent(agent); }
  std::vector<std::string> agents_met() const override { return inner_.agents_met(); }
  void set_event_table(const std::string& agent, const std::string& encoded) override {
    inner_.set_event_table(agent, encoded);
  }
  std::string event_table(const std::string& agent) const override { return inner_.event_table(agent); }
  void queue_request(const std::string& agent, const std::string& encoded) override {
    inner_.queue_request(agent, encoded);
  }
  std::vector<Queued> queued_requests(const std::string& agent) const override { return inner_.queued_requests(agent); }
  void remove_request(const std::string& agent, uint64_t key) override { inner_.remove_request(agent, key); }
  std::vector<std::string> agents_with_requests() const override { return inner_.agents_with_requests(); }
  Forgotten forget_silent_agents(const std::vector<std::string>& connected, int64_t) override {
    std::lock_guard<std::mutex> lock(mutex_);
    calls_.push_back(connected);
    if (calls_.size() == 1) throw persistence::StoreError("the bucket does not answer");
    return {};
  }
  std::vector<std::vector<std::string>> calls() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return calls_;
  }

 private:
  AdminState& inner_;
  mutable std::mutex mutex_;
  std::vector<std::vector<std::string>> calls_;
};

// Every forget_period the collector hands its state the agents connected
// to it, and goes on after a call that failed.
TEST(CollectorServerForget, TheStateIsAskedEveryPeriodWithTheAgentsConnectedThen) {
  TempDir tmp;
  auto io = kj::setupAsyncIo();
  auto& ws = io.waitScope;
  CollectorStore store{tmp.path("data")};
  StorageWorker worker{store};
  ForgetRecorder state(store);
  CollectorConfig config;
  config.port = 0;
  config.tls.insecure = true;
  config.forget_period = std::chrono::milliseconds(50);
  CollectorServer server(io, config, state, worker);
  uint16_t port = server.start().wait(ws);
  // Turns the agents' loop until the newest call is `want`.
  auto newest_becomes = [&](const std::vector<std::string>& want) {
    for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
         std::chrono::steady_clock::now() < deadline;) {
      auto calls = state.calls();
      if (calls.size() >= 2 && calls.back() == want) return true;
      io.provider->getTimer().afterDelay(10 * kj::MILLISECONDS).wait(ws);
    }
    return false;
  };

  {
    TestAgent agent(io, port, "forget-1");
    EXPECT_TRUE(newest_becomes({"forget-1"})) << "calls: " << state.calls().size();
  }  // the agent goes
  EXPECT_TRUE(newest_becomes({})) << "the agent gone, it was still handed as connected";
}

}  // namespace
}  // namespace outpost::net
