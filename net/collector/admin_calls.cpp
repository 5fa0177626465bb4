// The collector's admin side: the admin calls (AdminCalls), served to
// `outpost-collector <command>` on a unix socket (AdminImpl) and to the
// other collectors of a fleet through the relay (take_call); an agent's
// inspector relayed to the collector holding it (RelayedInspector).

#include <capnp/rpc-twoparty.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <random>
#include <set>

#include "net/collector/collector_server.hpp"
#include "net/collector/flat_message.hpp"
#include "net/kj_util.hpp"
#include "schemas/inspector.capnp.h"
#include "schemas/protocol.capnp.h"

namespace outpost::net {
namespace {

using schemas::Lane;

// A type as a value, to pick a template's types from an argument.
template <typename T>
struct template_type {
  using type = T;
};

}  // namespace

// --- The admin calls, for the admin interface (outpost-collector <command>,
// over a unix socket) and for calls another collector sent through the relay

class CollectorServer::AdminCalls {
 public:
  using Admin = protocol::Admin;
  explicit AdminCalls(CollectorServer& server) : server_(server) {}

  kj::Promise<void> collect(Admin::CollectParams::Reader params, Admin::CollectResults::Builder results) {
    std::string agent = checked_agent(params.getAgent());
    check_takes(agent, params.getRequest().getDefinition().size() > 0);
    return check_met(agent, params.getNewAgent())
        .then([this] { return server_.writer_.run([&state = server_.state_] { return state.next_flow_ids(1); }); })
        .then([this, params, results, agent](uint64_t flow) mutable -> kj::Promise<void> {
          auto given = params.getRequest();
          capnp::MallocMessageBuilder message;
          auto request = message.initRoot<protocol::CollectRequest>();
          request.setArtifact(given.getArtifact());
          request.setVql(given.getVql());
          request.setDefinition(given.getDefinition());
          request.setParameters(given.getParameters());
          request.setFlowId(flow);
          set_request_id(request);
          auto queue = [this, agent, flow, stored = encode_pending(request.asReader())] {
            return queue_request(agent, stored).then([agent, flow] {
              spdlog::info("collector: collection {} queued for agent {}", flow, agent);
            });
          };
          results.setFlowId(flow);
          auto it = server_.agents_.find(agent);
          if (it == server_.agents_.end()) {
            results.setQueued(true);
            return queue();
          }
          auto req = it->second.controller.collectRequest();
          req.setRequest(request.asReader());
          return req.send().then(
              [agent, flow](auto) -> kj::Promise<void> {
                spdlog::info("collector: agent {} started collection {}", agent, flow);
                return kj::READY_NOW;
              },
              [results, queue](kj::Exception&& e) mutable -> kj::Promise<void> {
                if (!disconnected(e)) throw kj::mv(e);  // the agent's own refusal, for the caller
                results.setQueued(true);
                return queue();  // the same request id: the agent runs it once
              });
        });
  }

  kj::Promise<void> cancel(Admin::CancelParams::Reader params, Admin::CancelResults::Builder results) {
    std::string agent = checked_agent(params.getAgent());
    uint64_t flow = params.getFlowId();
    struct Known {
      std::vector<AdminState::Queued> queued;
      uint64_t given_below;
    };
    return check_met(agent, std::nullopt)
        .then([this, agent] {
          return server_.writer_.run([&state = server_.state_, agent] {
            return Known{state.queued_requests(agent), state.flows_given_below()};
          });
        })
        .then([this, agent, flow, results](Known known) mutable -> kj::Promise<void> {
          // Not sent yet: dropping it from the queue is the whole cancel. One
          // being handed to the agent right now may run: the cancel goes to the
          // agent (after it, on the same connection).
          auto pushing = server_.pushing_.find(agent);
          for (auto& q : known.queued) {
            Decoded<protocol::PendingRequest> pending(q.encoded);
            if (pending.get().isCollect() && pending.get().getCollect().getFlowId() == flow) {
              if (pushing != server_.pushing_.end() && pushing->second == q.key) break;
              results.setOutcome(protocol::CancelOutcome::NOT_SENT);
              return server_.writer_.run(
                  [&state = server_.state_, agent, key = q.key] { state.remove_request(agent, key); });
            }
          }
          capnp::MallocMessageBuilder message;
          message.initRoot<protocol::PendingRequest>().setCancel(flow);
          auto queue = [this, agent,
                        stored = encode<protocol::PendingRequest>(message.getRoot<protocol::PendingRequest>().asReader())] {
            return queue_request(agent, stored);
          };
          auto it = server_.agents_.find(agent);
          if (it == server_.agents_.end()) {
            // The agent would refuse it when it connects: say so now. (A connected
            // agent says why itself: a configured query, say.)
            if (flow < protocol::FIRST_FLOW_ID || (known.given_below != 0 && flow >= known.given_below))
              throw error_text("no such flow " + std::to_string(flow) + ": this collector never gave it out");
            results.setQueued(true);
            return queue();
          }
          auto req = it->second.controller.cancelRequest();
          req.setFlowId(flow);
          return req.send().then(
              [results](auto resp) mutable -> kj::Promise<void> {
                results.setPurgedRecords(resp.getPurgedRecords());
                results.setOutcome(resp.getOutcome());
                return kj::READY_NOW;
              },
              [results, queue](kj::Exception&& e) mutable -> kj::Promise<void> {
                if (!disconnected(e)) throw kj::mv(e);
                results.setQueued(true);
                return queue();
              });
        });
  }

