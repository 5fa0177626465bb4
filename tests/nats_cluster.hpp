#pragma once
// Real nats-server processes for the jetstream tests: one node or a
// three-node JetStream cluster on 127.0.0.1, each with its store in a
// temporary directory, that a test can kill -9 and start again; and a
// reader of everything a stream holds.

#include <gtest/gtest.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <map>
#include <regex>
#include <thread>

#include "tests/process_util.hpp"
#include "tests/temp_dir.hpp"
#include "tools/loopback_port.hpp"

namespace outpost::testing {

using outpost::loopback_port;

// Debian's package (scripts/install-deps.sh installs it).
inline const char* kNatsServer = "/usr/sbin/nats-server";

class NatsCluster {
 public:
  // `nodes` nodes (1: no cluster), not started yet.
  NatsCluster(const TempDir& tmp, int nodes) : tmp_(tmp) {
    for (int i = 0; i < nodes; ++i) nodes_.push_back({loopback_port(), loopback_port(), -1, 0, {}});
  }
  ~NatsCluster() {
    for (size_t i = 0; i < nodes_.size(); ++i) kill9(i);
  }

  static bool available() { return ::access(kNatsServer, X_OK) == 0; }

  std::vector<std::string> extra_args;  // for every node, from its next start (TLS, say)

  void start_all() {
    for (size_t i = 0; i < nodes_.size(); ++i) start(i);
    for (size_t i = 0; i < nodes_.size(); ++i) wait_ready(i);
  }

  // Starts node i (again: same ports, same store) without waiting.
  void start(size_t i) {
    auto& n = nodes_[i];
    std::string name = "n" + std::to_string(i + 1);
    std::vector<std::string> args{kNatsServer, "-a", "127.0.0.1", "-p", std::to_string(n.port), "-n", name,
                                  "-js", "-sd", tmp_.path("nats-" + name).string()};
    if (nodes_.size() > 1) {
      std::string routes;
      for (auto& o : nodes_) routes += (routes.empty() ? "" : ",") + std::string("nats://127.0.0.1:") + std::to_string(o.cluster_port);
      args.insert(args.end(), {"--cluster_name", "outpost-test", "--cluster",
                               "nats://127.0.0.1:" + std::to_string(n.cluster_port), "--routes", routes});
    }
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    n.log = tmp_.path(name + "-" + std::to_string(++n.starts) + ".log");
    n.pid = spawn(args, n.log);
  }

  // Waits until node i serves clients (and, in a cluster, knows a JetStream leader).
  void wait_ready(size_t i) {
    auto& n = nodes_[i];
    bool ready = eventually(
        [&] {
          std::string text = slurp(n.log);
          if (text.find("Server is ready") == std::string::npos) return false;
          // A node back in a cluster that already has its leader may never
          // log one: ask it instead.
          return nodes_.size() == 1 || text.find("metadata leader") != std::string::npos || knows_leader(i);
        },
        std::chrono::seconds(30));
    ASSERT_TRUE(ready) << "nats-server node " << i << " did not become ready:\n" << slurp(n.log);
  }

  // Whether node i answers a JetStream request (it does once it knows the cluster's metadata leader).
  bool knows_leader(size_t i) const {
    natsOptions* o = nullptr;
    natsOptions_Create(&o);
    natsOptions_SetURL(o, url(i).c_str());
    natsOptions_SetTimeout(o, 1000);
    natsOptions_SetAllowReconnect(o, false);
    natsConnection* nc = nullptr;
    bool ok = false;
    if (natsConnection_Connect(&nc, o) == NATS_OK) {
      jsOptions jo;
      jsOptions_Init(&jo);
      jo.Wait = 1000;
      jsCtx* js = nullptr;
      jsAccountInfo* info = nullptr;
      if (natsConnection_JetStream(&js, nc, &jo) == NATS_OK && js_GetAccountInfo(&info, js, nullptr, nullptr) == NATS_OK) {
        ok = true;
        jsAccountInfo_Destroy(info);
      }
      if (js) jsCtx_Destroy(js);
      natsConnection_Destroy(nc);
    }
    natsOptions_Destroy(o);
    return ok;
  }

