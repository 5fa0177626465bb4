// The relay between the collectors of a fleet (AdminRelay) against a real
// nats-server on 127.0.0.1: calls reach the collector holding an agent,
// answers come back whole (in parts past NATS' max_payload), and `where` is
// answered without the holder's event loop. No process of ours: these run
// under TSan too.

#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <atomic>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "net/collector/admin_relay.hpp"
#include "tests/nats_cluster.hpp"
#include "tests/temp_dir.hpp"

namespace outpost::net {
namespace {

using namespace outpost::testing;

struct AdminRelayTest : WithOneNatsNode {};

// Two relays (two collectors) on one event loop each side of NATS.
// Results bigger than NATS' max_payload (1 MiB here) come in parts; two
// holders answering at once (an agent's reconnect) are not mixed.
TEST_F(AdminRelayTest, ARelayedAnswerOverNatsMaxPayloadComesWholeInPartsUpToItsLimit) {
  auto io = kj::setupAsyncIo();
  AdminRelayOptions o;
  o.nats.servers = nats->urls();
  o.max_answer_bytes = 5 << 20;
  AdminRelay first(o), second(o), asker(o);
  struct Errors : kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&& e) override { ADD_FAILURE() << e.getDescription().cStr(); }
  } errors;
  kj::TaskSet tasks(errors);
  auto results = [](size_t size, char salt) {
    std::string body(size, '\0');
    for (size_t i = 0; i < size; ++i) body[i] = static_cast<char>((i % 251) ^ salt);
    return body;
  };
  auto answering = [&](AdminRelay& holder, char salt) {
    return [&holder, &results, salt](AdminRelay::Call call) {
      holder.answer(call, {AdminRelay::Answer::answered, results(std::stoul(call.body), salt), {}});
    };
  };
  first.start(io.provider->getTimer(), tasks, answering(first, 1));
  second.start(io.provider->getTimer(), tasks, answering(second, 2));
  asker.start(io.provider->getTimer(), tasks, [&](AdminRelay::Call) { ADD_FAILURE() << "the asker holds nobody"; });

  std::thread([&] { first.hold("agent.1"); }).join();
  auto answer = asker.ask("agent.1", "inspector.5", "3500000").wait(io.waitScope);
  ASSERT_EQ(answer.kind, AdminRelay::Answer::answered) << answer.error;
  EXPECT_TRUE(answer.body == results(3500000, 1)) << answer.body.size() << " bytes";

  auto over = asker.ask("agent.1", "inspector.5", "6000000").wait(io.waitScope);
  EXPECT_EQ(over.kind, AdminRelay::Answer::failed);
  EXPECT_NE(over.error.find("is over what the collectors relay (5242880)"), std::string::npos) << over.error;

  std::thread([&] { second.hold("agent.1"); }).join();
  for (int i = 0; i < 10; ++i) {
    auto both = asker.ask("agent.1", "inspector.5", "2500000").wait(io.waitScope);
    ASSERT_EQ(both.kind, AdminRelay::Answer::answered) << both.error;
    EXPECT_TRUE(both.body == results(2500000, 1) || both.body == results(2500000, 2)) << "parts of two answers mixed";
  }
}