  kj::Promise<void> setEventTable(Admin::SetEventTableParams::Reader params,
                                  Admin::SetEventTableResults::Builder results) {
    std::string agent = checked_agent(params.getAgent());
    auto entries = params.getArtifacts();
    bool definitions = false;
    for (auto e : entries) definitions = definitions || e.getDefinition().size() > 0;
    check_takes(agent, definitions);
    uint64_t count = entries.size();
    return check_met(agent, params.getNewAgent())
        .then([this, count] {
          return server_.writer_.run([&state = server_.state_, count] { return state.next_flow_ids(count); });
        })
        .then([this, params, results, agent](uint64_t first) mutable -> kj::Promise<void> {
          capnp::MallocMessageBuilder message;
          auto entries = message.initRoot<protocol::EventTable>().initEntries(params.getArtifacts().size());
          size_t i = 0;
          for (auto a : params.getArtifacts()) {
            entries[i].setArtifact(a.getArtifact());
            entries[i].setVql(a.getVql());
            entries[i].setDefinition(a.getDefinition());
            entries[i].setParameters(a.getParameters());
            set_request_id(entries[i]);
            entries[i].setFlowId(first + i);
            ++i;
          }
          auto table = message.getRoot<protocol::EventTable>().asReader();
          std::string stored = table.getEntries().size() ? encode<protocol::EventTable>(table) : "";
          auto keep = [this, agent, stored](bool announce) {
            return server_.writer_.run([&state = server_.state_, agent, stored] { state.set_event_table(agent, stored); })
                .then([this, agent, announce] {
                  if (announce && server_.relay_) server_.relay_->poke(agent);
                });
          };
          auto it = server_.agents_.find(agent);
          if (it == server_.agents_.end()) {
            results.setQueued(true);
            return keep(true);
          }
          auto req = it->second.controller.setEventTableRequest();
          req.setArtifacts(table.getEntries());
          // Stored only once the agent took it: a table it refuses would be refused at every connection.
          return req.send().then([keep](auto) { return keep(false); },
                                 [results, keep](kj::Exception&& e) mutable {
                                   if (!disconnected(e)) throw kj::mv(e);
                                   results.setQueued(true);
                                   return keep(true);
                                 });
        });
  }

  kj::Promise<void> agentStatus(Admin::AgentStatusParams::Reader params, Admin::AgentStatusResults::Builder results) {
    std::string agent = checked_agent(params.getAgent());
    auto it = server_.agents_.find(agent);
    if (it == server_.agents_.end())
      throw error_text("agent " + agent + " is not connected" + (server_.relay_ ? " to any collector" : ""));
    return it->second.controller.statusRequest().send().then(
        [results](auto resp) mutable { results.setJson(resp.getJson()); });
  }

  static std::string checked_agent(kj::StringPtr id) {
    std::string agent = id.cStr();
    if (!valid_agent_id(agent))
      throw error_text("\"" + agent + "\" is not an agent id (1-128 of A-Z a-z 0-9 _ . @ -)");
    return agent;
  }

