// The jetstream storage backend against real nats-server processes on
// 127.0.0.1: exactly-once across collectors, a collector that dies between
// JetStream's acknowledgement and its marks, NATS going away and coming
// back, and a three-node cluster losing a node while uploads go on.

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <thread>

#include "net/collector/jetstream_export.hpp"
#include "net/collector/jetstream_store.hpp"
#include "tests/collector_rows.hpp"
#include "tests/e2e_fixture.hpp"
#include "tests/nats_cluster.hpp"

namespace outpost::net {
namespace {

using namespace outpost::testing;

std::vector<uint64_t> range(uint64_t first, uint64_t last) {
  std::vector<uint64_t> v;
  for (uint64_t s = first; s <= last; ++s) v.push_back(s);
  return v;
}

// What `got` has more or less than `want`, and where it is out of order (gtest prints 32 elements).
std::string difference(const std::vector<uint64_t>& got, const std::vector<uint64_t>& want) {
  std::map<uint64_t, int> count;
  for (auto s : got) ++count[s];
  for (auto s : want) --count[s];
  std::string out;
  for (auto& [seq, n] : count)
    if (n != 0) out += " " + std::to_string(seq) + (n > 0 ? " +" : " ") + std::to_string(n);
  for (size_t i = 1; i < got.size(); ++i)
    if (got[i] <= got[i - 1]) out += " order at " + std::to_string(i) + ": " + std::to_string(got[i]);
  return out.empty() ? "same" : "seq and count more or less:" + out;
}

struct JetStreamTest : ::testing::Test {
  TempDir tmp;
  std::unique_ptr<NatsCluster> nats;
  int stores = 0;
  std::vector<std::unique_ptr<CollectorStore>> states;

  void SetUp() override {
    ASSERT_TRUE(NatsCluster::available()) << kNatsServer << " is missing: scripts/install-deps.sh installs it";
  }

  void start_nats(int nodes) {
    nats = std::make_unique<NatsCluster>(tmp, nodes);
    nats->start_all();
  }

  JetStreamOptions options(int replicas = 1) {
    JetStreamOptions o;
    o.nats.servers = nats->urls();
    o.replicas = replicas;
    o.request_timeout = std::chrono::milliseconds(2000);
    o.connect_timeout = std::chrono::milliseconds(10000);
    return o;
  }

  // A collector's backend, with its own state directory (as another collector's would be).
  std::unique_ptr<JetStreamStore> collector(JetStreamOptions o) {
    states.push_back(std::make_unique<CollectorStore>(tmp.path("state-" + std::to_string(++stores))));
    return std::make_unique<JetStreamStore>(std::move(o), *states.back());
  }

  // One node, a deduplication window of 1 s (the stream is made with it),
  // and agent a1's events 1-20 stored and marked: the options used.
  JetStreamOptions short_window_and_20_stored() {
    start_nats(1);
    auto o = options();
    o.duplicate_window = std::chrono::milliseconds(1000);
    auto b1 = make_batch(1, 20);
    EXPECT_EQ(collector(o)->store({b1.upload})[0].status, UploadStatus::stored);
    return o;
  }

