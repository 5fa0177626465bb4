// The collector's side of the control plane: flow ids that a reset datadir
// does not reuse, the agents it has met, and the thread its writes run on.

#include <gtest/gtest.h>
#include <kj/async.h>

#include <thread>

#include "actors/control.hpp"
#include "net/collector/admin_writer.hpp"
#include "net/collector/collector_store.hpp"
#include "tests/temp_dir.hpp"

namespace outpost::net {
namespace {
using testing::TempDir;
namespace fs = std::filesystem;

TEST(ControlStore, FlowIdsOfAResetDatadirStartAboveEveryOldOne) {
  TempDir tmp;
  uint64_t first = 0;
  {
    CollectorStore store(tmp.path("data"));
    first = store.next_flow_ids(3);
    EXPECT_GE(first, kFirstFlowId);
    uint64_t next = store.next_flow_ids();
    EXPECT_GE(next, first + 3) << "an id given out twice";
    EXPECT_EQ(store.flows_given_below(), next + 1);
    first = next;
  }
  fs::remove_all(tmp.path("data"));  // the collector's state is lost
  CollectorStore store(tmp.path("data"));
  EXPECT_EQ(store.flows_given_below(), 0u);
  EXPECT_GT(store.next_flow_ids(), first) << "a reset datadir gave out an id again";
}

TEST(ControlStore, AnAgentIsKnownOnceMetOrGivenSomethingToDo) {
  TempDir tmp;
  CollectorStore store(tmp.path("data"));
  EXPECT_FALSE(store.known_agent("a1"));
  store.remember_agent("a1");
  store.remember_agent("a1");  // met again: nothing changes
  EXPECT_TRUE(store.known_agent("a1"));
  auto agents = store.agents();
  ASSERT_EQ(agents.size(), 1u);
  EXPECT_EQ(agents[0].id, "a1");
  EXPECT_EQ(agents[0].last_upload_ns, 0) << "met, never uploaded";
  // Met but silent for longer than agents_keep_days: pruned like any silent
  // agent (a peer naming itself anew at each hello must not grow the list).
  int64_t day = int64_t{24} * 3600 * 1000000000;
  EXPECT_EQ(store.prune(schemas::now_ns() + 30 * day).agents, 0u);
  EXPECT_EQ(store.prune(schemas::now_ns() + 400 * day).agents, 1u);
  EXPECT_FALSE(store.known_agent("a1"));
  store.remember_agent("a1");

  store.queue_request("a2", "request");
  EXPECT_TRUE(store.known_agent("a2"));
  EXPECT_FALSE(store.known_agent("a")) << "a prefix of a known agent's name";
  store.set_event_table("a3", "table");
  EXPECT_TRUE(store.known_agent("a3"));
  EXPECT_FALSE(store.known_agent("a4"));
}

TEST(ControlStore, AdminWriterRunsJobsInOrderOffTheLoopAndCarriesTheirErrorsBack) {
  kj::EventLoop loop;
  kj::WaitScope wait(loop);
  AdminWriter writer;
  auto loop_thread = std::this_thread::get_id();
  std::vector<int> order;  // written by the writer's thread only, read after its jobs resolved
  auto a = writer.run([&] { order.push_back(1); });
  auto b = writer.run([&] {
    order.push_back(2);
    return std::this_thread::get_id();
  });
  a.wait(wait);
  EXPECT_NE(b.wait(wait), loop_thread) << "a write ran on the loop's thread";
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
  auto failed = writer.run([]() -> uint64_t { throw std::runtime_error("MDB_MAP_FULL: the map is full"); });
  try {
    failed.wait(wait);
    ADD_FAILURE() << "no error";
  } catch (const kj::Exception& e) {
    EXPECT_EQ(std::string(e.getDescription().cStr()), "MDB_MAP_FULL: the map is full");
  }
}

}  // namespace
}  // namespace outpost::net