 private:
  // A mistyped name must not queue requests for nobody.
  // `new_agent`: the caller may queue for an agent yet to connect (nullopt: it may not).
  kj::Promise<void> check_met(const std::string& agent, std::optional<bool> new_agent) {
    if (new_agent.value_or(false) || server_.agents_.count(agent)) return kj::READY_NOW;
    return server_.writer_.run([&state = server_.state_, agent] { return state.known_agent(agent); })
        .then([this, agent, new_agent](bool known) {
          if (known) return;
          throw error_text("no agent " + agent + " has ever connected to this collector" +
                           (server_.relay_ ? " or the others sharing its state" : "") +
                           " (`outpost-collector agents` lists those that have)" +
                           (new_agent ? "; to queue for an agent yet to connect, pass --new-agent" : ""));
        });
  }
  // A connected agent of protocol 1.0 would ignore an artifact definition and
  // run its own artifact of that name.
  void check_takes(const std::string& agent, bool definitions) const {
    if (definitions && server_.agents_.count(agent) && !server_.takes_definitions(agent))
      throw error_text("agent " + agent + " speaks protocol 1.0, which takes no artifact definitions (an agent "
                       "of 1.1 or later does)");
  }
  // Kept for when it connects; a collector of the fleet that holds it now sends it at once.
  kj::Promise<void> queue_request(const std::string& agent, const std::string& stored) {
    return server_.writer_.run([&state = server_.state_, agent, stored] { state.queue_request(agent, stored); })
        .then([this, agent] {
          if (server_.relay_) server_.relay_->poke(agent);
        });
  }
  // 16 bytes the agent tells a request sent again by (protocol.capnp).
  static void set_request_id(protocol::CollectRequest::Builder request) {
    std::random_device random;
    auto id = request.initRequestId(16);
    for (size_t i = 0; i < id.size(); i += 4) {
      uint32_t r = random();
      std::memcpy(id.begin() + i, &r, sizeof r);
    }
  }
  static std::string encode_pending(protocol::CollectRequest::Reader request) {
    capnp::MallocMessageBuilder message;
    message.initRoot<protocol::PendingRequest>().setCollect(request);
    return encode<protocol::PendingRequest>(message.getRoot<protocol::PendingRequest>().asReader());
  }

  CollectorServer& server_;
};

// An agent's inspector through the collector it is connected to: each call
// relayed (its params and results as they are, whatever the method).
class CollectorServer::RelayedInspector final : public capnp::Capability::Server {
 public:
  RelayedInspector(CollectorServer& server, std::string agent) : server_(server), agent_(std::move(agent)) {}

  DispatchCallResult dispatchCall(uint64_t interface, uint16_t method,
                                  capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context) override {
    if (interface != capnp::typeId<inspector::Inspector>())
      return {KJ_EXCEPTION(UNIMPLEMENTED, "not an inspector call"), false};
    auto params = context.getParams();
    std::chrono::milliseconds extra{};
    if (method == 5)  // trace: as long as it was asked to run
      extra = std::chrono::seconds(params.getAs<inspector::Inspector::TraceParams>().getSeconds());
    auto body = encode_any(params);
    auto agent = agent_;
    return {server_.relay_->ask(agent_, "inspector." + std::to_string(method), body, extra)
                .then([context, agent](AdminRelay::Answer answer) mutable {
                  if (answer.kind == AdminRelay::Answer::failed) throw error_text(answer.error);
                  if (answer.kind == AdminRelay::Answer::not_here)
                    throw error_text("agent " + agent + " is not connected to any collector");
                  context.initResults().set(Decoded<capnp::AnyPointer>(answer.body).get());
                }),
            false};
  }

 private:
  CollectorServer& server_;
  std::string agent_;
};

class CollectorServer::AdminImpl final : public protocol::Admin::Server {
 public:
  explicit AdminImpl(CollectorServer& server) : server_(server), calls_(server) {}

  struct Known {
    std::vector<std::string> ids;
    std::vector<std::string> tables;
    std::vector<uint32_t> pending;
  };
  struct Listed {
    Known known;
    std::vector<AgentProgress> progress;
    std::vector<std::string> elsewhere;  // per id: its collector's answer to "where" (an AgentSummary), or ""
  };

