#include <gtest/gtest.h>
#include <signal.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <thread>
#include <atomic>
#include <iterator>
#include <map>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "persistence/buffer_store.hpp"
#include "persistence/record_format.hpp"
#include "tests/store_test_util.hpp"
#include "tests/temp_dir.hpp"

namespace outpost::persistence {
namespace {
namespace fs = std::filesystem;
using outpost::testing::TempDir;
using record_format::accounted_bytes;
using namespace outpost::persistence::testing;

std::string text(const BufferedRecord& r) {
  return {reinterpret_cast<const char*>(r.payload().begin()), r.size};
}

// Fills a new store's events lane and closes it; returns the last seq.
uint64_t append_and_close(const fs::path& dir, size_t n, size_t size) {
  BufferStore store(options_for(dir));
  Batch b(n, size, 1);
  return store.append(Lane::EVENTS, b.ptr()).last_seq;
}

// Overwrites every occurrence of `needle` in `file` with `replacement` bytes at `at`.
int patch_file(const fs::path& file, const std::string& needle, size_t at, char replacement) {
  std::string data = slurp(file);
  int hits = 0;
  for (size_t pos = data.find(needle); pos != std::string::npos; pos = data.find(needle, pos + 1)) {
    data[pos + at] = replacement;
    ++hits;
  }
  spit(file, data);
  return hits;
}

// Runs `body` in a forked child (a real second process) and returns what it said.
std::string in_child_process(const std::function<std::string()>& body) {
  int fds[2];
  if (pipe(fds) != 0) return "pipe failed";
  pid_t child = fork();
  if (child == 0) {
    close(fds[0]);
    std::string out;
    try {
      out = body();
    } catch (const std::exception& e) {
      out = std::string("exception ") + e.what();
    }
    (void)!write(fds[1], out.data(), out.size());
    _exit(0);
  }
  close(fds[1]);
  std::string out;
  char buf[512];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, n);
  close(fds[0]);
  waitpid(child, nullptr, 0);
  return out;
}

TEST(BufferStore, SeqsAreMonotonicAcrossLanesAndBatchesCommitOnce) {
  TempDir tmp;
  BufferStore store(options_for(tmp.path("buf")));
  uint64_t commits = store.stats().commits;
  Batch a(1000, 100, 1), b(3, 10, 2);
  auto ra = store.append(Lane::EVENTS, a.ptr());
  ASSERT_TRUE(ra.ok()) << ra.reason;
  EXPECT_EQ(store.stats().commits, commits + 1);  // 1000 records, one transaction
  auto rb = store.append(Lane::CONTROL, b.ptr());
  ASSERT_TRUE(rb.ok());
  EXPECT_EQ(ra.last_seq - ra.first_seq + 1, 1000u);
  EXPECT_EQ(rb.first_seq, ra.last_seq + 1);
  EXPECT_EQ(read_all(store, Lane::EVENTS).size(), 1000u);
  auto control = read_all(store, Lane::CONTROL);
  ASSERT_EQ(control.size(), 3u);
  EXPECT_EQ(control[0].seq, rb.first_seq);
  EXPECT_EQ(control[2].query_id, 2u);
  EXPECT_TRUE(read_all(store, Lane::UPLOADS).empty());
}

TEST(BufferStore, BatchesOfSeveralLanesCommitTogether) {
  TempDir tmp;
  auto o = options_for(tmp.path("buf"));
  o.limit_bytes = 10000;
  BufferStore store(o);
  Batch e(3, 100, 1), c(2, 50, 2);
  LaneBatch both[] = {{Lane::EVENTS, e.ptr()}, {Lane::CONTROL, c.ptr()}};
  uint64_t commits = store.stats().commits;
  auto r = store.append(kj::arrayPtr(both, 2));
  ASSERT_TRUE(r.ok()) << r.reason;
  EXPECT_EQ(store.stats().commits, commits + 1);
  EXPECT_EQ(r.last_seq - r.first_seq + 1, 5u);
  auto control = read_all(store, Lane::CONTROL);
  ASSERT_EQ(control.size(), 2u);
  EXPECT_EQ(control[0].seq, r.first_seq + 3);  // after the events batch
  EXPECT_EQ(read_all(store, Lane::EVENTS).back().seq, r.first_seq + 2);
  EXPECT_EQ(store.free_bytes(), 10000 - e.bytes() - c.bytes());

  Batch big(56, 100, 3);  // fits alone, not with what is there: none of it is written
  LaneBatch over[] = {{Lane::RESULTS, c.ptr()}, {Lane::RESULTS, big.ptr()}};
  EXPECT_EQ(store.append(kj::arrayPtr(over, 2)).outcome, AppendOutcome::full);
  EXPECT_TRUE(read_all(store, Lane::RESULTS).empty());
}

TEST(BufferStore, AccountingIsExactPerLaneAndOldestTimeIsTracked) {
  TempDir tmp;
  BufferStore store(options_for(tmp.path("buf")));
  Batch events(10, 300, 1, "e", 500), results(4, 2000, 2, "r", 900);
  ASSERT_TRUE(store.append(Lane::EVENTS, events.ptr()).ok());
  ASSERT_TRUE(store.append(Lane::RESULTS, results.ptr()).ok());
  auto s = store.stats();
  EXPECT_EQ(s.lanes[size_t(Lane::EVENTS)].live.bytes, 10 * (300 + record_format::kRecordOverhead));
  EXPECT_EQ(s.lanes[size_t(Lane::EVENTS)].live.records, 10u);
  EXPECT_EQ(s.lanes[size_t(Lane::RESULTS)].live.bytes, results.bytes());
  EXPECT_EQ(s.live_bytes, events.bytes() + results.bytes());
  EXPECT_EQ(s.records, 14u);
  EXPECT_EQ(s.limit_bytes, 1ull << 30);
  EXPECT_EQ(s.lanes[size_t(Lane::EVENTS)].oldest_created_ns, 500);
  EXPECT_EQ(s.lanes[size_t(Lane::RESULTS)].oldest_created_ns, 900);
  EXPECT_FALSE(s.lanes[size_t(Lane::UPLOADS)].oldest_created_ns.has_value());
  auto v = store.verify();
  EXPECT_TRUE(v.meta_matches);
  EXPECT_EQ(v.corrupt, 0u);
}

TEST(BufferStore, ReopenKeepsRecordsSeqsAndAccounting) {
  TempDir tmp;
  StoreStats before;
  AppendResult last;
  {
    BufferStore store(options_for(tmp.path("buf")));
    for (Lane lane : {Lane::CONTROL, Lane::EVENTS, Lane::RESULTS, Lane::UPLOADS}) {
      Batch b(50, 123, uint64_t(lane) + 1, schemas::lane_name(lane));
      last = store.append(lane, b.ptr());
      ASSERT_TRUE(last.ok());
    }
    store.ack(Lane::EVENTS, last.first_seq - 160);  // part of the events lane
    before = store.stats();
  }
  BufferStore store(options_for(tmp.path("buf")));
  auto after = store.stats();
  EXPECT_EQ(after.next_seq, before.next_seq);
  EXPECT_EQ(after.live_bytes, before.live_bytes);
  for (size_t i = 0; i < kLaneCount; ++i) EXPECT_EQ(after.lanes[i].live, before.lanes[i].live);
  auto uploads = read_all(store, Lane::UPLOADS);
  ASSERT_EQ(uploads.size(), 50u);
  EXPECT_EQ(uploads.back().seq, last.last_seq);
  EXPECT_EQ(text(uploads[0]).substr(0, 8), "uploads0");
  EXPECT_FALSE(store.open_report().set_aside_to);
  EXPECT_FALSE(store.open_report().meta_rebuilt);
  Batch more(1, 10, 9);
  EXPECT_EQ(store.append(Lane::EVENTS, more.ptr()).first_seq, last.last_seq + 1);
}

TEST(BufferStore, ReadIsAlignedOrderedAndBounded) {
  TempDir tmp;
  BufferStore store(options_for(tmp.path("buf")));
  Batch b(20, 1001, 3);  // odd sizes: LMDB hands out unaligned values
  auto r = store.append(Lane::RESULTS, b.ptr());
  auto got = store.read(Lane::RESULTS, r.first_seq + 4, 5, 1 << 20);
  ASSERT_EQ(got.records.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(got.records[i].seq, r.first_seq + 5 + i);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(got.records[i].words.begin()) % 8, 0u);
    EXPECT_EQ(text(got.records[i]), b.payloads[5 + i]);
  }
  EXPECT_EQ(store.read(Lane::RESULTS, 0, 100, 2500).records.size(), 2u);  // byte bound
  EXPECT_EQ(store.read(Lane::RESULTS, 0, 100, 1).records.size(), 1u);     // at least one
  EXPECT_TRUE(store.read(Lane::RESULTS, r.last_seq, 100, 1 << 20).records.empty());
}

