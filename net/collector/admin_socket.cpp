// The collector's admin socket (`outpost-collector <command>`), served on a
// thread and kj event loop of its own (AdminLoop), so that a command waits
// neither for its turn among thousands of agents' connections nor for a
// loop that is behind. `agents` and `storage` are answered on that thread
// (the connected agents from CollectorServer::connected(), the state and
// marks on the admin writer's and lookups' threads); what needs an agent's
// connection, or the relay, is run on the agents' loop (its mailbox):
// collect, cancel, event-table, status, and each inspector call; and, with
// a relay (a fleet), `agents`' question of where the agents not connected
// here are (the relay's asks are the agents' loop's).

#include <capnp/rpc-twoparty.h>
#include <kj/io.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <future>
#include <set>
#include <stdexcept>
#include <thread>

#include "net/collector/collector_server.hpp"
#include "net/collector/flat_message.hpp"
#include "net/kj_util.hpp"
#include "schemas/inspector.capnp.h"
#include "schemas/protocol.capnp.h"

namespace outpost::net {

using schemas::Lane;

// An agent's inspector for an admin connection: each call, its params and
// results as they are whatever the method, run on the agents' loop (at the
// agent's connection here, or through the relay at the collector holding it).
class CollectorServer::ForwardedInspector final : public capnp::Capability::Server {
 public:
  ForwardedInspector(CollectorServer& server, std::string agent) : server_(server), agent_(std::move(agent)) {}
  // Its inspector on the agent goes with it (a watch it asked for ends).
  ~ForwardedInspector() {
    server_.mailbox_.post([&server = server_, id = id_] { server.forget_inspector(id); });
  }

  DispatchCallResult dispatchCall(uint64_t interface, uint16_t method,
                                  capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context) override {
    if (interface != capnp::typeId<inspector::Inspector>())
      return {KJ_EXCEPTION(UNIMPLEMENTED, "not an inspector call"), false};
    auto body = encode_any(context.getParams());
    context.releaseParams();
    return {server_.mailbox_
                .run<std::string>([&server = server_, id = id_, agent = agent_, method, body] {
                  return server.inspector_call(id, agent, method, body);
                })
                .then([context](std::string results) mutable {
                  context.initResults().set(Decoded<capnp::AnyPointer>(results).get());
                }),
            false};
  }

 private:
  static uint64_t next_id() {
    static std::atomic<uint64_t> ids{1};
    return ids++;
  }

  CollectorServer& server_;
  std::string agent_;
  const uint64_t id_ = next_id();
};

class CollectorServer::AdminImpl final : public protocol::Admin::Server {
 public:
  explicit AdminImpl(CollectorServer& server) : server_(server) {}

  kj::Promise<void> listAgents(ListAgentsContext context) override {
    struct Listed {
      std::map<std::string, Connected> connected;
      std::vector<std::string> ids, tables;
      std::vector<uint32_t> pending;
      std::vector<AgentProgress> progress;
      std::vector<std::string> elsewhere;  // per id: its holder's AgentSummary, or ""
    };
    // Shared with the writer's and lookups' jobs: a listing whose caller went away may still be running there.
    auto listed = std::make_shared<Listed>();
    listed->connected = server_.connected();
    auto& got = *listed;
    return server_.writer_
        .run([&state = server_.state_, listed] {
          auto& got = *listed;
          got.ids = state.agents_met();
          auto with = state.agents_with_requests();
          for (auto& [id, c] : got.connected) got.ids.push_back(id);
          got.ids.insert(got.ids.end(), with.begin(), with.end());
          std::sort(got.ids.begin(), got.ids.end());
          got.ids.erase(std::unique(got.ids.begin(), got.ids.end()), got.ids.end());
          // Only an agent with a table or requests has any to read (a round trip each with jetstream).
          std::set<std::string> has(with.begin(), with.end());
          for (auto& id : got.ids) {
            bool any = has.count(id) > 0;
            got.tables.push_back(any ? state.event_table(id) : std::string());
            got.pending.push_back(any ? static_cast<uint32_t>(state.queued_requests(id).size()) : 0);
          }
        })
        .then([this, listed] {
          // The marks and last uploads are the backend's (with jetstream, its bucket's: read in one pass).
          return server_.lookups_.run([&rows = server_.worker_.rows(), listed] {
            auto& got = *listed;
            got.progress = rows.progress_each(got.ids);
          });
        })
        .then([this, &got]() -> kj::Promise<void> {
          got.elsewhere.resize(got.ids.size());
          if (!server_.relay_) return kj::READY_NOW;
          // Where each agent not connected here is connected: the relay is the agents' loop's.
          return server_.mailbox_
              .run<std::vector<std::string>>([&server = server_, ids = got.ids] { return server.where(ids); })
              .then([&got](std::vector<std::string> found) { got.elsewhere = kj::mv(found); });
        })
        .then([context, &got]() mutable { list(context, got); })
        .attach(kj::mv(listed));  // `got` lives as long as the chain
  }

