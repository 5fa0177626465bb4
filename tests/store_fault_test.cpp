// Damaged files and exhausted resources: the store must stay up, lose
// nothing it accepted, and never reuse a seq.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <set>

#include "persistence/buffer_store.hpp"
#include "tests/store_test_util.hpp"
#include "tests/temp_dir.hpp"

namespace outpost::persistence {
namespace {
namespace fs = std::filesystem;
using outpost::testing::TempDir;
using namespace outpost::persistence::testing;

// How a forked child running `body` ended: "exit N" or "signal N".
std::string child_status(const std::function<void()>& body) {
  pid_t child = fork();
  if (child == 0) {
    try {
      body();
    } catch (const std::exception& e) {
      fprintf(stderr, "child: %s\n", e.what());
      _exit(3);
    }
    _exit(0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  return WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                             : "exit " + std::to_string(WEXITSTATUS(status));
}

TEST(StoreFaults, HostileMetaPagesAreSetAsideNotTrusted) {
  TempDir tmp;
  {
    BufferStore store(options_for(tmp.path("buf")));
    Batch b(5, 50, 1);
    store.append(Lane::EVENTS, b.ptr());
  }
  auto file = tmp.path("buf") / "data.mdb";
  std::string data = slurp(file);
  uint64_t huge = 1ull << 40;
  for (size_t page : {0, 4096}) std::memcpy(&data[page + 136], &huge, 8);  // mm_last_pg
  spit(file, data);
  BufferStore store(options_for(tmp.path("buf")));
  ASSERT_TRUE(store.open_report().set_aside_to);
  EXPECT_NE(store.open_report().reason.find("truncated"), std::string::npos)
      << store.open_report().reason;
  Batch b(1, 10, 1);
  EXPECT_TRUE(store.append(Lane::EVENTS, b.ptr()).ok());
}

// A node size pointing past the file is damage: the open's check finds it
// and the two intact records are salvaged; nothing faults.
TEST(StoreFaults, DamagedNodeSizeIsSalvagedNotAFault) {
  TempDir tmp;
  const std::string marker = "VICTIM-RECORD";
  {
    BufferStore store(options_for(tmp.path("buf")));
    Batch good(2, 100, 1, "good"), victim(1, 100, 2, marker);
    store.append(Lane::EVENTS, good.ptr());
    store.append(Lane::EVENTS, victim.ptr());
  }
  auto file = tmp.path("buf") / "data.mdb";
  std::string data = slurp(file);
  size_t pos = data.find(marker);
  ASSERT_NE(pos, std::string::npos);
  size_t node = pos - 24 - 8 - 8;  // our header, the key, LMDB's node header
  uint16_t lo, hi;
  std::memcpy(&lo, &data[node], 2);
  std::memcpy(&hi, &data[node + 2], 2);
  ASSERT_EQ(lo, 124);
  ASSERT_EQ(hi, 0);
  hi = 0x0100;  // one bit: 124 bytes become 16 MiB + 124, far past the file
  std::memcpy(&data[node + 2], &hi, 2);
  spit(file, data);
  EXPECT_EQ(child_status([&] {
              BufferStore store(options_for(tmp.path("buf")));
              store.stats();
              auto& report = store.open_report();
              if (!report.set_aside_to || report.salvaged != 2 || report.lost != 1) _exit(10);
              if (store.verify().corrupt != 0) _exit(11);
              auto r = store.read(Lane::EVENTS, 0, 10, 1 << 20);
              if (r.records.size() != 2 || r.quarantined != 0) _exit(12);
              if (store.stats().damage.lost != 1) _exit(13);
              store.purge(1);
            }),
            "exit 0");
}

TEST(StoreFaults, DamagedMetaOnADrainedStoreDoesNotRestartSeqs) {
  TempDir tmp;
  uint64_t last;
  {
    BufferStore store(options_for(tmp.path("buf")));
    Batch b(5, 50, 1);
    last = store.append(Lane::EVENTS, b.ptr()).last_seq;
    store.ack(Lane::EVENTS, last);
  }
  fs::remove(tmp.path("buf") / "SEQ_FLOOR");
  auto file = tmp.path("buf") / "data.mdb";
  std::string data = slurp(file);
  for (size_t p = data.find("1TSOPTUO"); p != std::string::npos; p = data.find("1TSOPTUO", p + 1))
    data[p] = '2';  // the meta record's magic
  spit(file, data);
  BufferStore store(options_for(tmp.path("buf")));
  Batch b(1, 50, 1);
  EXPECT_GT(store.append(Lane::EVENTS, b.ptr()).first_seq, last);
}

TEST(StoreFaults, SyncNoneRollbackDoesNotReuseSeqs) {
  TempDir tmp;
  auto o = options_for(tmp.path("buf"));
  o.sync = SyncPolicy::none;
  {
    BufferStore store(o);
    Batch b(1, 50, 1);
    store.append(Lane::EVENTS, b.ptr());
  }
  std::string before_last_commit = slurp(tmp.path("buf") / "data.mdb");
  uint64_t shipped;
  {
    BufferStore store(o);
    Batch b(1, 50, 1);
    shipped = store.append(Lane::EVENTS, b.ptr()).first_seq;
  }
  spit(tmp.path("buf") / "data.mdb", before_last_commit);  // a power loss ate that commit
  BufferStore store(o);
  Batch b(1, 50, 2);
  EXPECT_GT(store.append(Lane::EVENTS, b.ptr()).first_seq, shipped);
}

TEST(StoreFaults, LargeAckAndPurgeSucceedAtAFullMap) {
  TempDir tmp;
  auto o = options_for(tmp.path("buf"));
  o.map_size_bytes = 2 << 20;
  BufferStore store(o);
  Batch b(200, 20, 1);
  AppendResult r;
  uint64_t last = 0;
  while ((r = store.append(Lane::RESULTS, b.ptr())).ok()) last = r.last_seq;
  ASSERT_EQ(r.outcome, AppendOutcome::full);
  Batch other(100, 20, 2);
  store.ack(Lane::RESULTS, last - 4000);  // room for one more small batch
  ASSERT_TRUE(store.append(Lane::CONTROL, other.ptr()).ok());
  EXPECT_GT(store.purge(2), 0u);
  EXPECT_GT(store.ack(Lane::RESULTS, last), 0u);
  EXPECT_EQ(store.stats().records, 0u);
  EXPECT_TRUE(store.verify().meta_matches);
}

TEST(StoreFaults, PurgeOfInterleavedQueries) {
  TempDir tmp;
  BufferStore store(options_for(tmp.path("buf")));
  for (int k = 0; k < 20; ++k) {
    Batch b(500, 30, 1 + (k % 2));
    store.append(Lane::EVENTS, b.ptr());
  }
  std::vector<RecordIn> mixed;
  Batch x(4000, 30, 1), y(4000, 30, 2);
  for (int i = 0; i < 4000; ++i) mixed.push_back(x.records[i]), mixed.push_back(y.records[i]);
  store.append(Lane::EVENTS, {mixed.data(), mixed.size()});
  EXPECT_EQ(store.purge(1), 5000u + 4000u);
  EXPECT_EQ(store.stats().records, 9000u);
  EXPECT_TRUE(store.verify().meta_matches);
  EXPECT_EQ(store.purge(2), 9000u);
  EXPECT_EQ(store.stats().records, 0u);
}

// A full disk is reported the same way every time, whether the kernel said
// EFBIG (or ENOSPC) or LMDB turned a short write into EIO. RLIMIT_FSIZE in a
// child makes both happen: appends of different sizes cross the limit
// part-way (a short write) or start beyond it.
TEST(StoreFaults, DiskFullReadsTheSameEveryTime) {
  TempDir tmp;
  auto o = options_for(tmp.path("buf"));
  auto reasons_file = tmp.path("reasons");
  EXPECT_EQ(child_status([&] {
              BufferStore store(o);
              signal(SIGXFSZ, SIG_IGN);
              rlimit limit{fs::file_size(store.data_file()) + (1 << 20), RLIM_INFINITY};
              setrlimit(RLIMIT_FSIZE, &limit);
              std::set<std::string> reasons;
              int refused = 0;
              for (int i = 0; refused < 40 && i < 10000; ++i) {
                Batch b(1 + i % 7 * 10, 1 + (i * 7919) % 9000, 1);
                auto r = store.append(Lane::EVENTS, b.ptr());
                if (r.ok()) continue;
                if (r.outcome != AppendOutcome::disk_full) _exit(10);
                reasons.insert(r.reason);
                ++refused;
              }
              std::ofstream out(reasons_file);
              for (auto& r : reasons) out << r << "\n";
            }),
            "exit 0");
  std::vector<std::string> reasons;
  std::ifstream in(reasons_file);
  for (std::string line; std::getline(in, line);) reasons.push_back(line);
  ASSERT_FALSE(reasons.empty());
  EXPECT_EQ(reasons.size(), 1u) << reasons[0] << " / " << reasons.back();
  EXPECT_NE(reasons[0].find("disk full"), std::string::npos) << reasons[0];
}

}  // namespace
}  // namespace outpost::persistence
