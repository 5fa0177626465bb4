// The collector's admin socket is served on a thread of its own: `agents`
// and `storage` are answered while the loop serving the agents does not turn
// at all (here: the test's thread, which serves them, is busy elsewhere),
// and a call that needs an agent's connection is run by that loop once it
// turns. Real sockets, a real agent connection, admin clients on threads.

#include <capnp/rpc-twoparty.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <chrono>
#include <functional>
#include <future>
#include <string>
#include <thread>

#include "net/collector/collector_server.hpp"
#include "net/collector/collector_store.hpp"
#include "net/collector/storage_worker.hpp"
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
  auto stream = io.provider->getNetwork().parseAddress("127.0.0.1", port).wait(ws)->connect().wait(ws);
  capnp::TwoPartyClient client(*stream);
  auto hello = client.bootstrap().castAs<protocol::Collector>().helloRequest();
  hello.initAgent().setMajorVersion(protocol::MAJOR_VERSION);
  hello.getAgent().setClaimedId("busy-1");
  hello.setController(kj::heap<StatusController>());
  auto session = hello.send().wait(ws);

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

}  // namespace
}  // namespace outpost::net