TEST(BufferStore, EncodedRecordsTravelUnchanged) {
  TempDir tmp;
  BufferStore store(options_for(tmp.path("buf")));
  schemas::RowBatchWriter writer(77, "Generic.Client.Info", "", Lane::EVENTS, {"Hostname"});
  writer.add_row()[0].setText("endpoint-1");
  auto encoded = writer.finish();
  RecordIn in{77, 5, encoded.bytes()};
  ASSERT_TRUE(store.append(Lane::EVENTS, kj::arrayPtr(&in, 1)).ok());
  auto got = read_all(store, Lane::EVENTS);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_EQ(got[0].size, encoded.size());
  EXPECT_EQ(memcmp(got[0].payload().begin(), encoded.bytes().begin(), encoded.size()), 0);
  schemas::RecordView view(got[0].words);
  EXPECT_EQ(view.record().getRowBatch().getRows()[0][0].getText(), "endpoint-1");
}

TEST(BufferStore, AppendOverTheLimitIsRefusedWhole) {
  TempDir tmp;
  auto o = options_for(tmp.path("buf"));
  o.limit_bytes = 100 * 1024;
  BufferStore store(o);
  Batch fill(90, 1000, 1);
  ASSERT_TRUE(store.append(Lane::EVENTS, fill.ptr()).ok());
  auto before = store.stats();
  Batch ten(10, 1000, 2);
  auto refused = store.append(Lane::EVENTS, ten.ptr());
  EXPECT_EQ(refused.outcome, AppendOutcome::full);
  EXPECT_NE(refused.reason.find("102400"), std::string::npos) << refused.reason;
  auto after = store.stats();
  EXPECT_EQ(after.next_seq, before.next_seq);
  EXPECT_EQ(after.live_bytes, before.live_bytes);
  EXPECT_EQ(after.commits, before.commits);
  EXPECT_EQ(read_all(store, Lane::EVENTS).size(), 90u);

  Batch six(6, 1000, 3);
  EXPECT_TRUE(store.append(Lane::EVENTS, six.ptr()).ok());  // 96 * 1064 <= 102400
  Batch huge(200, 1000, 4);
  EXPECT_EQ(store.append(Lane::CONTROL, huge.ptr()).outcome, AppendOutcome::too_large);
}

