// Model-based test: random appends, reads, acks, purges and reopens, each
// checked against an in-memory model of what the store must hold.

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <random>
#include <string>

#include "persistence/buffer_store.hpp"
#include "persistence/record_format.hpp"
#include "tests/temp_dir.hpp"

namespace outpost::persistence {
namespace {

struct ModelRecord {
  uint64_t query_id;
  std::string payload;
};
using LaneModel = std::map<uint64_t, ModelRecord>;  // seq -> record

class StoreModel : public ::testing::TestWithParam<unsigned> {
 protected:
  void reopen() {
    store_.reset();
    StoreOptions o;
    o.dir = tmp_.path("buf");
    o.limit_bytes = 256 * 1024;
    o.sync = SyncPolicy::none;  // kill -9 safety is the crash test's job; this one is about logic
    o.compact_threshold_bytes = 512 * 1024;
    store_ = std::make_unique<BufferStore>(o);
  }

  uint64_t model_bytes() const {
    uint64_t sum = 0;
    for (auto& lane : lanes_)
      for (auto& [seq, r] : lane) sum += record_format::accounted_bytes(r.payload.size());
    return sum;
  }

  void check_lane(size_t i) {
    auto got = store_->read(static_cast<Lane>(i), 0, 1u << 30, 1u << 30);
    ASSERT_EQ(got.quarantined, 0u);
    ASSERT_EQ(got.records.size(), lanes_[i].size());
    auto it = lanes_[i].begin();
    for (auto& r : got.records) {
      ASSERT_EQ(r.seq, it->first);
      ASSERT_EQ(r.query_id, it->second.query_id);
      ASSERT_EQ(std::string(reinterpret_cast<const char*>(r.payload().begin()), r.size),
                it->second.payload);
      ++it;
    }
  }

  testing::TempDir tmp_;
  std::unique_ptr<BufferStore> store_;
  std::array<LaneModel, kLaneCount> lanes_;
};

TEST_P(StoreModel, RandomOperationsMatchTheModel) {
  std::mt19937_64 rng(GetParam());
  auto pick = [&](uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng); };
  reopen();
  uint64_t last_seq = 0;
  int full = 0;
  for (int step = 0; step < 1500; ++step) {
    size_t lane = pick(kLaneCount);
    switch (pick(10)) {
      case 0: case 1: case 2: case 3: {  // append
        size_t n = 1 + pick(20);
        std::vector<std::string> payloads;
        std::vector<RecordIn> records;
        for (size_t i = 0; i < n; ++i)
          payloads.push_back(std::string(pick(3000), char('a' + pick(26))));
        for (auto& p : payloads)
          records.push_back({1 + pick(5), int64_t(step),
                             {reinterpret_cast<const kj::byte*>(p.data()), p.size()}});
        uint64_t before = model_bytes();
        auto r = store_->append(static_cast<Lane>(lane), {records.data(), records.size()});
        uint64_t need = 0;
        for (auto& p : payloads) need += record_format::accounted_bytes(p.size());
        if (before + need > store_->options().limit_bytes) {
          ASSERT_EQ(r.outcome, AppendOutcome::full) << step;
          ++full;
          break;
        }
        ASSERT_TRUE(r.ok()) << r.reason;
        ASSERT_GT(r.first_seq, last_seq);
        ASSERT_EQ(r.last_seq - r.first_seq + 1, n);
        last_seq = r.last_seq;
        for (size_t i = 0; i < n; ++i)
          lanes_[lane][r.first_seq + i] = {records[i].query_id, payloads[i]};
        break;
      }
      case 4: case 5: {  // ack a prefix
        if (lanes_[lane].empty()) break;
        auto it = lanes_[lane].begin();
        std::advance(it, pick(lanes_[lane].size()));
        uint64_t through = it->first, freed = 0;
        for (auto j = lanes_[lane].begin(); j != lanes_[lane].end() && j->first <= through;)
          freed += record_format::accounted_bytes(j->second.payload.size()),
              j = lanes_[lane].erase(j);
        ASSERT_EQ(store_->ack(static_cast<Lane>(lane), through), freed);
        break;
      }
      case 6: {  // purge a query
        uint64_t q = 1 + pick(5), purged = 0;
        for (auto& l : lanes_)
          for (auto j = l.begin(); j != l.end();)
            j = j->second.query_id == q ? (++purged, l.erase(j)) : std::next(j);
        ASSERT_EQ(store_->purge(q), purged);
        break;
      }
      case 7: {  // bounded read from the middle
        if (lanes_[lane].empty()) break;
        auto it = lanes_[lane].begin();
        std::advance(it, pick(lanes_[lane].size()));
        auto got = store_->read(static_cast<Lane>(lane), it->first, 1 + pick(10), 1 + pick(8000));
        ASSERT_FALSE(got.records.empty() && std::next(it) != lanes_[lane].end());
        for (auto& r : got.records) ASSERT_EQ(r.seq, (++it)->first);
        break;
      }
      case 8: reopen(); break;
      case 9: check_lane(lane); break;
    }
    auto s = store_->stats();
    ASSERT_EQ(s.live_bytes, model_bytes()) << "step " << step;
    for (size_t i = 0; i < kLaneCount; ++i) ASSERT_EQ(s.lanes[i].live.records, lanes_[i].size());
  }
  for (size_t i = 0; i < kLaneCount; ++i) check_lane(i);
  auto v = store_->verify();
  EXPECT_TRUE(v.meta_matches);
  EXPECT_EQ(v.corrupt, 0u);
  EXPECT_GT(full, 0) << "the limit was never reached: the test lost its edge";
}

INSTANTIATE_TEST_SUITE_P(Seeds, StoreModel, ::testing::Values(1u, 2u, 3u, 4u));

}  // namespace
}  // namespace outpost::persistence
