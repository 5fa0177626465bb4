// The collector's memory budget and per-upload failures, in one process
// over loopback: several agents upload far more than the budget at once,
// connections stop reading while the budget is spent, and every row is
// stored; an upload whose file cannot be opened fails alone. And the
// collector process says when it stops and what it stored.

#include <gtest/gtest.h>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <fstream>
#include <iostream>
#include <regex>

#include "net/collector/collector_server.hpp"
#include "net/collector/collector_store.hpp"
#include "tests/process_util.hpp"
#include "tests/temp_dir.hpp"

namespace outpost::net {
namespace {
using outpost::testing::TempDir;
using outpost::testing::eventually;
using outpost::testing::slurp;
namespace fs = std::filesystem;

struct Agent {
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyVatNetwork> network;
  kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> rpc;
  protocol::Session::Client session = nullptr;

  Agent(kj::AsyncIoContext& io, uint16_t port, const std::string& id) {
    stream = io.provider->getNetwork().parseAddress("127.0.0.1", port).wait(io.waitScope)->connect().wait(io.waitScope);
    network = kj::heap<capnp::TwoPartyVatNetwork>(*stream, capnp::rpc::twoparty::Side::CLIENT);
    rpc = kj::heap<capnp::RpcSystem<capnp::rpc::twoparty::VatId>>(capnp::makeRpcClient(*network));
    capnp::MallocMessageBuilder vat;
    auto vat_id = vat.initRoot<capnp::rpc::twoparty::VatId>();
    vat_id.setSide(capnp::rpc::twoparty::Side::SERVER);
    auto hello = rpc->bootstrap(vat_id).castAs<protocol::Collector>().helloRequest();
    hello.initAgent().setMajorVersion(protocol::MAJOR_VERSION);
    hello.getAgent().setClaimedId(id);
    hello.setController(nullptr);
    session = hello.send().wait(io.waitScope).getSession();
  }
};

// A record of about 1 KiB: one row of a long string.
std::vector<kj::byte> record_bytes(uint64_t seq, const std::string& artifact = "Mem.Test") {
  schemas::RowBatchWriter w(1, artifact.c_str(), "q", Lane::RESULTS, {"N", "S"});
  auto row = w.add_row();
  row[0].setUint64(seq);
  row[1].setText(std::string(1000, 'x').c_str());
  auto e = w.finish();
  return {e.bytes().begin(), e.bytes().end()};
}

uint64_t lines_under(const fs::path& dir) {
  uint64_t lines = 0;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) lines += std::count(std::istreambuf_iterator<char>(std::ifstream(e.path()).rdbuf()), {}, '\n');
  return lines;
}

TEST(CollectorMemory, ManyUploadsFromSeveralAgentsStayWithinTheBudgetAndAllAreStored) {
  constexpr int kAgents = 4, kUploads = 40, kRecords = 32;
  constexpr uint64_t kBudget = 512 << 10;
  TempDir tmp;
  auto io = kj::setupAsyncIo();
  CollectorStore store(tmp.path("data"));
  StorageWorker worker(store, kBudget);
  CollectorConfig config;
  config.port = 0;
  config.tls.insecure = true;
  CollectorServer server(io, config, store, worker);
  uint16_t port = server.start().wait(io.waitScope);

  std::vector<std::unique_ptr<Agent>> agents;
  for (int a = 0; a < kAgents; ++a) agents.push_back(std::make_unique<Agent>(io, port, "m" + std::to_string(a)));
  auto payload = record_bytes(1);
  uint64_t sent = 0;
  std::vector<kj::Promise<uint64_t>> answers;
  for (int u = 0; u < kUploads; ++u)
    for (auto& agent : agents) {  // all at once: each agent's uploads in order
      auto req = agent->session.uploadRequest();
      req.setLane(Lane::RESULTS);
      req.setAfter(u * kRecords);
      auto list = req.initRecords(kRecords);
      for (int r = 0; r < kRecords; ++r) {
        list[r].setSeq(u * kRecords + r + 1);
        list[r].setData(kj::arrayPtr(payload.data(), payload.size()));
        sent += payload.size();
      }
      answers.push_back(req.send().then([](auto response) { return response.getStoredThrough(); }));
    }
  ASSERT_GT(sent, 8 * kBudget);
  for (size_t i = 0; i < answers.size(); ++i)
    EXPECT_EQ(answers[i].wait(io.waitScope), (i / kAgents + 1) * kRecords) << "upload " << i;

  for (int a = 0; a < kAgents; ++a)
    EXPECT_EQ(lines_under(tmp.path("data") / ("m" + std::to_string(a))), uint64_t{kUploads * kRecords});
  auto stats = worker.stats();
  EXPECT_EQ(stats.uploads, uint64_t{kAgents * kUploads});
  EXPECT_EQ(stats.failures, 0u);
  // The budget, a read chunk per connection, one upload's JSON (about 40 KiB).
  EXPECT_LE(stats.peak_bytes, kBudget + kAgents * kReadChunk + (64 << 10)) << "held " << stats.peak_bytes;
  EXPECT_GE(stats.peak_bytes, kBudget / 2) << "the budget was never used: the test shows nothing";
  std::cout << "peak " << stats.peak_bytes << " bytes of a " << kBudget << "-byte budget; " << sent << " sent\n";
  // What the connections read besides uploads (hello, returns) is theirs until they close.
  agents.clear();
  for (int i = 0; i < 1000 && server.connections() > 0; ++i) io.provider->getTimer().afterDelay(10 * kj::MILLISECONDS).wait(io.waitScope);
  ASSERT_EQ(server.connections(), 0u);
  EXPECT_EQ(worker.stats().held_bytes, 0u) << "memory still counted after every connection closed";
}

TEST(CollectorMemory, AnUploadThatCannotBeStoredFailsAloneThroughTheWorker) {
  TempDir tmp;
  auto io = kj::setupAsyncIo();  // an event port that wakes for the storage thread
  auto& wait = io.waitScope;
  fs::path data = tmp.path("data");
  CollectorStore store(data);
  StorageWorker worker(store);
  std::vector<std::vector<kj::byte>> keep;
  auto upload = [&](const std::string& agent) {
    keep.push_back(record_bytes(1));
    return Upload{agent, Lane::RESULTS, 0, {{1, kj::arrayPtr(keep.back().data(), keep.back().size())}}, {}};
  };
  auto blocked = upload("b2");
  fs::create_directories(data / render_record("b2", Lane::RESULTS, blocked.records[0]).file);
  auto first = worker.submit(upload("b1"));
  auto failing = worker.submit(blocked);
  auto last = worker.submit(upload("b3"));
  EXPECT_EQ(first.wait(wait).mark, 1u);
  try {
    failing.wait(wait);
    ADD_FAILURE() << "an upload whose file is a directory was stored";
  } catch (const kj::Exception& e) {
    EXPECT_NE(std::string(e.getDescription().cStr()).find("cannot open"), std::string::npos)
        << e.getDescription().cStr();
  }
  EXPECT_EQ(last.wait(wait).mark, 1u);
  EXPECT_EQ(lines_under(data / "b1") + lines_under(data / "b3"), 2u);
  EXPECT_EQ(store.marks("b2")[static_cast<size_t>(Lane::RESULTS)], 0u);
  EXPECT_EQ(worker.stats().failures, 1u);
}

TEST(CollectorProcess, LogsItsStopWithWhatItStored) {
  TempDir tmp;
  outpost::testing::Processes processes;
  fs::path log = tmp.path("collector.log");
  pid_t pid = processes.add(outpost::testing::spawn(
      {OUTPOST_COLLECTOR, "--datadir", tmp.path("data").string(), "--listen", "127.0.0.1:0", "--insecure"}, log));
  std::smatch m;
  std::string out;
  ASSERT_TRUE(eventually([&] {
    out = slurp(log);
    return std::regex_search(out, m, std::regex("listening on port (\\d+)"));
  })) << out;
  {
    auto io = kj::setupAsyncIo();
    Agent agent(io, static_cast<uint16_t>(std::stoi(m[1])), "s1");
    auto payload = record_bytes(1);
    auto req = agent.session.uploadRequest();
    req.setLane(Lane::RESULTS);
    auto list = req.initRecords(3);
    for (int r = 0; r < 3; ++r) {
      list[r].setSeq(r + 1);
      list[r].setData(kj::arrayPtr(payload.data(), payload.size()));
    }
    EXPECT_EQ(req.send().wait(io.waitScope).getStoredThrough(), 3u);
  }
  kill(pid, SIGTERM);
  EXPECT_EQ(outpost::testing::wait_exit(pid), 0);
  out = slurp(log);
  EXPECT_NE(out.find("SIGTERM received, stopping"), std::string::npos) << out;
  EXPECT_NE(out.find("stopped after SIGTERM"), std::string::npos) << out;
  EXPECT_NE(out.find("in this run 1 uploads, 3 records stored"), std::string::npos) << out;
}

}  // namespace
}  // namespace outpost::net