TEST(BufferStore, AckFreesExactlyTheAckedBytes) {
  TempDir tmp;
  BufferStore store(options_for(tmp.path("buf")));
  Batch small(5, 100, 1), big(5, 5000, 1);
  auto r1 = store.append(Lane::EVENTS, small.ptr());
  store.append(Lane::EVENTS, big.ptr());
  uint64_t total = store.stats().live_bytes;
  EXPECT_EQ(store.ack(Lane::EVENTS, r1.first_seq + 2), 3 * accounted_bytes(100));
  EXPECT_EQ(store.stats().live_bytes, total - 3 * accounted_bytes(100));
  EXPECT_EQ(store.ack(Lane::EVENTS, r1.first_seq + 2), 0u);  // already gone
  EXPECT_EQ(store.ack(Lane::RESULTS, UINT64_MAX), 0u);       // other lanes untouched
  EXPECT_EQ(store.ack(Lane::EVENTS, UINT64_MAX), 2 * accounted_bytes(100) + big.bytes());
  EXPECT_EQ(store.stats().live_bytes, 0u);
  EXPECT_TRUE(store.verify().meta_matches);
}

TEST(BufferStore, PurgeRemovesOneQueryFromEveryLane) {
  TempDir tmp;
  BufferStore store(options_for(tmp.path("buf")));
  Batch q1e(7, 200, 1), q2e(3, 200, 2), q1u(2, 70000, 1), q2c(4, 10, 2);
  store.append(Lane::EVENTS, q1e.ptr());
  store.append(Lane::EVENTS, q2e.ptr());
  store.append(Lane::UPLOADS, q1u.ptr());
  store.append(Lane::CONTROL, q2c.ptr());
  EXPECT_EQ(store.purge(1), 9u);
  EXPECT_EQ(store.stats().live_bytes, q2e.bytes() + q2c.bytes());
  for (Lane lane : {Lane::EVENTS, Lane::UPLOADS, Lane::CONTROL})
    for (auto& r : read_all(store, lane)) EXPECT_EQ(r.query_id, 2u);
  EXPECT_EQ(read_all(store, Lane::EVENTS).size(), 3u);
  EXPECT_EQ(store.purge(1), 0u);
  EXPECT_TRUE(store.verify().meta_matches);
}

