// The collector's store: exactly-once into JSON lines across kill -9,
// names from the wire kept inside their directory, malformed records kept.

#include <gtest/gtest.h>
#include <capnp/message.h>
#include <malloc.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <future>
#include <thread>
#include <random>
#include <regex>

#include <openssl/sha.h>

#include "net/collector/collector_store.hpp"
#include "net/collector/storage_worker.hpp"
#include "queries/vql_source.hpp"
#include "persistence/errors.hpp"
#include "tests/collector_rows.hpp"
#include "tests/temp_dir.hpp"

namespace outpost::net {
namespace {
using testing::TempDir;
namespace fs = std::filesystem;

// The same, created at `created_ns` (its file is that day's).
std::vector<kj::byte> dated_batch_bytes(uint64_t seq, int64_t created_ns, const std::string& artifact = "Test.Art") {
  schemas::RecordWriter w(1, created_ns);
  auto batch = w.record().initRowBatch();
  batch.setArtifact(artifact);
  batch.initColumns(1).set(0, "N");
  batch.initRows(1).init(0, 1)[0].setUint64(seq);
  auto encoded = w.finish();
  auto bytes = encoded.bytes();
  return {bytes.begin(), bytes.end()};
}

TEST(CollectorStore, StoresOnceAndAnswersTheMarkForResends) {
  TempDir tmp;
  CollectorStore store(tmp.path("data"));
  auto b = make_batch(1, 5);
  StoreReport report;
  EXPECT_EQ(marks_of(store.store({b.upload}, &report)), std::vector<uint64_t>{5});
  EXPECT_EQ(report.stored, 5u);
  auto again = make_batch(3, 8);  // 3..5 were stored already
  report = {};
  EXPECT_EQ(marks_of(store.store({again.upload}, &report)), std::vector<uint64_t>{8});
  EXPECT_EQ(report.duplicates, 3u);
  EXPECT_EQ(report.stored, 3u);
  EXPECT_EQ(stored_seqs(tmp.path("data")), range(1, 8));
  EXPECT_EQ(store.marks("a1")[static_cast<size_t>(Lane::EVENTS)], 8u);
  EXPECT_EQ(store.marks("a1")[static_cast<size_t>(Lane::RESULTS)], 0u);
  ASSERT_EQ(store.agents().size(), 1u);
  EXPECT_EQ(store.agents()[0].id, "a1");
}

TEST(CollectorStore, AnUploadAfterAGapIsRefusedAndStoresNothing) {
  TempDir tmp;
  CollectorStore store(tmp.path("data"));
  auto first = make_batch(1, 5);
  auto lost = make_batch(6, 9);  // as if this upload had failed
  auto next = make_batch(10, 12);
  auto results = store.store({first.upload, next.upload});
  EXPECT_EQ(results[0].error, "");
  EXPECT_NE(results[1].error.find("gap"), std::string::npos) << results[1].error;
  EXPECT_EQ(results[1].mark, 5u);
  auto backwards = make_batch(6, 7);
  std::swap(backwards.upload.records[0], backwards.upload.records[1]);
  EXPECT_NE(store.store({backwards.upload})[0].error.find("ascend"), std::string::npos);
  EXPECT_EQ(marks_of(store.store({lost.upload, next.upload})), (std::vector<uint64_t>{9, 12}));
  EXPECT_EQ(stored_seqs(tmp.path("data")), range(1, 12));
}

TEST(CollectorStore, MarksSurviveReopen) {
  TempDir tmp;
  { CollectorStore(tmp.path("data")).store({make_batch(1, 3).upload}); }
  CollectorStore store(tmp.path("data"));
  EXPECT_EQ(store.marks("a1")[static_cast<size_t>(Lane::EVENTS)], 3u);
  EXPECT_THROW(CollectorStore second(tmp.path("data")), persistence::StoreLocked);
}

TEST(CollectorStore, UncommittedBytesAreCutOnOpen) {
  TempDir tmp;
  fs::path file;
  {
    CollectorStore store(tmp.path("data"));
    store.store({make_batch(1, 2).upload});
    for (auto& e : fs::recursive_directory_iterator(tmp.path("data") / "a1")) file = e.path();
  }
  std::ofstream(file, std::ios::app) << "{\"seq\":3,\"half a line";  // a store that never committed
  CollectorStore store(tmp.path("data"));
  EXPECT_EQ(store.repair_report().files_cut, 1u);
  EXPECT_EQ(stored_seqs(tmp.path("data")), range(1, 2));
}

TEST(CollectorStore, NamesFromTheWireStayInsideTheAgentsDirectory) {
  TempDir tmp;
  CollectorStore store(tmp.path("data"));
  auto b = make_batch(1, 1, "../../escape");
  store.store({b.upload});
  EXPECT_FALSE(fs::exists(tmp.path("escape")));
  EXPECT_EQ(stored_seqs(tmp.path("data"), "%2E.%2F..%2Fescape"), range(1, 1));
  Upload bad = b.upload;
  bad.agent = "../x";
  EXPECT_THROW(store.store({bad}), persistence::StoreError);
}

TEST(CollectorStore, MalformedRecordIsKeptAsBase64AndAcked) {
  TempDir tmp;
  CollectorStore store(tmp.path("data"));
  std::vector<kj::byte> garbage(40, 0xAB);
  Upload up{"a1", Lane::EVENTS, 0, {{7, kj::arrayPtr(garbage.data(), garbage.size())}}, {}};
  StoreReport report;
  EXPECT_EQ(marks_of(store.store({up}, &report)), std::vector<uint64_t>{7});
  EXPECT_EQ(report.malformed, 1u);
  bool found = false;
  for (auto& e : fs::recursive_directory_iterator(tmp.path("data") / "a1" / "_malformed")) {
    std::ifstream in(e.path());
    std::string line;
    std::getline(in, line);
    found = line.find("\"seq\":7") != std::string::npos && line.find("\"base64\":\"q6ur") != std::string::npos;
  }
  EXPECT_TRUE(found);
}

// Every single-byte corruption of a record is either rendered or kept as
// malformed: none may throw out of store() (on the collector's storage
// thread that would end the process, and the agent would resend it forever).
TEST(CollectorStore, NoCorruptionOfARecordEscapesAsAnException) {
  TempDir tmp;
  CollectorStore store(tmp.path("data"));
  auto good = batch_bytes(1);
  std::vector<std::vector<kj::byte>> variants;
  for (size_t i = 0; i < good.size(); ++i)
    for (kj::byte value : {kj::byte{0xFF}, kj::byte{0x00}, kj::byte{0x7F}}) {
      variants.push_back(good);
      variants.back()[i] = value;
    }
  Upload up{"a1", Lane::EVENTS, 0, {}, {}};
  for (size_t i = 0; i < variants.size(); ++i)
    up.records.push_back({i + 1, kj::arrayPtr(variants[i].data(), variants[i].size())});
  StoreReport report;
  std::vector<UploadResult> results;
  ASSERT_NO_THROW(results = store.store({up}, &report));
  EXPECT_EQ(results[0].mark, variants.size());
  EXPECT_EQ(report.stored + report.malformed, variants.size());
  EXPECT_GT(report.malformed, 0u);
}

TEST(CollectorStore, ARecordThatWouldRenderToFarMoreJsonIsKeptAsMalformed) {
  TempDir tmp;
  CollectorStore store(tmp.path("data"));
  // 2,000 rows that are null pointers (8 bytes each on the wire), each of
  // which renders as 1,000 named nulls.
  schemas::RecordWriter w(1);
  auto batch = w.record().initRowBatch();
  batch.setArtifact("Bomb");
  auto columns = batch.initColumns(1000);
  for (unsigned i = 0; i < columns.size(); ++i)
    columns.set(i, ("column_with_a_long_name_" + std::to_string(i)).c_str());
  batch.initRows(2000);
  auto encoded = w.finish();
  Upload up{"a1", Lane::EVENTS, 0, {{1, encoded.bytes()}}, {}};
  StoreReport report;
  store.store({up}, &report);
  EXPECT_EQ(report.malformed, 1u);
  EXPECT_FALSE(fs::exists(tmp.path("data") / "a1" / "Bomb"));
}

// The fuzzer's finding: a row of 4 million empty values beyond its columns
// in 176 bytes rendered 66 MB of JSON ("_N":null each) before the check
// after rendering refused it; the check before rendering counts them now.
TEST(CollectorStore, ValuesBeyondTheColumnsCountBeforeRendering) {
  TempDir tmp;
  std::ifstream in(std::string(OUTPOST_FUZZ_CORPUS) + "/record/regress-zero-size-values.bin", std::ios::binary);
  std::vector<kj::byte> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_EQ(bytes.size(), 176u);
  auto rendered = render_record("a1", Lane::EVENTS, {1, kj::arrayPtr(bytes.data(), bytes.size())});
  EXPECT_TRUE(rendered.malformed);
  EXPECT_NE(rendered.lines.find("would render to far more JSON than its size"), std::string::npos) << rendered.lines;
}

// A record whose bytes are not whole words is copied to be read; an upload
// chunk in it is written from that copy (the fuzzer's finding: 1-7 bytes
// more made the store write the copy's freed memory into the agent's file).
TEST(CollectorStore, AnUploadChunkInBytesThatAreNotWholeWordsIsStoredWhole) {
  TempDir tmp;
  // 1.5 MiB: its copy is a mapping of its own, unmapped when freed (glibc's
  // threshold fixed, not raised by earlier frees), so that a read of it
  // after that faults even without ASan.
  mallopt(M_MMAP_THRESHOLD, 1 << 17);
  std::string content(3 << 19, '\0');
  for (size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>(i * 13 % 251);
  schemas::RecordWriter w(5);
  auto chunk = w.record().initUploadChunk();
  chunk.setPath("evidence.log");
  chunk.setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(content.data()), content.size()));
  auto encoded = w.finish();
  std::vector<kj::byte> bytes(encoded.bytes().begin(), encoded.bytes().end());
  bytes.insert(bytes.end(), {0, 0, 0});
  CollectorStore store(tmp.path("data"));
  Upload up{"a1", Lane::UPLOADS, 0, {{1, kj::arrayPtr(bytes.data(), bytes.size())}}, {}};
  StoreReport report;
  EXPECT_EQ(marks_of(store.store({up}, &report)), std::vector<uint64_t>{1});
  EXPECT_EQ(report.malformed, 0u);
  std::ifstream file(tmp.path("data") / "a1" / "_uploads" / "5" / "evidence.log", std::ios::binary);
  std::string stored((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  EXPECT_TRUE(stored == content) << stored.size() << " bytes stored of " << content.size();
}

// An upload's params as the collector takes them: its records pointing into
// them; an unknown lane or more records than the protocol allows break it.
TEST(CollectorStore, AnUploadIsTakenWithItsRecordsOrNamesWhatBreaksTheProtocol) {
  capnp::MallocMessageBuilder message;
  auto params = message.initRoot<protocol::Session::UploadParams>();
  params.setLane(Lane::RESULTS);
  params.setAfter(4);
  auto records = params.initRecords(2);
  records[0].setSeq(5);
  records[0].setData(kj::heapArray<kj::byte>(3));
  records[1].setSeq(9);
  Upload up;
  EXPECT_EQ(take_upload(params.asReader(), "a1", up), "");
  EXPECT_EQ(up.agent, "a1");
  EXPECT_EQ(up.lane, Lane::RESULTS);
  EXPECT_EQ(up.after, 4u);
  ASSERT_EQ(up.records.size(), 2u);
  EXPECT_EQ(up.records[0].seq, 5u);
  EXPECT_EQ(up.records[0].data.begin(), params.asReader().getRecords()[0].getData().begin());
  EXPECT_EQ(up.records[1].seq, 9u);

  params.setLane(static_cast<Lane>(9));
  Upload bad;
  EXPECT_EQ(take_upload(params.asReader(), "a1", bad), "unknown lane 9");
  params.setLane(Lane::EVENTS);
  params.initRecords(protocol::MAX_RECORDS_PER_UPLOAD + 1);
  EXPECT_EQ(take_upload(params.asReader(), "a1", bad),
            std::to_string(protocol::MAX_RECORDS_PER_UPLOAD + 1) + " records in one upload (at most " +
                std::to_string(protocol::MAX_RECORDS_PER_UPLOAD) + ")");
}

// An artifact's folder cannot be one of the collector's own (_log, _status,
// _uploads, _malformed, _unknown): a leading '_' is escaped like a leading '.'.
TEST(CollectorStore, AnArtifactNamedLikeTheCollectorsOwnFolderGetsItsOwn) {
  TempDir tmp;
  CollectorStore store(tmp.path("data"));
  store.store({make_batch(1, 1, "_log").upload});
  EXPECT_EQ(stored_seqs(tmp.path("data"), "%5Flog"), range(1, 1));
  EXPECT_FALSE(fs::exists(tmp.path("data") / "a1" / "_log"));
  EXPECT_EQ(artifact_folder("a_b"), "a_b");
}

TEST(CollectorStore, UploadChunksLandAtTheirOffsetsAndASentAgainChunkChangesNothing) {
  TempDir tmp;
  std::string content(2500000, '\0');
  for (size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>(i * 7 % 251);
  std::ofstream(tmp.path("evidence.jsonl"), std::ios::binary) << content;
  // The agent's side: upload() in a query, its chunks from the VqlSource.
  vql::Engine engine(vql::default_registry());
  auto query = std::make_shared<const vql::ast::Query>(
      engine.compile("SELECT upload(file='" + tmp.path("evidence.jsonl").string() + "') AS U FROM info()"));
  vql::VqlSource source(engine, {query}, {}, vql::default_paths(), nullptr, 42);
  std::vector<schemas::Encoded> chunks;
  for (int i = 0; i < 50; ++i) {
    schemas::RowBatchWriter batch(42, "a", "s", Lane::RESULTS, source.columns());
    auto r = source.pull(batch, 100);
    for (auto& record : r.records) {
      EXPECT_EQ(record.lane, Lane::UPLOADS);
      chunks.push_back(std::move(record.encoded));
    }
    if (r.state == PullResult::State::done) break;
  }
  ASSERT_EQ(chunks.size(), 3u) << "2.5 MB in 1 MiB chunks";
  schemas::RecordView last(chunks.back().words());
  auto eof = last.record().getUploadChunk();
  EXPECT_TRUE(eof.getEof());
  EXPECT_EQ(eof.getTotalSize(), content.size());
  unsigned char digest[32];
  SHA256(reinterpret_cast<const unsigned char*>(content.data()), content.size(), digest);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(eof.getSha256().begin()), eof.getSha256().size()),
            std::string(reinterpret_cast<const char*>(digest), 32));

  // The collector's side: the last chunk first, then all three (two resent).
  auto store = std::make_unique<CollectorStore>(tmp.path("data"));
  auto upload = [&](uint64_t after, std::vector<std::pair<uint64_t, size_t>> seq_chunk) {
    Upload up;
    up.agent = "a1";
    up.lane = Lane::UPLOADS;
    up.after = after;
    for (auto& [seq, i] : seq_chunk) up.records.push_back({seq, chunks[i].bytes()});
    return marks_of(store->store({up}));
  };
  EXPECT_EQ(upload(0, {{1, 0}}), std::vector<uint64_t>{1});
  EXPECT_EQ(upload(0, {{1, 0}, {2, 1}, {3, 2}}), std::vector<uint64_t>{3});
  std::string name = std::regex_replace(tmp.path("evidence.jsonl").string(), std::regex("/"), "%2F");
  auto stored = [&] {
    std::ifstream in(tmp.path("data") / "a1" / "_uploads" / "42" / name, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  EXPECT_TRUE(stored() == content) << "stored " << stored().size() << " bytes";
  // An uploaded file is the agent's, whatever its name: a restart's repair
  // (which cuts the collector's own .jsonl files) leaves it whole.
  store.reset();
  CollectorStore reopened(tmp.path("data"));
  EXPECT_EQ(reopened.repair_report().files_cut, 0u);
  EXPECT_TRUE(stored() == content) << "after a restart: " << stored().size() << " bytes";
}

// --- Writes outside the write transaction, per-upload failure, map growth, pruning

constexpr int64_t kDayNs = 86400ll * 1000000000;

// The storage thread's fsyncs must not hold LMDB's writer lock: the admin
// writer thread commits while a group's files sync.
TEST(CollectorStore, AWriteTransactionRunsWhileAGroupIsBetweenSyncAndCommit) {
  TempDir tmp;
  CollectorStoreOptions options;
  std::unique_ptr<CollectorStore> store;
  std::future_status admin = std::future_status::deferred;
  std::thread other;
  options.after_data_sync = [&] {
    std::promise<void> done;
    auto finished = done.get_future();
    other = std::thread([&store, done = std::move(done)]() mutable {
      store->next_flow_ids();  // a write transaction
      done.set_value();
    });
    admin = finished.wait_for(std::chrono::seconds(20));  // generous: it waits for nothing now
  };
  store = std::make_unique<CollectorStore>(tmp.path("data"), options);
  EXPECT_EQ(marks_of(store->store({make_batch(1, 3).upload})), std::vector<uint64_t>{3});
  other.join();
  EXPECT_EQ(admin, std::future_status::ready) << "the admin's commit waited for the group's commit";
}

// Killed after the data is durable and before the marks commit: the rows
// are cut at the next start, and the agent's resend stores each once.
TEST(CollectorStore, ACrashBetweenDataSyncAndMarksCommitDuplicatesNothing) {
  TempDir tmp;
  fs::path data = tmp.path("data");
  pid_t pid = fork();
  if (pid == 0) {
    CollectorStoreOptions options;
    int stores = 0;
    options.after_data_sync = [&] {
      if (++stores == 2) _exit(0);
    };
    CollectorStore store(data, options);
    store.store({make_batch(1, 5).upload});
    store.store({make_batch(6, 10).upload});
    _exit(3);
  }
  ASSERT_GT(pid, 0);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  CollectorStore store(data);
  EXPECT_EQ(store.repair_report().files_cut, 1u);
  EXPECT_EQ(store.marks("a1")[static_cast<size_t>(Lane::EVENTS)], 5u);
  EXPECT_EQ(stored_seqs(data), range(1, 5));
  EXPECT_EQ(marks_of(store.store({make_batch(6, 10).upload})), std::vector<uint64_t>{10});
  EXPECT_EQ(stored_seqs(data), range(1, 10));
}

// One agent's file cannot be opened (a directory is in its place): that
// upload fails alone, what it wrote to its other files is cut, and the
// others in the group are stored.
TEST(CollectorStore, AnUploadWhoseFileCannotBeOpenedFailsAloneAndLeavesNothing) {
  TempDir tmp;
  fs::path data = tmp.path("data");
  CollectorStore store(data);
  int64_t then = schemas::now_ns();
  auto a1 = make_batch(1, 3);
  auto good = dated_batch_bytes(1, then, "Good"), bad = dated_batch_bytes(2, then, "Bad");
  Upload a2{"a2", Lane::EVENTS, 0, {{1, kj::arrayPtr(good.data(), good.size())}, {2, kj::arrayPtr(bad.data(), bad.size())}}, {}};
  Upload a3 = a1.upload;
  a3.agent = "a3";
  // What renders to a2/Bad/<today>.jsonl finds a directory there.
  fs::path blocked = data / render_record("a2", Lane::EVENTS, a2.records[1]).file;
  fs::create_directories(blocked);
  auto results = store.store({a1.upload, a2, a3});
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0].status, UploadStatus::stored);
  EXPECT_EQ(results[0].mark, 3u);
  EXPECT_EQ(results[1].status, UploadStatus::failed);
  EXPECT_NE(results[1].error.find("cannot open"), std::string::npos) << results[1].error;
  EXPECT_EQ(results[1].mark, 0u);
  EXPECT_EQ(results[2].status, UploadStatus::stored);
  EXPECT_EQ(store.marks("a2")[static_cast<size_t>(Lane::EVENTS)], 0u);
  fs::path good_file = data / render_record("a2", Lane::EVENTS, a2.records[0]).file;
  EXPECT_EQ(fs::file_size(good_file), 0u) << "the failed upload's first row was not cut";
  // Once the file can be opened, the agent's resend stores each row once.
  fs::remove(blocked);
  EXPECT_EQ(marks_of(store.store({a2})), std::vector<uint64_t>{2});
  EXPECT_EQ(std::count(std::istreambuf_iterator<char>(std::ifstream(good_file).rdbuf()), {}, '\n'), 1);
  EXPECT_EQ(std::count(std::istreambuf_iterator<char>(std::ifstream(blocked).rdbuf()), {}, '\n'), 1);
}

// An upload of `count` records of distinct artifacts (a `files` entry each).
struct ManyFiles {
  std::vector<std::vector<kj::byte>> payloads;
  Upload upload;
  ManyFiles(uint64_t after, uint64_t count) {
    upload.agent = "a1";
    upload.lane = Lane::RESULTS;
    upload.after = after;
    for (uint64_t s = after + 1; s <= after + count; ++s)
      payloads.push_back(batch_bytes(s, std::string(170, 'A') + "." + std::to_string(s)));
    for (uint64_t i = 0; i < count; ++i)
      upload.records.push_back({after + 1 + i, kj::arrayPtr(payloads[i].data(), payloads[i].size())});
  }
};

TEST(CollectorStore, TheMapGrowsWhenFullAndStopsAtItsLimitWithAClearError) {
  TempDir tmp;
  fs::path data = tmp.path("data");
  CollectorStoreOptions options;
  options.map_size = 64 << 10;
  options.max_map_size = 256 << 10;
  // The files' lengths, which fill the map, are committed at checkpoints:
  // one after every group, and a group refused once one has failed.
  options.checkpoint_bytes = 1;
  uint64_t mark = 0;
  std::string error;
  {
    CollectorStore store(data, options);
    for (int i = 0; i < 100 && error.empty(); ++i) {
      ManyFiles up(mark, 50);
      try {
        mark = marks_of(store.store({up.upload}))[0];
      } catch (const persistence::StoreError& e) {
        error = e.what();
      }
    }
    EXPECT_NE(error.find("is full"), std::string::npos) << "never reached the limit: " << error;
    EXPECT_NE(error.find("limit"), std::string::npos) << error;
    EXPECT_EQ(store.map_size(), 256u << 10);
    EXPECT_GT(mark, 300u) << "stored no more than fits in 64 KiB";
  }
  // The refused group's rows are cut at the next start: each row once, through the mark.
  CollectorStore store(data, options);
  EXPECT_EQ(store.marks("a1")[static_cast<size_t>(Lane::RESULTS)], mark);
  uint64_t lines = 0;
  for (auto& e : fs::recursive_directory_iterator(data / "a1"))
    if (e.is_regular_file()) lines += std::count(std::istreambuf_iterator<char>(std::ifstream(e.path()).rdbuf()), {}, '\n');
  EXPECT_EQ(lines, mark);
}

TEST(CollectorStore, PruningForgetsOldDaysWithoutCuttingTheirFilesAndALateRowAppends) {
  TempDir tmp;
  fs::path data = tmp.path("data");
  int64_t now = schemas::now_ns(), month_ago = now - 30 * kDayNs;
  std::vector<std::vector<kj::byte>> keep;
  auto dated = [&](uint64_t first, uint64_t last, int64_t created) {
    Upload up{"a1", Lane::EVENTS, first - 1, {}, {}};
    for (uint64_t s = first; s <= last; ++s) keep.push_back(dated_batch_bytes(s, created));
    for (uint64_t s = first; s <= last; ++s)
      up.records.push_back({s, kj::arrayPtr(keep[keep.size() - 1 - (last - s)].data(), keep[keep.size() - 1 - (last - s)].size())});
    return up;
  };
  {
    CollectorStore store(data);
    marks_of(store.store({dated(1, 3, month_ago)}));
    marks_of(store.store({dated(4, 5, now)}));
    auto pruned = store.prune(now);
    EXPECT_EQ(pruned.files, 1u);  // the old day's; today's stays
    EXPECT_EQ(pruned.agents, 0u);
  }
  {
    CollectorStore store(data);  // repair must take the old day's file as complete
    EXPECT_EQ(store.repair_report().files_cut, 0u);
    EXPECT_EQ(stored_seqs(data), range(1, 5));
    marks_of(store.store({dated(6, 6, month_ago)}));  // a late row of the old day
    EXPECT_EQ(stored_seqs(data), (std::vector<uint64_t>{1, 2, 3, 6, 4, 5}));
    EXPECT_EQ(store.prune(now).files, 1u);
  }
  // Killed while appending another late row: cut back to what was stored.
  pid_t pid = fork();
  if (pid == 0) {
    CollectorStoreOptions options;
    options.after_data_sync = [] { _exit(0); };
    CollectorStore store(data, options);
    store.store({dated(7, 7, month_ago)});
    _exit(3);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  CollectorStore store(data);
  EXPECT_EQ(store.repair_report().files_cut, 1u);
  EXPECT_EQ(stored_seqs(data), (std::vector<uint64_t>{1, 2, 3, 6, 4, 5}));
  // An agent silent for longer than agents_keep_days leaves the list; its marks stay.
  EXPECT_EQ(store.prune(now + 400 * kDayNs).agents, 1u);
  EXPECT_TRUE(store.agents().empty());
  EXPECT_EQ(store.marks("a1")[static_cast<size_t>(Lane::EVENTS)], 6u);
}

// LMDB reports a short write on a full disk as EIO; the collector says
// "No space left on device" for it, as for the rows' own writes.
TEST(CollectorStore, AnEioOnAFullDiskIsReportedAsDiskFull) {
  if (geteuid() != 0) GTEST_SKIP() << "mounting a small file system needs root";
  TempDir tmp;
  fs::path point = tmp.path("small");
  fs::create_directories(point);
  ASSERT_EQ(mount("outpost-test", point.c_str(), "tmpfs", 0, "size=1m"), 0) << strerror(errno);
  {
    std::ofstream fill(point / "fill", std::ios::binary);
    std::string block(4096, 'x');
    while (fill.write(block.data(), block.size()) && fill.flush()) {}
  }
  EXPECT_EQ(disk_full_as_enospc(EIO, point), ENOSPC);
  EXPECT_EQ(disk_full_as_enospc(ENOSPC, point), ENOSPC);
  EXPECT_EQ(disk_full_as_enospc(EACCES, point), EACCES);
  umount2(point.c_str(), MNT_DETACH);
  EXPECT_EQ(disk_full_as_enospc(EIO, tmp.path("")), EIO) << "a real I/O error where there is room";
}

// The storage thread's groups: fresh rows (control, events) first and with
// little backlog beside them, the backlog in order and always progressing.
TEST(StorageGroups, BacklogAloneFillsTheGroupBudgetInOrder) {
  const uint64_t MiB = 1 << 20;
  std::vector<UploadSize> bulk(6, {Lane::RESULTS, MiB});
  EXPECT_EQ(pick_group(bulk), (std::vector<size_t>{0, 1, 2, 3}));
  // In order: the first that does not fit ends the group, even if a later one would fit.
  EXPECT_EQ(pick_group({{Lane::RESULTS, 3 * MiB}, {Lane::UPLOADS, 2 * MiB}, {Lane::RESULTS, 1}}),
            (std::vector<size_t>{0}));
  // One too big for any budget still goes, alone.
  EXPECT_EQ(pick_group({{Lane::UPLOADS, 9 * MiB}, {Lane::UPLOADS, 1}}), (std::vector<size_t>{0}));
}

TEST(StorageGroups, FreshRowsGoFirstWithLittleBacklog) {
  const uint64_t MiB = 1 << 20;
  std::vector<UploadSize> waiting = {{Lane::RESULTS, MiB / 2}, {Lane::RESULTS, MiB / 2},
                                     {Lane::EVENTS, 4096},     {Lane::RESULTS, MiB / 2},
                                     {Lane::CONTROL, 100},     {Lane::UPLOADS, MiB / 2}};
  ASSERT_LT(kMaxBulkBytesWithUrgent, kMaxGroupBytes);
  EXPECT_EQ(pick_group(waiting), (std::vector<size_t>{2, 4, 0, 1}));  // 1 MiB of backlog
  // The backlog still moves while fresh rows keep coming: at least one bulk upload per group.
  EXPECT_EQ(pick_group({{Lane::RESULTS, 8 * MiB}, {Lane::EVENTS, 10}}), (std::vector<size_t>{1, 0}));
  EXPECT_EQ(pick_group({{Lane::EVENTS, 10}}), (std::vector<size_t>{0}));
  EXPECT_TRUE(pick_group({}).empty());
}

// A child process stores batches of 10 until killed at a random moment; the
// parent reopens, checks that the files hold exactly 1..mark, then plays the
// agent: resends everything from 1 and checks exactly-once again.
TEST(CollectorStore, ExactlyOnceAcrossKillNine) {
  TempDir tmp;
  fs::path data = tmp.path("data");
  std::mt19937 rng(42);
  uint64_t total = 0;
  for (int cycle = 0; cycle < 12; ++cycle) {
    pid_t pid = fork();
    if (pid == 0) {
      try {
        CollectorStore store(data);
        for (uint64_t s = 1;; s += 10) store.store({make_batch(s, s + 9).upload});
      } catch (...) {
        _exit(3);
      }
    }
    ASSERT_GT(pid, 0);
    usleep(20000 + rng() % 80000);
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the writer stopped by itself: " << status;

    CollectorStore store(data);
    uint64_t mark = store.marks("a1")[static_cast<size_t>(Lane::EVENTS)];
    ASSERT_EQ(stored_seqs(data), range(1, mark)) << "cycle " << cycle;
    total = std::max(total, mark) + 25;
    marks_of(store.store({make_batch(mark + 1, total).upload}));  // the agent resumes after mark
    ASSERT_EQ(stored_seqs(data), range(1, total)) << "cycle " << cycle;
  }
}

}  // namespace
}  // namespace outpost::net