  kj::Promise<void> collect(CollectContext context) override {
    return forward<protocol::Admin::CollectParams, protocol::Admin::CollectResults>("collect", context);
  }
  kj::Promise<void> cancel(CancelContext context) override {
    return forward<protocol::Admin::CancelParams, protocol::Admin::CancelResults>("cancel", context);
  }
  kj::Promise<void> setEventTable(SetEventTableContext context) override {
    return forward<protocol::Admin::SetEventTableParams, protocol::Admin::SetEventTableResults>("setEventTable",
                                                                                                 context);
  }
  kj::Promise<void> agentStatus(AgentStatusContext context) override {
    return forward<protocol::Admin::AgentStatusParams, protocol::Admin::AgentStatusResults>("agentStatus", context);
  }

  kj::Promise<void> storage(StorageContext context) override {
    auto results = context.getResults();
    auto& rows = server_.worker_.rows();
    results.setBackend(rows.backend());
    if (auto access = rows.stream_access()) {
      auto out = results.initStream();
      auto servers = out.initServers(static_cast<unsigned>(access->servers.size()));
      for (unsigned i = 0; i < servers.size(); ++i) servers.set(i, access->servers[i]);
      out.setStream(access->stream);
      out.setSubjectPrefix(access->subject_prefix);
      out.setCa(access->ca);
      out.setCert(access->cert);
      out.setKey(access->key);
      out.setCreds(access->creds);
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> inspect(InspectContext context) override {
    std::string agent = checked_agent(context.getParams().getAgent());
    // Alone, an agent not connected here is connected nowhere; in a fleet
    // each call goes to the collector holding the agent when it is made.
    if (!server_.relay_ && !server_.connected_here(agent)) throw error_text("agent " + agent + " is not connected");
    context.getResults().setInspector(
        capnp::Capability::Client(kj::heap<ForwardedInspector>(server_, agent)).castAs<inspector::Inspector>());
    return kj::READY_NOW;
  }

 private:
  // Runs on the agents' loop (CollectorServer::admin_call), its params and results encoded.
  template <typename P, typename R, typename Context>
  kj::Promise<void> forward(const char* name, Context context) {
    std::string body = encode<P>(context.getParams());
    return server_.mailbox_
        .run<std::string>([&server = server_, name = std::string(name), body] {
          return server.admin_call(name, body, true);
        })
        .then([context](std::string results) mutable { context.setResults(Decoded<R>(results).get()); });
  }

  template <typename Listed>
  static void list(ListAgentsContext& context, const Listed& got) {
    auto list = context.getResults().initAgents(got.ids.size());
    for (size_t i = 0; i < got.ids.size(); ++i) {
      auto& id = got.ids[i];
      auto& entry = got.progress[i];
      auto a = list[i];
      a.setId(id);
      a.setLastUploadNs(entry.last_upload_ns);
      auto marks = a.initMarks(entry.marks.size());
      for (size_t l = 0; l < entry.marks.size(); ++l) {
        marks[l].setLane(static_cast<Lane>(l));
        marks[l].setSeq(entry.marks[l]);
      }
      if (auto it = got.connected.find(id); it != got.connected.end()) {
        a.setConnected(true);
        a.setPeer(it->second.peer);
        a.setConnectedNs(it->second.connected_ns);
      } else if (!got.elsewhere[i].empty()) {
        auto there = Decoded<protocol::AgentSummary>(got.elsewhere[i]);
        a.setConnected(true);
        a.setPeer(there.get().getPeer());
        a.setConnectedNs(there.get().getConnectedNs());
        a.setCollector(there.get().getCollector());
      }
      if (!got.tables[i].empty()) a.setEventTable(Decoded<protocol::EventTable>(got.tables[i]).get().getEntries());
      a.setPendingRequests(got.pending[i]);
    }
  }

  CollectorServer& server_;
};

// The admin thread: its own event loop, the listening socket, the admin
// connections. Made and destroyed by the agents' loop's thread.
class CollectorServer::AdminLoop final : private kj::TaskSet::ErrorHandler {
 public:
  // Starts the thread on a bound, listening socket; returns once it accepts.
  AdminLoop(CollectorServer& server, kj::AutoCloseFd listening) : server_(server) {
    std::promise<kj::Own<kj::CrossThreadPromiseFulfiller<void>>> ready;
    auto started = ready.get_future();
    thread_ = std::thread([this, fd = listening.release(), &ready] { run(fd, ready); });
    try {
      stop_ = started.get();
    } catch (...) {
      thread_.join();
      throw;
    }
  }
  // Ends the loop (its connections with it; their calls in the agents' loop
  // are answered to nobody) and joins.
  ~AdminLoop() {
    stop_->fulfill();
    thread_.join();
  }

 private:
  void run(int fd, std::promise<kj::Own<kj::CrossThreadPromiseFulfiller<void>>>& ready) {
    kj::AutoCloseFd owned(fd);
    bool started = false;
    try {
      auto io = setup_async_io();
      auto listener = io.lowLevelProvider->wrapListenSocketFd(
          kj::mv(owned), kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC | kj::LowLevelAsyncIoProvider::ALREADY_NONBLOCK);
      kj::TaskSet tasks(*this);  // after the listener: ends first
      tasks.add(accept_loop(*listener, io.provider->getTimer(), "an admin command",
                            [this, &tasks](kj::Own<kj::AsyncIoStream> stream) { serve(kj::mv(stream), tasks); }));
      auto stop = kj::newPromiseAndCrossThreadFulfiller<void>();
      ready.set_value(kj::mv(stop.fulfiller));
      started = true;
      stop.promise.wait(io.waitScope);
    } catch (const kj::Exception& e) {
      if (!started)
        ready.set_exception(std::make_exception_ptr(std::runtime_error(e.getDescription().cStr())));
      else  // a bug: the loop's tasks handle their own failures
        spdlog::error("collector: the admin thread stopped: {}", e.getDescription().cStr());
    }
  }

  void serve(kj::Own<kj::AsyncIoStream> stream, kj::TaskSet& tasks) {
    auto network = kj::heap<capnp::TwoPartyVatNetwork>(*stream, capnp::rpc::twoparty::Side::SERVER);
    auto rpc = kj::heap<capnp::RpcSystem<capnp::rpc::twoparty::VatId>>(
        capnp::makeRpcServer(*network, kj::heap<AdminImpl>(server_)));
    auto done = network->onDisconnect();
    // Attachments are destroyed last first: the RPC system before the network
    // it uses, the network before its stream.
    tasks.add(done.attach(kj::mv(stream), kj::mv(network), kj::mv(rpc)));
  }

  void taskFailed(kj::Exception&& exception) override {
    spdlog::warn("collector: admin command: {}", exception.getDescription().cStr());
  }

  CollectorServer& server_;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop_;
  std::thread thread_;
};

void CollectorServer::start_admin() {
  auto& path = config_.admin_socket;
  auto fail = [&path](const std::string& why) {
    throw std::runtime_error("cannot take admin commands on " + path + ": " + why);
  };
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path)
    fail("the path is longer than " + std::to_string(sizeof addr.sun_path - 1) +
         " bytes; choose a shorter one with --admin-socket");
  std::memcpy(addr.sun_path, path.data(), path.size());
  kj::AutoCloseFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) fail(std::strerror(errno));
  ::unlink(path.c_str());  // a socket left by a collector that died (the datadir lock is ours)
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) fail(std::strerror(errno));
  // Before listen: nobody else can connect in between.
  if (::chmod(path.c_str(), 0600) != 0) fail(std::strerror(errno));
  if (::listen(fd.get(), SOMAXCONN) != 0) fail(std::strerror(errno));
  admin_loop_.reset(new AdminLoop(*this, kj::mv(fd)));
}

void CollectorServer::EndAdminLoop::operator()(AdminLoop* loop) const { delete loop; }

}  // namespace outpost::net