TEST(BufferStore, CorruptRecordIsQuarantinedNotReturned) {
  TempDir tmp;
  const std::string marker = "THIS-RECORD-WILL-BE-DAMAGED";
  {
    BufferStore store(options_for(tmp.path("buf")));
    Batch before(3, 40, 1, "good"), victim(1, 500, 2, marker), after(3, 40, 3, "fine");
    store.append(Lane::EVENTS, before.ptr());
    store.append(Lane::EVENTS, victim.ptr());
    store.append(Lane::EVENTS, after.ptr());
  }
  ASSERT_GE(patch_file(tmp.path("buf") / "data.mdb", marker, 3, 'X'), 1);

  BufferStore store(options_for(tmp.path("buf")));
  EXPECT_EQ(store.verify().corrupt, 1u);
  uint64_t quarantined = 0;
  auto all = read_all(store, Lane::EVENTS, &quarantined);
  EXPECT_EQ(quarantined, 1u);
  ASSERT_EQ(all.size(), 6u);
  for (auto& r : all) EXPECT_EQ(text(r).find("THIS-REC"), std::string::npos);
  auto s = store.stats();
  EXPECT_EQ(s.quarantined.records, 1u);
  EXPECT_EQ(s.quarantined.bytes, accounted_bytes(500));
  EXPECT_EQ(s.lanes[size_t(Lane::EVENTS)].live.bytes, 6 * accounted_bytes(40));
  auto v = store.verify();
  EXPECT_EQ(v.corrupt, 0u);
  EXPECT_TRUE(v.meta_matches);
}

TEST(BufferStore, DamagedMetaRecordIsRebuiltFromTheRecords) {
  TempDir tmp;
  StoreStats before;
  {
    BufferStore store(options_for(tmp.path("buf")));
    Batch b(30, 333, 1);
    store.append(Lane::RESULTS, b.ptr());
    before = store.stats();
  }
  // The meta record starts with the magic "OUTPOST1" stored little-endian.
  ASSERT_GE(patch_file(tmp.path("buf") / "data.mdb", "1TSOPTUO", 0, '2'), 1);
  BufferStore store(options_for(tmp.path("buf")));
  EXPECT_TRUE(store.open_report().meta_rebuilt);
  EXPECT_EQ(store.stats().live_bytes, before.live_bytes);
  EXPECT_GE(store.stats().next_seq, before.next_seq);
  EXPECT_EQ(read_all(store, Lane::RESULTS).size(), 30u);
}