  void kill9(size_t i) {
    auto& n = nodes_[i];
    if (n.pid > 0 && ::kill(n.pid, SIGKILL) == 0) waitpid(n.pid, nullptr, 0);
    n.pid = -1;
  }

  std::string url(size_t i) const { return "nats://127.0.0.1:" + std::to_string(nodes_[i].port); }
  std::vector<std::string> urls() const {
    std::vector<std::string> out;
    for (size_t i = 0; i < nodes_.size(); ++i) out.push_back(url(i));
    return out;
  }
  std::string urls_joined() const {
    std::string out;
    for (auto& u : urls()) out += (out.empty() ? "" : ",") + u;
    return out;
  }
  std::string log(size_t i) const { return slurp(nodes_[i].log); }

 private:
  struct Node {
    uint16_t port, cluster_port;
    pid_t pid;
    int starts;
    std::filesystem::path log;
  };
  const TempDir& tmp_;
  std::vector<Node> nodes_;
};

// A test with a one-node NATS of its own, started before each test.
struct WithOneNatsNode : ::testing::Test {
  TempDir tmp;
  std::unique_ptr<NatsCluster> nats;
  void SetUp() override {
    ASSERT_TRUE(NatsCluster::available()) << kNatsServer << " is missing: scripts/install-deps.sh installs it";
    nats = std::make_unique<NatsCluster>(tmp, 1);
    nats->start_all();
  }
};

// One message of a stream, as a reader sees it.
struct StreamMessage {
  std::string subject, id, file, data;
};

// A client connection for reading what the collectors wrote.
struct NatsReader {
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  explicit NatsReader(const std::vector<std::string>& urls) {
    natsOptions* opts = nullptr;
    natsOptions_Create(&opts);
    std::vector<const char*> servers;
    for (auto& u : urls) servers.push_back(u.c_str());
    natsOptions_SetServers(opts, servers.data(), static_cast<int>(servers.size()));
    natsStatus s = natsConnection_Connect(&nc, opts);
    natsOptions_Destroy(opts);
    EXPECT_EQ(s, NATS_OK) << "cannot connect to read the stream: " << natsStatus_GetText(s);
    if (s == NATS_OK) natsConnection_JetStream(&js, nc, nullptr);
  }
  ~NatsReader() {
    if (js) jsCtx_Destroy(js);
    if (nc) natsConnection_Destroy(nc);
  }
  NatsReader(const NatsReader&) = delete;
  NatsReader& operator=(const NatsReader&) = delete;
};

inline StreamMessage stream_message(natsMsg* msg) {
  StreamMessage m;
  m.subject = natsMsg_GetSubject(msg);
  const char* v = nullptr;
  if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &v) == NATS_OK) m.id = v;
  if (natsMsgHeader_Get(msg, "Outpost-File", &v) == NATS_OK) m.file = v;
  m.data.assign(natsMsg_GetData(msg) ? natsMsg_GetData(msg) : "", static_cast<size_t>(natsMsg_GetDataLength(msg)));
  return m;
}

