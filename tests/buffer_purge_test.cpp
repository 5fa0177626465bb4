// A purge runs in slices on the buffer's thread: requests that arrive while
// it is under way are served between its slices, not after the whole scan.

#include <gtest/gtest.h>


#include "actors/buffer_actor.hpp"
#include "tests/actor_test_util.hpp"
#include "tests/store_test_util.hpp"
#include "tests/temp_dir.hpp"

namespace outpost {
namespace {
using namespace outpost::testing;
using persistence::testing::Batch;

TEST(BufferPurge, RequestsAreServedBetweenSlices) {
  TempDir tmp;
  persistence::StoreOptions o;
  o.dir = tmp.path("buf");
  constexpr uint64_t kRecords = 30000;  // three slices at least
  {
    persistence::BufferStore store(o);
    Batch mine(kRecords / 2, 40, 7), other(1000, 40, 8), more(kRecords / 2, 40, 7);
    ASSERT_TRUE(store.append(Lane::RESULTS, mine.ptr()).ok());
    ASSERT_TRUE(store.append(Lane::RESULTS, other.ptr()).ok());
    ASSERT_TRUE(store.append(Lane::EVENTS, more.ptr()).ok());
  }
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto buf = sys.spawn<caf::detached>(buffer, std::make_shared<persistence::BufferStore>(o));
  // Both requests go out at once; their answers arrive in the order the
  // buffer gave them.
  {
  caf::scoped_actor self{sys};
  self->send(buf, purge_atom::value, uint64_t{7});
  self->send(buf, status_atom::value);
  std::vector<std::string> answers;
  for (int i = 0; i < 2; ++i)
    self->receive([&](uint64_t n) { answers.push_back("purge " + std::to_string(n)); },
                  [&](caf::settings&) { answers.push_back("status"); },
                  caf::after(std::chrono::seconds(60)) >> [&] { answers.push_back("timeout"); });
  EXPECT_EQ(answers[0], "status") << "the purge held the buffer for its whole scan";
  EXPECT_EQ(answers[1], "purge " + std::to_string(kRecords));
  auto s = status_of(self, buf);
  EXPECT_EQ(count(s, "lanes.results.records"), 1000);
  EXPECT_EQ(count(s, "lanes.events.records"), 0);
  }  // the scoped actor must be gone before the system waits for all actors
  caf::anon_send(buf, close_atom::value);
  sys.await_all_actors_done();
}

}  // namespace
}  // namespace outpost