TEST(BufferStore, GarbageEnvironmentIsSetAsideAndSeqsAreNotReused) {
  TempDir tmp;
  uint64_t last_seq = append_and_close(tmp.path("buf"), 10, 50);
  {
    std::ofstream garbage(tmp.path("buf") / "data.mdb", std::ios::binary | std::ios::trunc);
    for (int i = 0; i < 65536; ++i) garbage.put(char(i * 7919 % 251));
  }
  BufferStore store(options_for(tmp.path("buf")));
  auto& report = store.open_report();
  ASSERT_TRUE(report.set_aside_to);
  EXPECT_NE(report.set_aside_to->filename().string().find("buf.corrupt-"), std::string::npos);
  EXPECT_EQ(fs::file_size(*report.set_aside_to / "data.mdb"), 65536u);  // kept for inspection
  EXPECT_FALSE(report.reason.empty());
  EXPECT_EQ(store.stats().records, 0u);
  Batch b(1, 50, 1);
  auto r = store.append(Lane::EVENTS, b.ptr());
  ASSERT_TRUE(r.ok());
  EXPECT_GT(r.first_seq, last_seq);
}

TEST(BufferStore, TruncatedEnvironmentIsSetAside) {
  TempDir tmp;
  append_and_close(tmp.path("buf"), 2000, 1000);
  auto file = tmp.path("buf") / "data.mdb";
  fs::resize_file(file, fs::file_size(file) / 2);
  BufferStore store(options_for(tmp.path("buf")));
  ASSERT_TRUE(store.open_report().set_aside_to);
  EXPECT_NE(store.open_report().reason.find("truncated"), std::string::npos);
  Batch b(1, 10, 1);
  EXPECT_TRUE(store.append(Lane::EVENTS, b.ptr()).ok());
}

TEST(BufferStore, RecreatedStoreDoesNotReuseSeqs) {
  TempDir tmp;
  uint64_t last_seq = append_and_close(tmp.path("buf"), 10, 50);
  fs::remove(tmp.path("buf") / "data.mdb");
  BufferStore store(options_for(tmp.path("buf")));
  Batch b(1, 50, 1);
  EXPECT_GT(store.append(Lane::EVENTS, b.ptr()).first_seq, last_seq);
}

TEST(BufferStore, SecondOwnerIsRefusedInProcessAndFromAnotherProcess) {
  TempDir tmp;
  BufferStore store(options_for(tmp.path("buf")));
  EXPECT_THROW(BufferStore again(options_for(tmp.path("buf"))), StoreLocked);

  std::string msg = in_child_process([&] {
    try {
      BufferStore other(options_for(tmp.path("buf")));
    } catch (const StoreLocked& e) {
      return std::string(e.what());
    }
    return std::string("opened");
  });
  EXPECT_NE(msg.find(tmp.path("buf").string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("in use by process " + std::to_string(getpid())), std::string::npos) << msg;
}

// An owner killed with kill -9 may leave a process it forked holding the
// lock for a moment (as the buffer check's child did until its parent-death
// signal came): the next opener waits for it instead of refusing.
TEST(BufferStore, AnOwnerKilledWhileAProcessItForkedHeldTheLockIsFollowedOnceThatLetsGo) {
  TempDir tmp;
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  pid_t owner = fork();
  ASSERT_GE(owner, 0);
  if (owner == 0) {
    BufferStore store(options_for(tmp.path("buf")));  // writes its pid, holds the flock
    pid_t child = fork();                             // inherits the lock's descriptor
    if (child == 0) {
      for (;;) pause();
    }
    (void)!write(ready[1], &child, sizeof child);
    for (;;) pause();
  }
  pid_t child = 0;
  ASSERT_EQ(read(ready[0], &child, sizeof child), static_cast<ssize_t>(sizeof child));
  close(ready[0]);
  close(ready[1]);
  kill(owner, SIGKILL);
  int status = 0;
  ASSERT_EQ(waitpid(owner, &status, 0), owner);
  // The owner is gone; its child holds the lock until this thread ends it.
  std::thread ender([child] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    kill(child, SIGKILL);
  });
  std::string error;
  try {
    BufferStore store(options_for(tmp.path("buf")));
  } catch (const std::exception& e) {
    error = e.what();
  }
  ender.join();
  EXPECT_EQ(error, "");
}

