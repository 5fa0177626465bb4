// The collector's journal: row files are synced only at checkpoints, so what
// a crash takes from them must come back from the journal, once; a torn or
// damaged journal costs only what lies past the damage.

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <fstream>

#include "net/collector/collector_store.hpp"
#include "net/collector/group_journal.hpp"
#include "tests/collector_rows.hpp"
#include "tests/temp_dir.hpp"

namespace outpost::net {
namespace {
using testing::TempDir;
namespace fs = std::filesystem;

// No checkpoint unless asked for.
CollectorStoreOptions journal_only() {
  CollectorStoreOptions options;
  options.checkpoint_bytes = 1ull << 40;
  options.checkpoint_interval = std::chrono::hours(24);
  return options;
}

std::vector<fs::path> row_files(const fs::path& data) {
  std::vector<fs::path> files;
  for (auto& e : fs::recursive_directory_iterator(data / "a1"))
    if (e.is_regular_file() && e.path().extension() == ".jsonl") files.push_back(e.path());
  return files;
}

// A crash of the machine keeps what was synced and may lose the rest: a row
// file written since the checkpoint may come back as it was at the checkpoint.
TEST(CollectorJournal, RowsARowFileLostInACrashAreWrittenAgainOnceFromTheJournal) {
  TempDir tmp;
  fs::path data = tmp.path("data");
  uint64_t synced = 0;
  {
    CollectorStore store(data, journal_only());
    EXPECT_EQ(marks_of(store.store({make_batch(1, 4).upload})), std::vector<uint64_t>{4});
    store.checkpoint();
    EXPECT_EQ(store.journal_bytes(), 0u);
    synced = fs::file_size(row_files(data).at(0));
    EXPECT_EQ(marks_of(store.store({make_batch(5, 9).upload})), std::vector<uint64_t>{9});
    EXPECT_EQ(marks_of(store.store({make_batch(10, 12).upload})), std::vector<uint64_t>{12});
    EXPECT_GT(store.journal_bytes(), 0u);
  }  // no checkpoint: as if the process died here
  auto files = row_files(data);
  ASSERT_EQ(files.size(), 1u);
  ASSERT_GT(fs::file_size(files[0]), synced);
  fs::resize_file(files[0], synced);  // what only the page cache held is gone
  {
    CollectorStore store(data, journal_only());
    EXPECT_EQ(store.journal_bytes(), 0u) << "recovery ends with a checkpoint";
    EXPECT_EQ(store.marks("a1")[static_cast<size_t>(Lane::EVENTS)], 12u);
  }
  EXPECT_EQ(stored_seqs(data), range(1, 12));
  { CollectorStore again(data, journal_only()); }
  EXPECT_EQ(stored_seqs(data), range(1, 12)) << "a second recovery adds nothing";

  // Without the loss: the bytes the journal would write are there already, nothing is cut.
  TempDir other;
  fs::path d2 = other.path("data");
  {
    CollectorStore store(d2, journal_only());
    store.store({make_batch(1, 4).upload});
    store.checkpoint();
    store.store({make_batch(5, 9).upload});
  }
  CollectorStore store(d2, journal_only());
  EXPECT_EQ(store.repair_report().files_cut, 0u);
  EXPECT_EQ(stored_seqs(d2), range(1, 9));
}

TEST(CollectorJournal, ARowFileDeletedBeforeTheCheckpointComesBackWithItsDirectory) {
  TempDir tmp;
  fs::path data = tmp.path("data");
  {
    CollectorStore store(data, journal_only());
    store.store({make_batch(1, 3, "First").upload});
    store.store({make_batch(4, 6, "Second").upload});
  }
  fs::remove_all(data / "a1");  // never synced: the crash kept none of it
  CollectorStore store(data, journal_only());
  EXPECT_EQ(stored_seqs(data, "First"), range(1, 3));
  EXPECT_EQ(stored_seqs(data, "Second"), range(4, 6));
}

// A group written to the journal whose commit never happened (or a torn
// write) lies past the committed end: ignored, and overwritten by the next.
TEST(CollectorJournal, ATornTailIsIgnoredAndTheNextGroupGoesWhereItWas) {
  TempDir tmp;
  fs::path data = tmp.path("data");
  {
    CollectorStore store(data, journal_only());
    store.store({make_batch(1, 3).upload});
  }
  std::ofstream(data / ".collector" / "journal", std::ios::app | std::ios::binary) << "OPJ1 a torn entry";
  {
    CollectorStore store(data, journal_only());
    EXPECT_EQ(stored_seqs(data), range(1, 3));
    EXPECT_EQ(marks_of(store.store({make_batch(4, 5).upload})), std::vector<uint64_t>{5});
  }
  CollectorStore store(data, journal_only());
  EXPECT_EQ(stored_seqs(data), range(1, 5));
}

TEST(CollectorJournal, ReplayStopsAtADamagedEntryAndKeepsTheEntriesBefore) {
  TempDir tmp;
  fs::path path = tmp.path("journal");
  uint64_t first_end = 0, end = 0;
  {
    GroupJournal journal(path);
    journal.add(GroupJournal::Kind::lines, "a/x.jsonl", 0, "one\n");
    journal.write_group();
    first_end = journal.end();
    journal.add(GroupJournal::Kind::lines, "a/x.jsonl", 4, "two\n");
    size_t mark = journal.group_mark();
    journal.add(GroupJournal::Kind::blob, "a/_uploads/1/f", 0, "rolled back");
    journal.roll_back(mark);
    journal.write_group();
    end = journal.end();
  }
  auto read_all = [&](uint64_t upto) {
    GroupJournal journal(path);
    std::vector<std::string> seen;
    uint64_t whole = journal.replay(upto, [&](const GroupJournal::Item& item) {
      seen.push_back(std::string(item.path) + "@" + std::to_string(item.offset) + ":" + std::string(item.data));
    });
    return std::make_pair(whole, seen);
  };
  auto [whole, seen] = read_all(end);
  EXPECT_EQ(whole, end);
  EXPECT_EQ(seen, (std::vector<std::string>{"a/x.jsonl@0:one\n", "a/x.jsonl@4:two\n"}));
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(end - 2));
    f.put('?');  // inside the second entry's body
  }
  std::tie(whole, seen) = read_all(end);
  EXPECT_EQ(whole, first_end);
  EXPECT_EQ(seen, std::vector<std::string>{"a/x.jsonl@0:one\n"});
}

