// The collector's admin calls on the loop that serves the agents
// (AdminCalls): asked by the admin thread (admin_socket.cpp) through the
// loop's mailbox, and by the other collectors of a fleet through the relay
// (take_call; their `where` calls are answered off the loop: where_here);
// and an agent's inspector, here or at the collector holding it.

#include <spdlog/spdlog.h>

#include <cstring>
#include <optional>
#include <random>

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
          return server_.awaiting_answer(agent, req.send()).then(
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
          return server_.awaiting_answer(agent, req.send()).then(
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
          return server_.awaiting_answer(agent, req.send()).then([keep](auto) { return keep(false); },
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
    return server_.awaiting_answer(agent, it->second.controller.statusRequest().send()).then(
        [results](auto resp) mutable { results.setJson(resp.getJson()); });
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

std::string CollectorServer::checked_agent(kj::StringPtr id) {
  std::string agent = id.cStr();
  if (!valid_agent_id(agent))
    throw error_text("\"" + agent + "\" is not an agent id (1-128 of A-Z a-z 0-9 _ . @ -)");
  return agent;
}

namespace {

// An admin call run here: its params decoded from `body`, its results encoded.
template <typename P, typename R, typename Calls>
kj::Promise<std::string> run_here(kj::Own<Calls> calls, const std::string& body,
                                  kj::Promise<void> (Calls::*local)(typename P::Reader, typename R::Builder)) {
  auto params = kj::heap<Decoded<P>>(body);
  auto results = kj::heap<capnp::MallocMessageBuilder>();
  auto& built = *results;
  auto& c = *calls;
  // The call's params and results live until it is answered.
  return (c.*local)(params->get(), results->initRoot<R>())
      .then([&built] { return encode<R>(built.getRoot<R>().asReader()); })
      .attach(kj::mv(calls), kj::mv(params), kj::mv(results));
}

}  // namespace

kj::Promise<std::string> CollectorServer::admin_call(const std::string& name, const std::string& body, bool route) {
  using Admin = protocol::Admin;
  // Here when the agent is connected here or this collector is alone; else
  // at the collector holding the agent, and here (which queues) when none does.
  auto call = [&](auto params_type, auto results_type, auto local) -> kj::Promise<std::string> {
    using P = typename decltype(params_type)::type;
    using R = typename decltype(results_type)::type;
    std::string agent = checked_agent(Decoded<P>(body).get().getAgent());
    if (!route || !relay_ || agents_.count(agent)) return run_here<P, R>(kj::heap<AdminCalls>(*this), body, local);
    return relay_->ask(agent, name, body)
        .then([this, body, local](AdminRelay::Answer answer) -> kj::Promise<std::string> {
          switch (answer.kind) {
            case AdminRelay::Answer::answered:
              return kj::mv(answer.body);
            case AdminRelay::Answer::failed:
              throw error_text(answer.error);
            case AdminRelay::Answer::not_here:
              break;
          }
          return run_here<P, R>(kj::heap<AdminCalls>(*this), body, local);
        });
  };
  if (name == "collect")
    return call(template_type<Admin::CollectParams>{}, template_type<Admin::CollectResults>{}, &AdminCalls::collect);
  if (name == "cancel")
    return call(template_type<Admin::CancelParams>{}, template_type<Admin::CancelResults>{}, &AdminCalls::cancel);
  if (name == "setEventTable")
    return call(template_type<Admin::SetEventTableParams>{}, template_type<Admin::SetEventTableResults>{},
                &AdminCalls::setEventTable);
  if (name == "agentStatus")
    return call(template_type<Admin::AgentStatusParams>{}, template_type<Admin::AgentStatusResults>{},
                &AdminCalls::agentStatus);
  throw error_text("no admin call \"" + name + "\"");
}

kj::Promise<std::string> CollectorServer::inspector_call(uint64_t client, const std::string& agent, uint16_t method,
                                                         const std::string& body) {
  if (auto it = agents_.find(agent); it != agents_.end())
    return session_inspector_call(agent, it->second, std::to_string(client), method, body);
  if (!relay_) throw error_text("agent " + agent + " is not connected");
  std::chrono::milliseconds extra{};
  if (method == 5)  // trace: as long as it was asked to run
    extra = std::chrono::seconds(Decoded<inspector::Inspector::TraceParams>(body).get().getSeconds());
  relayed_inspects_[client] = agent;
  return relay_->ask(agent, "inspector." + std::to_string(method) + "." + relay_key(client), body, extra)
      .then([agent](AdminRelay::Answer answer) {
        if (answer.kind == AdminRelay::Answer::failed) throw error_text(answer.error);
        if (answer.kind == AdminRelay::Answer::not_here)
          throw error_text("agent " + agent + " is not connected to any collector");
        return kj::mv(answer.body);
      });
}

void CollectorServer::forget_inspector(uint64_t client) {
  client_inspectors_.erase(std::to_string(client));
  auto relayed = relayed_inspects_.find(client);
  if (relayed == relayed_inspects_.end()) return;
  // The holder's inspector for it goes too (if the agent moved, so did it).
  tasks_.add(relay_->ask(relayed->second, "forget-inspector." + relay_key(client), "").ignoreResult().catch_(
      [](kj::Exception&&) {}));
  relayed_inspects_.erase(relayed);
}

kj::Promise<std::string> CollectorServer::session_inspector_call(const std::string& agent, AgentSession& session,
                                                                 const std::string& key, uint16_t method,
                                                                 const std::string& body) {
  capnp::Capability::Client* target = nullptr;
  if (key.empty()) {
    if (session.inspector == nullptr)
      session.inspector = capnp::Capability::Client(session.controller.inspectorRequest().send().getInspector());
    target = &KJ_ASSERT_NONNULL(session.inspector);
  } else {
    auto mine = client_inspectors_.find(key);
    if (mine == client_inspectors_.end() || mine->second.session_ns != session.connected_ns) {
      capnp::Capability::Client inspector = session.controller.inspectorRequest().send().getInspector();
      client_inspectors_.erase(key);
      mine = client_inspectors_.emplace(key, ClientInspector{session.connected_ns, kj::mv(inspector)}).first;
    }
    target = &mine->second.inspector;
  }
  auto request = target->typelessRequest(capnp::typeId<inspector::Inspector>(), method, nullptr);
  request.set(Decoded<capnp::AnyPointer>(body).get());
  return awaiting_answer(agent, request.send()).then([](capnp::Response<capnp::AnyPointer> response) {
    return encode_any(response);
  });
}

kj::Promise<std::vector<std::string>> CollectorServer::where(std::vector<std::string> ids) {
  auto found = kj::heap<std::vector<std::string>>(ids.size());
  if (!relay_) return kj::mv(*found);
  auto asks = kj::heapArrayBuilder<kj::Promise<void>>(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (agents_.count(ids[i])) {
      asks.add(kj::READY_NOW);
      continue;
    }
    asks.add(relay_->ask(ids[i], "where", "").then([&out = (*found)[i]](AdminRelay::Answer answer) {
      if (answer.kind == AdminRelay::Answer::answered) out = kj::mv(answer.body);
    }));
  }
  auto& result = *found;
  return kj::joinPromises(asks.finish()).then([&result] { return kj::mv(result); }).attach(kj::mv(found));
}

AdminRelay::Answer CollectorServer::where_here(const std::string& agent) const {
  Connected c;
  {
    std::lock_guard<std::mutex> lock(connected_mutex_);
    auto it = connected_.find(agent);
    if (it == connected_.end()) return {AdminRelay::Answer::not_here, {}, {}};
    c = it->second;
  }
  capnp::MallocMessageBuilder message;
  auto here = message.initRoot<protocol::AgentSummary>();
  here.setId(agent);
  here.setConnected(true);
  here.setPeer(c.peer);
  here.setConnectedNs(c.connected_ns);
  here.setCollector(address_);
  return {AdminRelay::Answer::answered, encode<protocol::AgentSummary>(here.asReader()), {}};
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
  // "inspector.<method>[.<key>]": the asking client's inspector here is
  // "<key>/<agent>"; "forget-inspector.<key>" drops it.
  const std::string prefix = "inspector.", forget = "forget-inspector.";
  kj::Promise<std::string> answer = nullptr;
  try {
    if (call.name.rfind(forget, 0) == 0) {
      client_inspectors_.erase(call.name.substr(forget.size()) + "/" + call.agent);
      answer = std::string();
    } else if (call.name.rfind(prefix, 0) != 0) {
      answer = admin_call(call.name, call.body, false);
    } else {
      std::string rest = call.name.substr(prefix.size());
      size_t dot = rest.find('.');
      uint16_t method = 0;
      try {
        method = static_cast<uint16_t>(std::stoul(rest.substr(0, dot)));
      } catch (const std::exception&) {
        throw error_text("no inspector call \"" + call.name + "\"");
      }
      std::string key = dot == std::string::npos ? "" : rest.substr(dot + 1) + "/" + call.agent;
      answer = session_inspector_call(call.agent, it->second, key, method, call.body);
    }
  } catch (const kj::Exception& e) {  // a malformed call
    answer = kj::cp(e);
  }
  tasks_.add(answer.then(
      [this, call](std::string body) { relay_->answer(call, {AdminRelay::Answer::answered, std::move(body), {}}); },
      [this, call](kj::Exception&& e) {
        relay_->answer(call, {AdminRelay::Answer::failed, {}, e.getDescription().cStr()});
      }));
}

}  // namespace outpost::net