TEST(BufferStore, CompactionAfterDrainShrinksTheFileAndKeepsTheSeqCounter) {
  TempDir tmp;
  auto o = options_for(tmp.path("buf"));
  o.compact_threshold_bytes = 1 << 20;
  uint64_t last_seq;
  {
    BufferStore store(o);
    Batch b(2000, 4000, 1);
    last_seq = store.append(Lane::UPLOADS, b.ptr()).last_seq;
    EXPECT_GT(store.stats().file_bytes, 4u << 20);
    store.ack(Lane::UPLOADS, last_seq - 1);
    EXPECT_EQ(store.stats().compactions, 0u);  // one record left: not drained
    store.ack(Lane::UPLOADS, last_seq);
    auto s = store.stats();
    EXPECT_EQ(s.compactions, 1u);
    EXPECT_LT(s.file_bytes, 1u << 20);
    Batch one(1, 10, 1);
    EXPECT_EQ(store.append(Lane::EVENTS, one.ptr()).first_seq, last_seq + 1);
    ++last_seq;
  }
  BufferStore store(o);
  Batch one(1, 10, 1);
  EXPECT_EQ(store.append(Lane::EVENTS, one.ptr()).first_seq, last_seq + 1);
  EXPECT_EQ(read_all(store, Lane::EVENTS).size(), 2u);
}

// The operator's compaction, with records still in the store: they all stay,
// with their seqs, and the file loses its free pages.
TEST(BufferStore, CompactOnRequestKeepsEveryRecordAndShrinksTheFile) {
  TempDir tmp;
  auto o = options_for(tmp.path("buf"));
  BufferStore store(o);
  Batch b(2000, 4000, 1);
  uint64_t last_seq = store.append(Lane::UPLOADS, b.ptr()).last_seq;
  store.ack(Lane::UPLOADS, last_seq - 100);
  auto kept = read_all(store, Lane::UPLOADS);
  ASSERT_EQ(kept.size(), 100u);
  EXPECT_EQ(store.stats().compactions, 0u);  // not drained: only asking compacts it

  auto c = store.compact();
  EXPECT_EQ(c.error, "");
  EXPECT_GT(c.before, 4u << 20);
  EXPECT_LT(c.after, c.before / 4);
  EXPECT_EQ(store.stats().file_bytes, c.after);
  EXPECT_EQ(store.stats().compactions, 1u);
  auto after = read_all(store, Lane::UPLOADS);
  ASSERT_EQ(after.size(), kept.size());
  for (size_t i = 0; i < kept.size(); ++i) {
    EXPECT_EQ(after[i].seq, kept[i].seq);
    EXPECT_EQ(text(after[i]), text(kept[i]));
  }
  Batch one(1, 10, 1);
  EXPECT_EQ(store.append(Lane::EVENTS, one.ptr()).first_seq, last_seq + 1);
  EXPECT_TRUE(store.verify().meta_matches);
}

// Another thread reads while the owner appends, acks and compacts: every
// read sees whole records in ascending order, none it could not have, and
// compaction (which replaces the environment) never pulls it out from under it.
TEST(BufferStore, ConcurrentReadsDuringWritesAndCompaction) {
  TempDir tmp;
  auto o = options_for(tmp.path("buf"));
  o.compact_threshold_bytes = 256 << 10;
  BufferStore store(o);
  std::atomic<bool> done{false};
  std::atomic<uint64_t> reads{0}, records_seen{0}, reopening{0};
  std::string failure;
  std::thread reader([&] {
    while (!done) {
      try {
        auto got = store.read_concurrently(Lane::EVENTS, 0, 1000, 1 << 20);
        uint64_t last = 0;
        for (auto& r : got.records) {
          std::string text(reinterpret_cast<const char*>(r.payload().begin()), r.payload().size());
          if (r.seq <= last || text.rfind("row", 0) != 0 || text.size() != 500) {
            failure = "bad record " + std::to_string(r.seq);
            return;
          }
          last = r.seq;
        }
        if (!got.corrupt.empty()) failure = "a healthy record reported corrupt";
        records_seen += got.records.size();
        ++reads;
      } catch (const StoreError& e) {
        ++reopening;  // compaction replacing the environment
        if (std::string(e.what()).find("being reopened") == std::string::npos) failure = e.what();
      }
    }
  });
  for (int round = 0; round < 30; ++round) {
    Batch b(200, 500, 1);
    auto r = store.append(Lane::EVENTS, b.ptr());
    ASSERT_TRUE(r.ok());
    store.ack(Lane::EVENTS, r.last_seq);  // drained: compaction may run
  }
  done = true;
  reader.join();
  EXPECT_EQ(failure, "");
  EXPECT_GT(reads, 0u);
  EXPECT_GT(store.stats().compactions, 0u) << "the test did not exercise compaction";
}

