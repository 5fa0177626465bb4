// A cancel of a queued collection while the collector hands the queue to the
// agent that just connected: one not yet handed over is never sent (the rest
// still are); the one being handed over right now may run, so the cancel goes
// to the agent.

#include <capnp/rpc-twoparty.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <vector>

#include "net/collector/collector_server.hpp"
#include "net/collector/collector_store.hpp"
#include "net/collector/storage_worker.hpp"
#include "schemas/protocol.capnp.h"
#include "tests/temp_dir.hpp"

namespace outpost::net {
namespace {
using outpost::testing::TempDir;

// An agent's controller that holds each collect's answer until told.
class HeldController final : public protocol::AgentController::Server {
 public:
  std::vector<uint64_t> collected, cancelled;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> held;

  kj::Promise<void> collect(CollectContext context) override {
    uint64_t flow = context.getParams().getRequest().getFlowId();
    collected.push_back(flow);
    context.getResults().setFlowId(flow);
    auto paf = kj::newPromiseAndFulfiller<void>();
    held.push_back(kj::mv(paf.fulfiller));
    return kj::mv(paf.promise);
  }
  kj::Promise<void> cancel(CancelContext context) override {
    cancelled.push_back(context.getParams().getFlowId());
    context.getResults().setOutcome(protocol::CancelOutcome::STOPPED);
    return kj::READY_NOW;
  }
};

TEST(QueuedCancel, OnlyTheRequestBeingHandedOverReachesTheAgentAndItsCancelFollows) {
  TempDir tmp;
  auto io = kj::setupAsyncIo();
  CollectorStore store(tmp.path("data"));
  StorageWorker worker(store);
  CollectorConfig config;
  config.port = 0;
  config.tls.insecure = true;
  config.admin_socket = tmp.path("admin.sock").string();
  CollectorServer server(io, config, store, worker);
  uint16_t port = server.start().wait(io.waitScope);
  auto& ws = io.waitScope;
  {
    auto poll_until = [&](const std::function<bool()>& done) {
      for (int i = 0; i < 2000 && !done(); ++i) io.provider->getTimer().afterDelay(5 * kj::MILLISECONDS).wait(ws);
      return done();
    };

    auto admin_stream = io.provider->getNetwork().parseAddress("unix:" + config.admin_socket).wait(ws)->connect().wait(ws);
    capnp::TwoPartyClient admin_client(*admin_stream);
    auto admin = admin_client.bootstrap().castAs<protocol::Admin>();
    auto collect = [&] {
      auto req = admin.collectRequest();
      req.setAgent("slow");
      req.getRequest().setArtifact("Outpost.Test.Clock");
      req.setNewAgent(true);
      auto resp = req.send().wait(ws);
      EXPECT_TRUE(resp.getQueued());
      return resp.getFlowId();
    };
    auto cancel = [&](uint64_t flow) {
      auto req = admin.cancelRequest();
      req.setAgent("slow");
      req.setFlowId(flow);
      return req.send().wait(ws).getOutcome();
    };
    uint64_t first = collect(), second = collect(), third = collect();

    // The agent connects: the collector hands it the first request and waits for its answer.
    auto held = kj::heap<HeldController>();
    HeldController& agent = *held;
    protocol::AgentController::Client controller = kj::mv(held);
    auto stream = io.provider->getNetwork().parseAddress("127.0.0.1", port).wait(ws)->connect().wait(ws);
    capnp::TwoPartyClient client(*stream);
    auto hello = client.bootstrap().castAs<protocol::Collector>().helloRequest();
    hello.initAgent().setMajorVersion(protocol::MAJOR_VERSION);
    hello.getAgent().setClaimedId("slow");
    hello.setController(controller);
    auto session = hello.send().wait(ws);
    ASSERT_TRUE(poll_until([&] { return agent.collected.size() == 1; }));
    EXPECT_EQ(agent.collected[0], first);

    // The second is still in the queue: dropping it is the whole cancel.
    EXPECT_EQ(cancel(second), protocol::CancelOutcome::NOT_SENT);
    // The first is being handed over: the agent may run it, so it is told.
    EXPECT_EQ(cancel(first), protocol::CancelOutcome::STOPPED);
    EXPECT_EQ(agent.cancelled, std::vector<uint64_t>{first});

    // The first is answered; the cancelled second must never come, the third does.
    agent.held[0]->fulfill();
    ASSERT_TRUE(poll_until([&] { return agent.collected.size() >= 2; }));
    EXPECT_EQ(agent.collected, (std::vector<uint64_t>{first, third})) << "a cancelled request was sent";
    agent.held[1]->fulfill();
    ASSERT_TRUE(poll_until([&] { return store.queued_requests("slow").empty(); }));
  }
  // The connections end on the loop before the server goes.
  io.provider->getTimer().afterDelay(50 * kj::MILLISECONDS).wait(io.waitScope);
}

}  // namespace
}  // namespace outpost::net