  // With a relay, where each agent not connected here is connected: asked
  // all at once (an agent connected nowhere is answered at once by NATS).
  kj::Promise<Listed> where(std::pair<Known, std::vector<AgentProgress>> got) {
    Listed listed{kj::mv(got.first), kj::mv(got.second), {}};
    listed.elsewhere.resize(listed.known.ids.size());
    if (!server_.relay_) return kj::mv(listed);
    auto asks = kj::heapArrayBuilder<kj::Promise<void>>(listed.known.ids.size());
    auto shared = kj::heap<Listed>(kj::mv(listed));
    for (size_t i = 0; i < shared->known.ids.size(); ++i) {
      if (server_.agents_.count(shared->known.ids[i])) {
        asks.add(kj::READY_NOW);
        continue;
      }
      asks.add(server_.relay_->ask(shared->known.ids[i], "where", "")
                   .then([&out = shared->elsewhere[i]](AdminRelay::Answer answer) {
                     if (answer.kind == AdminRelay::Answer::answered) out = kj::mv(answer.body);
                   }));
    }
    auto& result = *shared;
    return kj::joinPromises(asks.finish()).then([&result] { return kj::mv(result); }).attach(kj::mv(shared));
  }

  kj::Promise<void> listAgents(ListAgentsContext context) override {
    std::vector<std::string> connected;
    for (auto& [id, session] : server_.agents_) connected.push_back(id);
    return server_.writer_
        .run([&state = server_.state_, connected] {
          Known k;
          k.ids = state.agents_met();
          auto with = state.agents_with_requests();
          k.ids.insert(k.ids.end(), connected.begin(), connected.end());
          k.ids.insert(k.ids.end(), with.begin(), with.end());
          std::sort(k.ids.begin(), k.ids.end());
          k.ids.erase(std::unique(k.ids.begin(), k.ids.end()), k.ids.end());
          // Only an agent with a table or requests has any to read (a round trip each with jetstream).
          std::set<std::string> has(with.begin(), with.end());
          for (auto& id : k.ids) {
            bool any = has.count(id) > 0;
            k.tables.push_back(any ? state.event_table(id) : std::string());
            k.pending.push_back(any ? static_cast<uint32_t>(state.queued_requests(id).size()) : 0);
          }
          return k;
        })
        .then([this](Known known) {
          // The marks and last uploads are the backend's (a round trip each with jetstream).
          return server_.lookups_
              .run([&rows = server_.worker_.rows(), ids = known.ids] {
                std::vector<AgentProgress> progress;
                progress.reserve(ids.size());
                for (auto& id : ids) progress.push_back(rows.progress(id));
                return progress;
              })
              .then([known = kj::mv(known)](std::vector<AgentProgress> progress) mutable {
                return std::make_pair(kj::mv(known), kj::mv(progress));
              });
        })
        .then([this](std::pair<Known, std::vector<AgentProgress>> got) { return where(kj::mv(got)); })
        .then([this, context](Listed got) mutable {
          list(context, got.known.ids, got.known.tables, got.known.pending, got.progress, got.elsewhere);
        });
  }

  kj::Promise<void> collect(CollectContext context) override {
    return route<protocol::Admin::CollectParams, protocol::Admin::CollectResults>("collect", context,
                                                                                  &AdminCalls::collect);
  }
  kj::Promise<void> cancel(CancelContext context) override {
    return route<protocol::Admin::CancelParams, protocol::Admin::CancelResults>("cancel", context,
                                                                                &AdminCalls::cancel);
  }
  kj::Promise<void> setEventTable(SetEventTableContext context) override {
    return route<protocol::Admin::SetEventTableParams, protocol::Admin::SetEventTableResults>(
        "setEventTable", context, &AdminCalls::setEventTable);
  }
  kj::Promise<void> agentStatus(AgentStatusContext context) override {
    return route<protocol::Admin::AgentStatusParams, protocol::Admin::AgentStatusResults>("agentStatus", context,
                                                                                          &AdminCalls::agentStatus);
  }

  kj::Promise<void> storage(StorageContext context) override {
    context.getResults().setBackend(server_.worker_.rows().backend());
    return kj::READY_NOW;
  }