TEST(BufferStore, MapFullIsReportedAsFullAndTheStoreStaysUsable) {
  TempDir tmp;
  auto o = options_for(tmp.path("buf"));
  o.map_size_bytes = 2 << 20;  // LMDB's map, far below the 1 GiB limit
  BufferStore store(o);
  Batch b(16, 4000, 1);
  AppendResult r;
  int ok = 0;
  while ((r = store.append(Lane::RESULTS, b.ptr())).ok()) ++ok;
  ASSERT_GT(ok, 0);
  EXPECT_EQ(r.outcome, AppendOutcome::full);
  EXPECT_NE(r.reason.find("MDB_MAP_FULL"), std::string::npos) << r.reason;
  EXPECT_EQ(store.stats().records, uint64_t(ok) * 16);
  EXPECT_TRUE(store.verify().meta_matches);
  auto first = store.read(Lane::RESULTS, 0, 1, 1 << 20).records.at(0).seq;
  EXPECT_GT(store.ack(Lane::RESULTS, first + 16 * ok / 2), 0u);
  EXPECT_TRUE(store.append(Lane::RESULTS, b.ptr()).ok());
  EXPECT_TRUE(store.verify().meta_matches);
}

// Appends until the file system refuses; says "<outcome> <records appended>
// <records counted> <meta matches> <reason>".
std::string fill_until_refused(BufferStore& store) {
  Batch b(50, 1000, 1);
  uint64_t ok = 0;
  AppendResult r;
  while ((r = store.append(Lane::EVENTS, b.ptr())).ok()) ok += 50;
  return std::string(to_string(r.outcome)) + " " + std::to_string(ok) + " " +
         std::to_string(store.stats().records) + " " +
         std::to_string(store.verify().meta_matches) + " " + r.reason;
}

void expect_refused_cleanly(const std::string& summary, uint64_t* appended) {
  std::istringstream in(summary);
  std::string outcome;
  uint64_t counted = 0;
  int matches = 0;
  in >> outcome >> *appended >> counted >> matches;
  EXPECT_EQ(outcome, "disk_full") << summary;
  EXPECT_GT(*appended, 0u) << summary;
  EXPECT_EQ(counted, *appended);
  EXPECT_EQ(matches, 1);
}

// RLIMIT_FSIZE makes the kernel refuse writes past a size (EFBIG or a short
// write): the append reports disk_full, nothing half-written stays, and the
// store keeps working. In a child, so the limit does not leak.
TEST(BufferStore, FileSizeLimitIsDiskFullAndTheStoreStaysConsistent) {
  TempDir tmp;
  auto o = options_for(tmp.path("buf"));
  std::string out = in_child_process([&] {
    BufferStore store(o);
    signal(SIGXFSZ, SIG_IGN);
    rlimit limit{fs::file_size(store.data_file()) + (2 << 20), RLIM_INFINITY};
    setrlimit(RLIMIT_FSIZE, &limit);
    return fill_until_refused(store);
  });
  uint64_t appended = 0;
  expect_refused_cleanly(out, &appended);

  BufferStore store(o);  // no limit now: everything acknowledged is there
  EXPECT_EQ(read_all(store, Lane::EVENTS).size(), appended);
  EXPECT_TRUE(store.verify().meta_matches);
  Batch b(50, 1000, 1);
  EXPECT_TRUE(store.append(Lane::EVENTS, b.ptr()).ok());
}

// Runs `body` in a child process with a 4 MiB tmpfs mounted at `mnt` (in a
// mount namespace of its own); "skip ..." when it cannot be mounted (not root).
std::string on_a_small_tmpfs(const fs::path& mnt, const std::function<std::string()>& body) {
  return in_child_process([&]() -> std::string {
    if (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) ||
        mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=4m") != 0)
      return std::string("skip cannot mount a tmpfs: ") + strerror(errno);
    return body();
  });
}