// More files than may stay open: the least recently used are closed between
// uploads and reopened at the length the store knows, not the one on disk.
TEST(CollectorJournal, FilesClosedBetweenUploadsAreReopenedAtTheirLength) {
  TempDir tmp;
  fs::path data = tmp.path("data");
  CollectorStoreOptions options = journal_only();
  options.max_open_files = 4;
  std::vector<std::string> artifacts;
  for (int i = 0; i < 10; ++i) artifacts.push_back("Art" + std::to_string(i));
  {
    CollectorStore store(data, options);
    uint64_t seq = 0;
    for (int round = 0; round < 3; ++round)
      for (auto& artifact : artifacts) {
        auto b = make_batch(seq + 1, seq + 2, artifact);
        EXPECT_EQ(marks_of(store.store({b.upload})), std::vector<uint64_t>{seq + 2});
        seq += 2;
      }
  }
  CollectorStore store(data, options);
  for (size_t i = 0; i < artifacts.size(); ++i) {
    std::vector<uint64_t> want;
    for (uint64_t round = 0; round < 3; ++round) {
      uint64_t first = round * 20 + i * 2 + 1;
      want.push_back(first);
      want.push_back(first + 1);
    }
    EXPECT_EQ(stored_seqs(data, artifacts[i]), want) << artifacts[i];
  }
}

// Descriptors run short (connections take them too): the store closes row
// files it holds open instead of failing the upload.
TEST(CollectorJournal, RunningOutOfDescriptorsClosesOpenFilesInsteadOfFailing) {
  TempDir tmp;
  fs::path data = tmp.path("data");
  CollectorStoreOptions options = journal_only();
  options.max_open_files = 100000;  // never trimmed by count: only the descriptor limit stops it
  CollectorStore store(data, options);
  size_t open_now = 0;
  for (auto& e : fs::directory_iterator("/proc/self/fd")) open_now += e.exists() ? 1 : 0;
  rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
  rlimit low = old;
  low.rlim_cur = open_now + 16;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  std::vector<std::string> failures;
  for (uint64_t i = 0; i < 60; ++i) {
    auto b = make_batch(i + 1, i + 1, "Art" + std::to_string(i));
    for (auto& r : store.store({b.upload}))
      if (!r.error.empty()) failures.push_back(r.error);
  }
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
  EXPECT_TRUE(failures.empty()) << failures.size() << " uploads failed, the first: " << failures.front();
  for (uint64_t i = 0; i < 60; ++i) EXPECT_EQ(stored_seqs(data, "Art" + std::to_string(i)), range(i + 1, i + 1));
}

// A damaged entry below the committed end: the rows its groups wrote to the
// row files are still there, and they are kept, not cut for want of proof.
TEST(CollectorJournal, ADamagedJournalKeepsWhatTheRowFilesHold) {
  TempDir tmp;
  fs::path data = tmp.path("data");
  uint64_t first_group_end = 0;
  {
    CollectorStore store(data, journal_only());
    store.store({make_batch(1, 3).upload});
    first_group_end = store.journal_bytes();
    store.store({make_batch(4, 6).upload});
  }
  {
    std::fstream f(data / ".collector" / "journal", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(first_group_end + 30));
    f.put('?');  // inside the second group's entry
  }
  CollectorStore store(data, journal_only());
  EXPECT_EQ(store.repair_report().files_kept, 1u);
  EXPECT_EQ(store.repair_report().files_cut, 0u);
  EXPECT_EQ(stored_seqs(data), range(1, 6));
  EXPECT_EQ(store.marks("a1")[static_cast<size_t>(Lane::EVENTS)], 6u);
  EXPECT_EQ(marks_of(store.store({make_batch(7, 8).upload})), std::vector<uint64_t>{8});
  EXPECT_EQ(stored_seqs(data), range(1, 8));
}

}  // namespace
}  // namespace outpost::net