  kj::Promise<void> inspect(InspectContext context) override {
    std::string agent = AdminCalls::checked_agent(context.getParams().getAgent());
    auto it = server_.agents_.find(agent);
    if (it == server_.agents_.end() && server_.relay_) {
      // Each call goes to the collector holding the agent when it is made.
      context.getResults().setInspector(
          capnp::Capability::Client(kj::heap<RelayedInspector>(server_, agent)).castAs<inspector::Inspector>());
      return kj::READY_NOW;
    }
    if (it == server_.agents_.end()) throw error_text("agent " + agent + " is not connected");
    // Pipelined: the caller's calls go to the agent through this collector.
    context.getResults().setInspector(it->second.controller.inspectorRequest().send().getInspector());
    return kj::READY_NOW;
  }

 private:
  // Runs `local` here when the agent is connected here or this collector is
  // alone; else sends it to the collector holding the agent, and runs it
  // here (which queues) when no collector does.
  template <typename P, typename R, typename Context>
  kj::Promise<void> route(const char* name, Context context,
                          kj::Promise<void> (AdminCalls::*local)(typename P::Reader, typename R::Builder)) {
    auto& calls = calls_;
    std::string agent = AdminCalls::checked_agent(context.getParams().getAgent());
    if (!server_.relay_ || server_.agents_.count(agent))
      return (calls.*local)(context.getParams(), context.getResults());
    return server_.relay_->ask(agent, name, encode<P>(context.getParams()))
        .then([&calls, context, local](AdminRelay::Answer answer) mutable -> kj::Promise<void> {
          switch (answer.kind) {
            case AdminRelay::Answer::answered:
              context.setResults(Decoded<R>(answer.body).get());
              return kj::READY_NOW;
            case AdminRelay::Answer::failed:
              throw error_text(answer.error);
            case AdminRelay::Answer::not_here:
              break;
          }
          return (calls.*local)(context.getParams(), context.getResults());
        });
  }

  void list(ListAgentsContext& context, const std::vector<std::string>& ids, const std::vector<std::string>& tables,
            const std::vector<uint32_t>& pending, const std::vector<AgentProgress>& progress,
            const std::vector<std::string>& elsewhere) {
    auto list = context.getResults().initAgents(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      auto& id = ids[i];
      auto& entry = progress[i];
      auto a = list[i];
      a.setId(id);
      a.setLastUploadNs(entry.last_upload_ns);
      auto marks = a.initMarks(entry.marks.size());
      for (size_t l = 0; l < entry.marks.size(); ++l) {
        marks[l].setLane(static_cast<Lane>(l));
        marks[l].setSeq(entry.marks[l]);
      }
      if (auto it = server_.agents_.find(id); it != server_.agents_.end()) {
        a.setConnected(true);
        a.setPeer(it->second.peer);
        a.setConnectedNs(it->second.connected_ns);
      } else if (!elsewhere[i].empty()) {
        auto there = Decoded<protocol::AgentSummary>(elsewhere[i]);
        a.setConnected(true);
        a.setPeer(there.get().getPeer());
        a.setConnectedNs(there.get().getConnectedNs());
        a.setCollector(there.get().getCollector());
      }
      if (!tables[i].empty()) a.setEventTable(Decoded<protocol::EventTable>(tables[i]).get().getEntries());
      a.setPendingRequests(pending[i]);
    }
  }