// A real ENOSPC: a 4 MiB tmpfs mounted in a private mount namespace of a
// child process. Needs root (CI and the README's commands run as root).
TEST(BufferStore, FullFileSystemIsDiskFullAndAcksMakeRoomAgain) {
  TempDir tmp;
  fs::create_directories(tmp.path("mnt"));
  std::string out = on_a_small_tmpfs(tmp.path("mnt"), [&]() -> std::string {
    auto o = options_for(tmp.path("mnt") / "buf");
    std::string summary;
    uint64_t seq_after_ack = 0;
    {
      BufferStore store(o);
      summary = fill_until_refused(store);
      auto first = store.read(Lane::EVENTS, 0, 1, 1 << 20).records.at(0).seq;
      store.ack(Lane::EVENTS, first + 99);  // frees pages inside the file
      Batch b(50, 1000, 1);
      auto r = store.append(Lane::EVENTS, b.ptr());
      seq_after_ack = r.ok() ? r.last_seq : 0;
    }
    BufferStore store(o);
    return summary.substr(0, summary.find(' ', summary.find(' ') + 1)) + " " +
           std::to_string(store.stats().records) + " " +
           std::to_string(store.verify().meta_matches) + " " + std::to_string(seq_after_ack);
  });
  if (out.rfind("skip", 0) == 0) GTEST_SKIP() << out;
  std::istringstream in(out);
  std::string outcome;
  uint64_t appended = 0, after_reopen = 0, seq_after_ack = 0;
  int matches = 0;
  in >> outcome >> appended >> after_reopen >> matches >> seq_after_ack;
  EXPECT_EQ(outcome, "disk_full") << out;
  EXPECT_GT(appended, 0u) << out;
  EXPECT_GT(seq_after_ack, 0u) << "no append succeeded after acks freed space: " << out;
  EXPECT_EQ(after_reopen, appended - 100 + 50) << out;
  EXPECT_EQ(matches, 1) << out;
}

// No room for the copy: compaction says why, and the store is as it was.
TEST(BufferStore, CompactOnAFullFileSystemFailsCleanlyAndChangesNothing) {
  TempDir tmp;
  fs::create_directories(tmp.path("mnt"));
  std::string out = on_a_small_tmpfs(tmp.path("mnt"), [&]() -> std::string {
    BufferStore store(options_for(tmp.path("mnt") / "buf"));
    fill_until_refused(store);
    uint64_t records = store.stats().records;
    auto c = store.compact();
    std::ostringstream said;
    said << (records == store.stats().records) << " " << store.verify().meta_matches << " "
         << fs::exists(tmp.path("mnt") / "buf" / "compact.tmp") << " " << (c.before == c.after) << " " << c.error;
    return said.str();
  });
  if (out.rfind("skip", 0) == 0) GTEST_SKIP() << out;
  EXPECT_EQ(out.rfind("1 1 0 1 compaction failed: ", 0), 0u) << out;
  EXPECT_NE(out.find("No space left on device"), std::string::npos) << out;
}

TEST(BufferStore, SyncNoneStillKeepsRecordsAcrossReopen) {
  TempDir tmp;
  auto o = options_for(tmp.path("buf"));
  o.sync = SyncPolicy::none;
  {
    BufferStore store(o);
    Batch b(100, 64, 1);
    ASSERT_TRUE(store.append(Lane::CONTROL, b.ptr()).ok());
  }
  BufferStore store(o);
  EXPECT_EQ(read_all(store, Lane::CONTROL).size(), 100u);
}

TEST(BufferStore, UnusableDirectoryIsAClearError) {
  TempDir tmp;
  std::ofstream(tmp.path("file")) << "x";
  try {
    BufferStore store(options_for(tmp.path("file") / "buf"));
    FAIL() << "opened a buffer below a regular file";
  } catch (const StoreError& e) {
    EXPECT_NE(std::string(e.what()).find("file/buf"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace outpost::persistence