  std::vector<StreamMessage> stream() { return read_stream(nats->urls(), "OUTPOST"); }
  std::vector<uint64_t> stored() { return stream_values(stream(), "outpost.a1.events.", "seq"); }
};

TEST(SubjectToken, KeepsLettersDigitsDashUnderscoreAndWritesTheRestAsHex) {
  EXPECT_EQ(subject_token("Linux.Sys.Pslist"), "Linux=2ESys=2EPslist");
  EXPECT_EQ(subject_token("host-1_a@b"), "host-1_a=40b");
  EXPECT_EQ(subject_token("a b*>"), "a=20b=2A=3E");
  EXPECT_EQ(subject_token(""), "=");
  EXPECT_EQ(subject_untoken("host-1_a=40b"), "host-1_a@b");
  EXPECT_EQ(subject_untoken(subject_token("agent.1@x")), "agent.1@x");
  EXPECT_EQ(subject_untoken("a=4"), "") << "cut short";
  EXPECT_EQ(subject_untoken("a=ZZ"), "") << "not hex";
}

TEST_F(JetStreamTest, EveryRecordIsStoredOnceAndAnyCollectorResumesFromTheMarks) {
  start_nats(1);
  auto first = collector(options());
  auto b1 = make_batch(1, 100);
  auto results = first->store({b1.upload});
  ASSERT_EQ(results[0].status, UploadStatus::stored) << results[0].error;
  EXPECT_EQ(results[0].mark, 100u);

  auto messages = stream();
  ASSERT_EQ(messages.size(), 100u);
  EXPECT_EQ(messages[0].subject, "outpost.a1.events.Test=2EArt");
  EXPECT_EQ(messages[0].id, "a1/events/1");
  EXPECT_EQ(messages[0].file.substr(0, 12), "a1/Test.Art/");

  // The agent sends 50..150 again after a lost answer: 1..100 are acked only.
  auto b2 = make_batch(50, 150);
  b2.upload.after = 49;
  StoreReport report;
  results = first->store({b2.upload}, &report);
  ASSERT_EQ(results[0].status, UploadStatus::stored) << results[0].error;
  EXPECT_EQ(report.duplicates, 51u);
  EXPECT_EQ(report.stored, 50u);

  // Another collector sees the marks and goes on from them.
  auto second = collector(options());
  EXPECT_EQ(second->marks("a1")[static_cast<size_t>(Lane::EVENTS)], 150u);
  auto b3 = make_batch(151, 200);
  ASSERT_EQ(second->store({b3.upload})[0].status, UploadStatus::stored);

  // The agent comes back to the first, whose marks are behind: not a gap.
  auto b4 = make_batch(201, 210);
  results = first->store({b4.upload});
  ASSERT_EQ(results[0].status, UploadStatus::stored) << results[0].error;
  EXPECT_EQ(results[0].mark, 210u);

  // A real gap is refused with the mark to resume from.
  auto b5 = make_batch(300, 301);
  results = first->store({b5.upload});
  EXPECT_EQ(results[0].status, UploadStatus::refused);
  EXPECT_EQ(results[0].mark, 210u);

  EXPECT_EQ(stored(), range(1, 210));
}

// `outpost-collector agents` reads every agent's marks: past a few, in one
// pass over the bucket, which must give each agent its own, as a read each does.
TEST_F(JetStreamTest, TheMarksOfManyAgentsReadAtOnceAreEachAgentsOwn) {
  start_nats(1);
  auto writer = collector(options());
  const size_t n = JetStreamStore::kReadEachUpTo + 8;
  std::vector<Batch> batches;
  batches.reserve(n);  // the uploads point into their batches' payloads
  std::vector<Upload> uploads;
  for (size_t i = 0; i < n; ++i) {
    batches.push_back(make_batch(1, i + 1));
    batches.back().upload.agent = "agent." + std::to_string(i) + "@x";  // a key spelled otherwise
    uploads.push_back(batches.back().upload);
  }
  for (auto& r : writer->store(uploads)) ASSERT_EQ(r.status, UploadStatus::stored) << r.error;
  std::vector<std::string> ids{"never-stored"};
  for (size_t i = n; i-- > 0;) ids.push_back(uploads[i].agent);  // not in the bucket's order
  ids.push_back(uploads[2].agent);  // twice: in both places
  auto reader = collector(options());
  const RowStore& rows = *reader;
  auto each = rows.progress_each(ids);
  ASSERT_EQ(each.size(), ids.size());
  EXPECT_EQ(each[0].marks, LaneMarks{}) << ids[0];
  EXPECT_EQ(each[0].last_upload_ns, 0);
  for (size_t i = 1; i < ids.size(); ++i) {
    auto one = rows.progress(ids[i]);
    EXPECT_EQ(each[i].marks[static_cast<size_t>(Lane::EVENTS)], i < ids.size() - 1 ? n - i + 1 : 3) << ids[i];
    EXPECT_EQ(each[i].marks, one.marks) << ids[i];
    EXPECT_EQ(each[i].last_upload_ns, one.last_upload_ns) << ids[i];
    EXPECT_GT(each[i].last_upload_ns, 0) << ids[i];
  }
}

TEST_F(JetStreamTest, ACollectorThatDiesBeforeItsMarksMoveCostsNoDuplicate) {
  start_nats(1);
  auto o = options();
  o.before_marks = [] { throw std::runtime_error("the collector dies here"); };
  auto dying = collector(o);
  auto b = make_batch(1, 40);
  EXPECT_THROW(dying->store({b.upload}), std::runtime_error);
  EXPECT_EQ(stored(), range(1, 40));  // JetStream has them; the marks do not say so

  auto next = collector(options());
  EXPECT_EQ(next->marks("a1")[static_cast<size_t>(Lane::EVENTS)], 0u);
  StoreReport report;
  auto results = next->store({b.upload}, &report);  // the agent sends them again
  ASSERT_EQ(results[0].status, UploadStatus::stored) << results[0].error;
  EXPECT_EQ(report.duplicates, 40u);
  EXPECT_EQ(results[0].mark, 40u);
  EXPECT_EQ(stored(), range(1, 40));
}

TEST_F(JetStreamTest, RecordsStoredButNeverMarkedAreMarkedWhenTheAgentComesBackAfterTheWindow) {
  auto o = short_window_and_20_stored();

  o.before_marks = [] { throw std::runtime_error("the collector dies here"); };
  auto dying = collector(o);
  auto b2 = make_batch(21, 60);
  EXPECT_THROW(dying->store({b2.upload}), std::runtime_error);
  // The agent comes back after the deduplication window: JetStream would store 21-60 again.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  o.before_marks = nullptr;
  auto next = collector(o);
  EXPECT_EQ(next->marks("a1")[static_cast<size_t>(Lane::EVENTS)], 20u);  // the bucket is behind
  EXPECT_EQ(next->resume_marks("a1")[static_cast<size_t>(Lane::EVENTS)], 60u);
  EXPECT_EQ(next->marks("a1")[static_cast<size_t>(Lane::EVENTS)], 60u);  // and no longer
  // The agent deletes through 60 and goes on after it.
  auto b3 = make_batch(61, 70);
  auto results = next->store({b3.upload});
  ASSERT_EQ(results[0].status, UploadStatus::stored) << results[0].error;
  EXPECT_EQ(stored(), range(1, 70));
  // Nothing unmarked: the marks as they are.
  EXPECT_EQ(collector(o)->resume_marks("a1")[static_cast<size_t>(Lane::EVENTS)], 70u);
}

TEST_F(JetStreamTest, UnmarkedRecordsAreMarkedOnlyUpToAMissingRecordOrAMissingChunk) {
  auto o = short_window_and_20_stored();
  // What a collector that stopped mid-group may leave in the stream: events
  // 21-25 and 27-28 (26 was never acknowledged); control 1-3, whose 2 and 3
  // have chunks, of which only 2's was stored.
  NatsReader reader(nats->urls());
  ASSERT_NE(reader.js, nullptr);
  auto put = [&](const std::string& subject, const std::string& id, bool chunk) {
    natsMsg* msg = nullptr;
    ASSERT_EQ(natsMsg_Create(&msg, subject.c_str(), nullptr, "{}\n", 3), NATS_OK);
    natsMsgHeader_Set(msg, "Nats-Msg-Id", id.c_str());
    if (chunk) natsMsgHeader_Set(msg, "Outpost-Chunk", "1");
    jsErrCode jerr = static_cast<jsErrCode>(0);
    EXPECT_EQ(js_PublishMsg(nullptr, reader.js, msg, nullptr, &jerr), NATS_OK) << id;
    natsMsg_Destroy(msg);
  };
  for (int seq : {21, 22, 23, 24, 25, 27, 28}) put("outpost.a1.events.Test_Art", "a1/events/" + std::to_string(seq), false);
  put("outpost.a1.control.Test_Art", "a1/control/1", false);
  put("outpost.a1.control._uploads", "a1/control/2/blob", false);
  put("outpost.a1.control.Test_Art", "a1/control/2", true);
  put("outpost.a1.control.Test_Art", "a1/control/3", true);

  // The agent comes back after the deduplication window.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  auto next = collector(o);
  auto marks = next->resume_marks("a1");
  EXPECT_EQ(marks[static_cast<size_t>(Lane::EVENTS)], 25u);
  EXPECT_EQ(marks[static_cast<size_t>(Lane::CONTROL)], 2u);
  EXPECT_EQ(marks[static_cast<size_t>(Lane::RESULTS)], 0u);
  EXPECT_EQ(next->marks("a1"), marks);  // written to the bucket
}

TEST_F(JetStreamTest, CutOffFromNatsItStopsAcknowledgingAndResumesWhenNatsReturns) {
  start_nats(1);
  auto store = collector(options());
  auto b1 = make_batch(1, 20);
  ASSERT_EQ(store->store({b1.upload})[0].status, UploadStatus::stored);

  nats->kill9(0);
  auto b2 = make_batch(21, 40);
  auto results = store->store({b2.upload});
  EXPECT_EQ(results[0].status, UploadStatus::failed);
  EXPECT_FALSE(results[0].error.empty());
  EXPECT_THROW(store->progress("a1"), persistence::StoreError);

  nats->start(0);
  nats->wait_ready(0);
  // The agent sends the failed upload again until it is stored.
  ASSERT_TRUE(eventually([&] { return store->store({b2.upload})[0].status == UploadStatus::stored; },
                         std::chrono::seconds(30)));
  EXPECT_EQ(store->marks("a1")[static_cast<size_t>(Lane::EVENTS)], 40u);
  EXPECT_EQ(stored(), range(1, 40));
}

// NATS that verifies its clients (mutual TLS, certificates from
// outpost-certs): a collector without a certificate, or without TLS, is
// refused at start with the reason; with one it stores.
TEST_F(JetStreamTest, NatsOverMutualTlsTakesOnlyACollectorWithItsCertificate) {
  auto certs = tmp.path("certs");
  ASSERT_EQ(wait_exit(spawn({OUTPOST_CERTS, "init", certs.string()}, tmp.path("certs.log"))), 0);
  ASSERT_EQ(wait_exit(spawn({OUTPOST_CERTS, "agent", certs.string(), "collector-1"}, tmp.path("certs.log"))), 0);
  nats = std::make_unique<NatsCluster>(tmp, 1);
  nats->extra_args = {"--tlsverify", "--tlscert", (certs / "collector.pem").string(), "--tlskey",
                      (certs / "collector.key").string(), "--tlscacert", (certs / "ca.pem").string()};
  nats->start_all();
  auto o = options();
  o.connect_timeout = std::chrono::milliseconds(1500);
  try {
    collector(o);
    ADD_FAILURE() << "a collector without TLS was taken";
  } catch (const persistence::StoreError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot connect to NATS at nats://127.0.0.1:"), std::string::npos) << e.what();
  }
  o.nats.ca = (certs / "ca.pem").string();
  EXPECT_THROW(collector(o), persistence::StoreError);  // TLS, but no client certificate
  o.nats.cert = (certs / "collector-1.pem").string();
  o.nats.key = (certs / "collector-1.key").string();
  auto store = collector(o);
  auto b = make_batch(1, 10);
  ASSERT_EQ(store->store({b.upload})[0].status, UploadStatus::stored);
  EXPECT_EQ(store->marks("a1")[static_cast<size_t>(Lane::EVENTS)], 10u);
}

// A record whose publication found no responder (as while a stream elects
// its leader) is sent again, and the records after it on its subject wait
// for it: the stream holds them in order. Lost for longer than the request,
// the upload fails with none of the records after it in the stream.
TEST_F(JetStreamTest, ARecordSentAgainKeepsItsPlaceOnItsSubject) {
  start_nats(1);
  auto o = options();
  std::map<std::string, int> losses{{"a1/events/3", 1}, {"a1/events/17", 2}};
  o.lose_publication = [&](const std::string& id) {
    auto it = losses.find(id);
    if (it == losses.end() || it->second == 0) return false;
    --it->second;
    return true;
  };
  auto store = collector(o);
  auto b1 = make_batch(1, 30);
  auto result = store->store({b1.upload})[0];
  ASSERT_EQ(result.status, UploadStatus::stored) << result.error;
  EXPECT_EQ(losses["a1/events/17"], 0) << "each loss was seen";
  auto got = stored();
  EXPECT_EQ(got, range(1, 30)) << difference(got, range(1, 30));

  losses["a1/events/35"] = 1000000;
  auto b2 = make_batch(31, 40);
  result = store->store({b2.upload})[0];
  EXPECT_EQ(result.status, UploadStatus::failed);
  EXPECT_NE(result.error.find("a1/events/35"), std::string::npos) << result.error;
  got = stored();
  EXPECT_EQ(got, range(1, 34)) << difference(got, range(1, 34));
  losses.clear();
  result = store->store({b2.upload})[0];
  ASSERT_EQ(result.status, UploadStatus::stored) << result.error;
  got = stored();
  EXPECT_EQ(got, range(1, 40)) << difference(got, range(1, 40));
}

// The node leading the stream is killed, then (it back) the one leading the
// marks' bucket: the next uploads wait for the new leaders (their requests
// asked again) instead of failing back to the agent.
TEST_F(JetStreamTest, LosingTheLeadersDelaysUploadsButDoesNotFailThem) {
  start_nats(3);
  auto o = options(3);
  o.request_timeout = std::chrono::milliseconds(15000);  // elections take a second or two; slow machines more
  auto store = collector(o);
  auto b1 = make_batch(1, 50);
  ASSERT_EQ(store->store({b1.upload})[0].status, UploadStatus::stored);
  uint64_t next = 51;
  for (const char* stream : {"OUTPOST", "KV_outpost-marks"}) {
    std::string leader = stream_leader(nats->urls(), stream);
    ASSERT_EQ(leader.size(), 2u) << stream << " has no leader";
    size_t node = static_cast<size_t>(leader[1] - '1');
    nats->kill9(node);
    auto b = make_batch(next, next + 49);
    auto result = store->store({b.upload})[0];
    EXPECT_EQ(result.status, UploadStatus::stored) << "with " << stream << "'s leader lost: " << result.error;
    next += 50;
    nats->start(node);
    nats->wait_ready(node);
    for (const char* s : {"OUTPOST", "KV_outpost-marks"})  // caught up, before the next node goes
      ASSERT_TRUE(eventually([&] { return replicas_current(nats->urls(), s, 3); }, std::chrono::seconds(60))) << s;
  }
  auto got = stored();
  EXPECT_EQ(got, range(1, 150)) << difference(got, range(1, 150));
}

// Two collectors take turns with one agent's uploads, as an agent failing
// over between them would, while a node of a three-node cluster is killed
// and comes back: every record once, in order.
TEST_F(JetStreamTest, AClusterThatLosesANodeKeepsEveryRecordOnce) {
  start_nats(3);
  auto a = collector(options(3));
  auto b = collector(options(3));
  uint64_t mark = 0;
  const uint64_t last = 3000;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  for (uint64_t next = 1, round = 0; next <= last; ++round) {
    if (round == 10) nats->kill9(1);
    if (round == 40) nats->start(1);
    auto& store = (round / 3) % 2 ? *a : *b;
    auto batch = make_batch(next, std::min(next + 49, last));
    batch.upload.after = mark;
    auto result = store.store({batch.upload})[0];
    if (result.status == UploadStatus::stored) {
      mark = result.mark;
      next = mark + 1;
    } else {  // sent again after a pause, to the other collector (while the cluster elects leaders)
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "still failing: " << result.error;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  nats->wait_ready(1);
  EXPECT_EQ(stored(), range(1, last));
  EXPECT_EQ(a->marks("a1")[static_cast<size_t>(Lane::EVENTS)], last);
}

// Every regular file under `root` but those of the directories named in
// `skip`, with its content.
std::map<std::string, std::string> files_under(const std::filesystem::path& root, const std::string& skip) {
  std::map<std::string, std::string> out;
  for (auto it = std::filesystem::recursive_directory_iterator(root); it != decltype(it)(); ++it) {
    if (it->is_directory() && it->path().filename() == skip) {
      it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file()) out[std::filesystem::relative(it->path(), root).string()] = slurp(it->path());
  }
  return out;
}

struct JetStreamExport : JetStreamTest {
  std::filesystem::path exported = tmp.path("exported");
  ExportOptions export_options() {
    ExportOptions o;
    o.nats.servers = nats->urls();
    o.idle = std::chrono::milliseconds(300);
    return o;
  }
};

// The same uploads through the jsonl backend and through the stream and
// `export`: the same files, byte for byte; a second export adds only what
// came since.
TEST_F(JetStreamExport, WritesTheFilesTheJsonlBackendWrites) {
  start_nats(1);
  auto stream = collector(options());
  CollectorStore jsonl(tmp.path("jsonl"));
  auto b1 = make_batch(1, 30, "Test.Art");
  auto b2 = make_batch(31, 50, "Linux.Other");
  for (auto* store : std::initializer_list<RowStore*>{stream.get(), &jsonl})
    for (auto& r : store->store({b1.upload, b2.upload})) ASSERT_EQ(r.status, UploadStatus::stored) << r.error;
  auto report = export_jsonl(export_options(), exported);
  EXPECT_EQ(report.messages, 50u);
  auto expected = files_under(tmp.path("jsonl"), ".collector");
  ASSERT_EQ(expected.size(), 2u);
  EXPECT_EQ(files_under(exported, ".export"), expected);

  auto b3 = make_batch(51, 60, "Test.Art");
  for (auto* store : std::initializer_list<RowStore*>{stream.get(), &jsonl})
    ASSERT_EQ(store->store({b3.upload})[0].status, UploadStatus::stored);
  report = export_jsonl(export_options(), exported);
  EXPECT_EQ(report.messages, 10u);
  EXPECT_EQ(files_under(exported, ".export"), files_under(tmp.path("jsonl"), ".collector"));
}

// An export that dies after writing a batch, before it recorded so: the
// next run cuts the batch back and writes it once.
TEST_F(JetStreamExport, AnExportThatDiesMidBatchWritesEachLineOnce) {
  start_nats(1);
  auto stream = collector(options());
  CollectorStore jsonl(tmp.path("jsonl"));
  auto b = make_batch(1, 100);
  for (auto* store : std::initializer_list<RowStore*>{stream.get(), &jsonl})
    ASSERT_EQ(store->store({b.upload})[0].status, UploadStatus::stored);
  auto dying = export_options();
  dying.batch = 16;
  int batches = 0;
  dying.after_data_sync = [&] {
    if (++batches == 3) throw std::runtime_error("the export dies here");
  };
  EXPECT_THROW(export_jsonl(dying, exported), std::runtime_error);
  EXPECT_GT(slurp(exported / "a1" / "Test.Art" / files_under(tmp.path("jsonl") / "a1" / "Test.Art", "").begin()->first).size(), 0u);

  auto report = export_jsonl(export_options(), exported);
  EXPECT_EQ(report.files_cut, 1u);
  EXPECT_EQ(files_under(exported, ".export"), files_under(tmp.path("jsonl"), ".collector"));
  EXPECT_EQ(stored_seqs(exported), range(1, 100));
}

}  // namespace
}  // namespace outpost::net

namespace outpost {
namespace {

// Real processes: an agent, a collector storing into a three-node cluster
// (R=3); the collector and a NATS node are killed with -9 while rows flow.
struct JetStreamEndToEnd : EndToEnd {
  std::unique_ptr<NatsCluster> nats;
  void SetUp() override {
    ASSERT_TRUE(NatsCluster::available()) << kNatsServer << " is missing: scripts/install-deps.sh installs it";
    nats = std::make_unique<NatsCluster>(tmp, 3);
    nats->start_all();
    collector_args = {"--storage", "jetstream", "--nats", nats->urls_joined(), "--nats-replicas", "3"};
  }
  std::vector<uint64_t> delivered_to_stream() {
    return stream_values(read_stream(nats->urls(), "OUTPOST"), "outpost.agent-1.", "Seq");
  }
};

TEST_F(JetStreamEndToEnd, KillingTheCollectorAndANatsNodeLosesAndDuplicatesNothing) {
  start_collector();
  const uint64_t rows = 6000;
  start_agent(rows, 1500);
  ASSERT_TRUE(eventually([&] { return delivered_to_stream().size() >= 1000; }, std::chrono::seconds(30)))
      << slurp(collector_log);
  kill(collector, SIGKILL);
  waitpid(collector, nullptr, 0);
  nats->kill9(2);
  start_collector();  // same port: the agent reconnects after its backoff
  ASSERT_TRUE(eventually([&] { return delivered_to_stream().size() >= 3000; }, std::chrono::seconds(30)))
      << slurp(collector_log);
  nats->start(2);
  ASSERT_TRUE(eventually([&] { return delivered_to_stream().size() >= rows; }, std::chrono::seconds(60)))
      << slurp(collector_log) << slurp(agent_log);
  EXPECT_EQ(delivered_to_stream(), one_to(rows));
  // The collector's own datadir holds no rows: only its state.
  EXPECT_FALSE(fs::exists(data / "agent-1"));

  // `export` writes them as a jsonl collector would have: `delivered()` reads that layout.
  fs::path exported = tmp.path("exported");
  auto [code, out] = command({"export", "--from", "jetstream", "--to", "jsonl", exported.string(), "--nats",
                              nats->urls_joined()});
  EXPECT_EQ(code, 0) << out;
  data = exported;
  EXPECT_EQ(delivered(), one_to(rows)) << out;
}

// The agent knows two collectors (link.addresses); each is killed in turn
// while rows flow, and the other resumes from the marks in NATS.
TEST_F(JetStreamEndToEnd, AnAgentFailsOverBetweenTwoCollectorsWithoutLossOrDuplicate) {
  start_collector();
  uint16_t port_b = 0;
  fs::path log_b = tmp.path("collector-b.log");
  pid_t b = spawn_collector(tmp.path("collector-b"), port_b, log_b);
  ASSERT_GT(b, 0);
  const uint64_t rows = 6000;
  AgentOptions o;
  o.targets = {port, port_b};
  start_agent(rows, 1500, o);
  ASSERT_TRUE(eventually([&] { return delivered_to_stream().size() >= 1000; }, std::chrono::seconds(30)))
      << slurp(collector_log);
  kill(collector, SIGKILL);
  waitpid(collector, nullptr, 0);
  ASSERT_TRUE(eventually([&] { return delivered_to_stream().size() >= 3000; }, std::chrono::seconds(30)))
      << slurp(log_b) << slurp(agent_log);
  EXPECT_NE(slurp(log_b).find("agent agent-1 connected"), std::string::npos);
  start_collector();  // A again, same port; then B goes
  kill(b, SIGKILL);
  waitpid(b, nullptr, 0);
  ASSERT_TRUE(eventually([&] { return delivered_to_stream().size() >= rows; }, std::chrono::seconds(60)))
      << slurp(collector_log) << slurp(agent_log);
  EXPECT_EQ(delivered_to_stream(), one_to(rows));
}

}  // namespace
}  // namespace outpost