// Everything stream `name` holds, in stream order, through an ordered
// consumer (what it held when called; a direct get per message took
// seconds for the tens of thousands of a fleet test), or a direct get of
// each while a cluster cannot make the consumer.
inline std::vector<StreamMessage> read_stream(const std::vector<std::string>& urls, const std::string& name) {
  std::vector<StreamMessage> out;
  NatsReader reader(urls);
  jsCtx* js = reader.js;
  if (!js) return out;
  jsStreamInfo* si = nullptr;
  natsStatus s = js_GetStreamInfo(&si, js, name.c_str(), nullptr, nullptr);
  EXPECT_EQ(s, NATS_OK) << "no stream " << name << ": " << natsStatus_GetText(s);
  if (s != NATS_OK) return out;
  uint64_t last = si->State.LastSeq, count = si->State.Msgs;
  std::string subject = si->Config->SubjectsLen > 0 ? si->Config->Subjects[0] : ">";
  jsStreamInfo_Destroy(si);
  if (count == 0) return out;
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = name.c_str();
  so.Ordered = true;
  so.Config.DeliverPolicy = js_DeliverAll;
  natsSubscription* sub = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  s = js_SubscribeSync(&sub, js, subject.c_str(), nullptr, &so, &jerr);
  if (s != NATS_OK) {  // no consumer while a cluster elects its leaders: a direct get of each
    for (uint64_t seq = 1; seq <= last; ++seq) {
      natsMsg* msg = nullptr;
      natsStatus got = js_GetMsg(&msg, js, name.c_str(), seq, nullptr, &jerr);
      // The stream's leader may be elected meanwhile too: "temporarily unavailable".
      for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
           got != NATS_OK && got != NATS_NOT_FOUND && jerr == JSClusterNotAvailErr &&
           std::chrono::steady_clock::now() < until;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        got = js_GetMsg(&msg, js, name.c_str(), seq, nullptr, &jerr);
      }
      if (got == NATS_NOT_FOUND) continue;  // deleted (none are, by Outpost)
      EXPECT_EQ(got, NATS_OK) << "stream " << name << " sequence " << seq << ": " << natsStatus_GetText(got)
                              << " (JetStream error " << jerr << ")";
      if (got != NATS_OK) continue;
      out.push_back(stream_message(msg));
      natsMsg_Destroy(msg);
    }
    return out;
  }
  for (;;) {
    natsMsg* msg = nullptr;
    natsStatus got = natsSubscription_NextMsg(&msg, sub, 10000);
    EXPECT_EQ(got, NATS_OK) << "stream " << name << ": read " << out.size() << " of " << count << " messages: "
                            << natsStatus_GetText(got);
    if (got != NATS_OK) break;
    jsMsgMetaData* meta = nullptr;
    uint64_t seq = 0;
    if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
      seq = meta->Sequence.Stream;
      jsMsgMetaData_Destroy(meta);
    }
    out.push_back(stream_message(msg));
    natsMsg_Destroy(msg);
    if (seq >= last) break;
  }
  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
  return out;
}

// The name of the node leading stream `name` ("n1"...), or "" if none is known.
inline std::string stream_leader(const std::vector<std::string>& urls, const std::string& name) {
  NatsReader reader(urls);
  jsStreamInfo* si = nullptr;
  std::string leader;
  if (reader.js && js_GetStreamInfo(&si, reader.js, name.c_str(), nullptr, nullptr) == NATS_OK) {
    if (si->Cluster && si->Cluster->Leader) leader = si->Cluster->Leader;
    jsStreamInfo_Destroy(si);
  }
  return leader;
}

// Whether stream `name` has a leader and every other replica is current
// (a node back from a kill has caught up).
inline bool replicas_current(const std::vector<std::string>& urls, const std::string& name, size_t replicas) {
  NatsReader reader(urls);
  jsStreamInfo* si = nullptr;
  bool current = false;
  if (reader.js && js_GetStreamInfo(&si, reader.js, name.c_str(), nullptr, nullptr) == NATS_OK) {
    if (si->Cluster && si->Cluster->Leader && static_cast<size_t>(si->Cluster->ReplicasLen) + 1 == replicas) {
      current = true;
      for (int i = 0; i < si->Cluster->ReplicasLen; ++i)
        current = current && si->Cluster->Replicas[i]->Current && !si->Cluster->Replicas[i]->Offline;
    }
    jsStreamInfo_Destroy(si);
  }
  return current;
}

// The value of `column` ("seq" for the record's own, "Seq" for a synthetic
// row's) in every line of every message on subjects starting with `prefix`.
inline std::vector<uint64_t> stream_values(const std::vector<StreamMessage>& messages, const std::string& prefix,
                                           const std::string& column) {
  std::vector<uint64_t> out;
  std::regex re("\"" + column + "\":(\\d+)");
  for (auto& m : messages) {
    if (m.subject.compare(0, prefix.size(), prefix) != 0) continue;
    size_t at = 0;
    while (at < m.data.size()) {
      size_t end = m.data.find('\n', at);
      if (end == std::string::npos) end = m.data.size();
      std::string line = m.data.substr(at, end - at);
      std::smatch sm;
      if (std::regex_search(line, sm, re)) out.push_back(std::stoull(sm[1]));
      at = end + 1;
    }
  }
  return out;
}

}  // namespace outpost::testing