  CollectorServer& server_;
  AdminCalls calls_;
};

kj::Promise<std::string> CollectorServer::relayed_inspector_call(AgentSession& session, const AdminRelay::Call& call) {
  uint16_t method = 0;
  try {
    method = static_cast<uint16_t>(std::stoul(call.name.substr(std::strlen("inspector."))));
  } catch (const std::exception&) {
    throw error_text("no inspector call \"" + call.name + "\"");
  }
  if (session.inspector == nullptr)
    session.inspector = capnp::Capability::Client(session.controller.inspectorRequest().send().getInspector());
  auto request = KJ_ASSERT_NONNULL(session.inspector).typelessRequest(capnp::typeId<inspector::Inspector>(), method,
                                                                        nullptr);
  Decoded<capnp::AnyPointer> params(call.body);
  request.set(params.get());
  return request.send().then([](capnp::Response<capnp::AnyPointer> response) { return encode_any(response); });
}

void CollectorServer::take_call(AdminRelay::Call call) {
  auto it = agents_.find(call.agent);
  if (call.name == "push") {
    if (it != agents_.end()) push_requests_now(call.agent);
    return;
  }
  if (it == agents_.end()) {
    relay_->answer(call, {AdminRelay::Answer::not_here, {}, {}});
    return;
  }
  if (call.name == "where") {
    capnp::MallocMessageBuilder message;
    auto here = message.initRoot<protocol::AgentSummary>();
    here.setId(call.agent);
    here.setConnected(true);
    here.setPeer(it->second.peer);
    here.setConnectedNs(it->second.connected_ns);
    here.setCollector(address_);
    relay_->answer(call, {AdminRelay::Answer::answered, encode<protocol::AgentSummary>(here.asReader()), {}});
    return;
  }
  using Admin = protocol::Admin;
  // The call's params and results live until it is answered.
  auto run = [&](auto params_type, auto results_type, auto local) -> kj::Promise<std::string> {
    using P = typename decltype(params_type)::type;
    using R = typename decltype(results_type)::type;
    auto calls = kj::heap<AdminCalls>(*this);
    auto params = kj::heap<Decoded<P>>(call.body);
    auto results = kj::heap<capnp::MallocMessageBuilder>();
    auto& built = *results;
    return ((*calls).*local)(params->get(), results->initRoot<R>())
        .then([&built] { return encode<R>(built.getRoot<R>().asReader()); })
        .attach(kj::mv(calls), kj::mv(params), kj::mv(results));
  };
  kj::Promise<std::string> answer = nullptr;
  try {
    if (call.name == "collect")
      answer = run(template_type<Admin::CollectParams>{}, template_type<Admin::CollectResults>{}, &AdminCalls::collect);
    else if (call.name == "cancel")
      answer = run(template_type<Admin::CancelParams>{}, template_type<Admin::CancelResults>{}, &AdminCalls::cancel);
    else if (call.name == "setEventTable")
      answer = run(template_type<Admin::SetEventTableParams>{}, template_type<Admin::SetEventTableResults>{},
                   &AdminCalls::setEventTable);
    else if (call.name == "agentStatus")
      answer = run(template_type<Admin::AgentStatusParams>{}, template_type<Admin::AgentStatusResults>{},
                   &AdminCalls::agentStatus);
    else if (call.name.rfind("inspector.", 0) == 0)
      answer = relayed_inspector_call(it->second, call);
    else
      throw error_text("no admin call \"" + call.name + "\"");
  } catch (const kj::Exception& e) {  // a malformed call
    answer = kj::cp(e);
  }
  tasks_.add(answer.then(
      [this, call](std::string body) { relay_->answer(call, {AdminRelay::Answer::answered, std::move(body), {}}); },
      [this, call](kj::Exception&& e) {
        relay_->answer(call, {AdminRelay::Answer::failed, {}, e.getDescription().cStr()});
      }));
}

kj::Promise<void> CollectorServer::start_admin() {
  auto& path = config_.admin_socket;
  if (path.size() >= sizeof(sockaddr_un{}.sun_path))
    throw std::runtime_error("admin socket path " + path + " is longer than " +
                             std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) +
                             " bytes; choose a shorter one with --admin-socket");
  ::unlink(path.c_str());  // a socket left by a collector that died (the datadir lock is ours)
  return io_.provider->getNetwork().parseAddress("unix:" + path).then([this](kj::Own<kj::NetworkAddress> addr) {
    admin_listener_ = addr->listen();
    ::chmod(config_.admin_socket.c_str(), 0600);
    tasks_.add(accept_loop(
        *admin_listener_, "an admin command", [this](kj::Own<kj::AsyncIoStream> s) { take_admin(kj::mv(s)); }));
  });
}

void CollectorServer::take_admin(kj::Own<kj::AsyncIoStream> stream) {
  auto network = kj::heap<capnp::TwoPartyVatNetwork>(*stream, capnp::rpc::twoparty::Side::SERVER);
  auto rpc = kj::heap<capnp::RpcSystem<capnp::rpc::twoparty::VatId>>(
      capnp::makeRpcServer(*network, kj::heap<AdminImpl>(*this)));
  auto done = network->onDisconnect();
  // Attachments are destroyed last first: the RPC system before the network it
  // uses, the network before its stream (a connection still open when the
  // loop ends is torn down in that order).
  tasks_.add(done.attach(kj::mv(stream), kj::mv(network), kj::mv(rpc)));
}

}  // namespace outpost::net