TEST_F(AdminRelayTest, ARelayedCallReachesTheCollectorHoldingTheAgentAndNoneMeansNotHere) {
  auto io = kj::setupAsyncIo();
  AdminRelayOptions o;
  o.nats.servers = nats->urls();
  AdminRelay holder(o), asker(o);
  struct Errors : kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&& e) override { ADD_FAILURE() << e.getDescription().cStr(); }
  } errors;
  kj::TaskSet tasks(errors);
  std::vector<AdminRelay::Call> calls;
  holder.start(io.provider->getTimer(), tasks, [&](AdminRelay::Call call) {
    calls.push_back(call);
    if (call.name == "push") return;
    if (call.body == "leave") return holder.answer(call, {AdminRelay::Answer::not_here, {}, {}});
    if (call.body == "refuse") return holder.answer(call, {AdminRelay::Answer::failed, {}, "no\nsuch flow"});
    holder.answer(call, {AdminRelay::Answer::answered, "re: " + call.body, {}});
  });
  asker.start(io.provider->getTimer(), tasks, [&](AdminRelay::Call) { ADD_FAILURE() << "the asker holds nobody"; });

  std::thread([&] { holder.hold("agent.1"); }).join();  // blocks: off the loop
  auto answer = asker.ask("agent.1", "collect", "params").wait(io.waitScope);
  EXPECT_EQ(answer.kind, AdminRelay::Answer::answered);
  EXPECT_EQ(answer.body, "re: params");
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].agent, "agent.1");
  EXPECT_EQ(calls[0].name, "collect");

  EXPECT_EQ(asker.ask("agent.1", "cancel", "refuse").wait(io.waitScope).error, "no such flow");
  EXPECT_EQ(asker.ask("agent.1", "cancel", "leave").wait(io.waitScope).kind, AdminRelay::Answer::not_here);
  EXPECT_EQ(asker.ask("agent-2", "collect", "x").wait(io.waitScope).kind, AdminRelay::Answer::not_here)
      << "nobody holds agent-2";

  asker.poke("agent.1");
  while (calls.size() < 4) io.waitScope.poll(), std::this_thread::yield();
  EXPECT_EQ(calls.back().name, "push");
  EXPECT_TRUE(calls.back().reply.empty());

  // Held twice (a reconnect's new connection before the old one's end): released twice.
  std::thread([&] { holder.hold("agent.1"); }).join();
  std::thread([&] { holder.release("agent.1"); }).join();
  EXPECT_EQ(asker.ask("agent.1", "collect", "still").wait(io.waitScope).kind, AdminRelay::Answer::answered);
  std::thread([&] { holder.release("agent.1"); }).join();
  EXPECT_EQ(asker.ask("agent.1", "collect", "gone").wait(io.waitScope).kind, AdminRelay::Answer::not_here);
}

// `where`, which `agents` asks about every agent connected elsewhere, is
// answered where it arrives, not on the holder's event loop (which may be
// seconds behind with its agents' uploads): here that loop never turns.
TEST_F(AdminRelayTest, AWhereIsAnsweredWhileTheHoldersLoopDoesNotTurn) {
  AdminRelayOptions o;
  o.nats.servers = nats->urls();
  o.answer_timeout = std::chrono::milliseconds(3000);
  AdminRelay holder(o), asker(o);
  struct Errors : kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&& e) override { ADD_FAILURE() << e.getDescription().cStr(); }
  } errors;
  std::promise<void> started, stop;
  std::atomic<int> wheres{0};
  std::thread holder_loop([&] {
    auto io = kj::setupAsyncIo();
    kj::TaskSet tasks(errors);
    holder.start(io.provider->getTimer(), tasks, [](AdminRelay::Call) {}, [&](const std::string& agent) {
      ++wheres;
      if (agent == "agent.3") throw std::runtime_error("cannot tell");
      if (agent != "agent.1") return AdminRelay::Answer{AdminRelay::Answer::not_here, {}, {}};
      return AdminRelay::Answer{AdminRelay::Answer::answered, "summary of " + agent, {}};
    });
    started.set_value();
    stop.get_future().wait();  // the loop does not turn
  });
  started.get_future().wait();
  holder.hold("agent.1");
  holder.hold("agent.2");  // subscribed, but no longer connected here
  holder.hold("agent.3");  // its answer fails

  auto io = kj::setupAsyncIo();
  kj::TaskSet tasks(errors);
  asker.start(io.provider->getTimer(), tasks, [](AdminRelay::Call) { ADD_FAILURE() << "the asker holds nobody"; });
  auto here = asker.ask("agent.1", "where", "").wait(io.waitScope);
  auto left = asker.ask("agent.2", "where", "").wait(io.waitScope);
  auto failed = asker.ask("agent.3", "where", "").wait(io.waitScope);
  // Once stopped (its collector going away), the relay no longer calls what
  // answered: as if the agent were not here.
  holder.stop();
  int before = wheres;
  auto after_stop = asker.ask("agent.1", "where", "").wait(io.waitScope);
  stop.set_value();
  holder_loop.join();
  EXPECT_EQ(here.kind, AdminRelay::Answer::answered) << here.error;
  EXPECT_EQ(here.body, "summary of agent.1");
  EXPECT_EQ(left.kind, AdminRelay::Answer::not_here) << left.error;
  EXPECT_EQ(failed.kind, AdminRelay::Answer::failed);
  EXPECT_EQ(failed.error, "where: cannot tell");
  EXPECT_EQ(after_stop.kind, AdminRelay::Answer::not_here) << after_stop.error;
  EXPECT_EQ(wheres, before);
}

}  // namespace
}  // namespace outpost::net
