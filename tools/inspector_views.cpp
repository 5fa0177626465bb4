// What outpostctl and `outpost-collector inspect` print from an agent's
// inspector (schemas/inspector.capnp): tables for people, JSON with --json.

#include "tools/inspector_views.hpp"

#include <algorithm>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>

namespace outpost::ctl {

std::string kj_error(const kj::Exception& e) {
  std::string why = e.getDescription().cStr();
  for (const std::string remote = "remote exception: "; why.rfind(remote, 0) == 0;) why = why.substr(remote.size());
  if (e.getType() == kj::Exception::Type::DISCONNECTED && why.find("timed out") == std::string::npos)
    why = "the agent closed the connection (" + why + ")";
  return why;
}

std::string ms(uint64_t ns) { return fmt::format("{:.3f}", static_cast<double>(ns) / 1e6); }

std::string actor_json(in::ActorInfo::Reader a) {
  std::string s = fmt::format(
      "{{\"id\":{},\"kind\":{},\"name\":{},\"parent\":{},\"state\":{},\"state_for_ms\":{},\"mailbox\":{},"
      "\"handled\":{},\"handling_ms\":{},\"handling_max_ms\":{},\"busy_for_ms\":{},"
      "\"rows_in\":{},\"rows_out\":{},\"bytes_in\":{},\"bytes_out\":{},\"dropped\":{},\"detached\":{},\"start_ns\":{}",
      a.getId(), q(a.getKind()), q(a.getName()), a.getParent(), q(a.getState()), a.getStateForNs() / 1000000,
      a.getMailbox(), a.getHandled(), ms(a.getHandlingNs()), ms(a.getHandlingMaxNs()), a.getBusyForNs() / 1000000,
      a.getRowsIn(), a.getRowsOut(), a.getBytesIn(), a.getBytesOut(), a.getDropped(),
      a.getDetached() ? "true" : "false", a.getStartNs());
  if (a.getLastError().size())
    s += fmt::format(",\"last_error\":{},\"last_error_ns\":{}", q(a.getLastError()), a.getLastErrorNs());
  auto hist = [&](const char* key, capnp::List<uint64_t>::Reader h) {
    if (h.size() == 0) return;
    s += fmt::format(",\"{}\":[", key);
    for (unsigned i = 0; i < h.size(); ++i) s += (i ? "," : "") + std::to_string(h[i]);
    s += "]";
  };
  hist("handling_histogram_log2ns", a.getHandlingHistogram());
  hist("mailbox_histogram_log2ns", a.getMailboxHistogram());
  if (a.getStatus().size()) s += ",\"status\":" + std::string(a.getStatus().cStr());
  return s + "}";
}


std::vector<in::ActorInfo::Reader> sorted(capnp::List<in::ActorInfo>::Reader list, const std::string& by) {
  std::vector<in::ActorInfo::Reader> v;
  for (auto a : list) v.push_back(a);
  auto key = [&](in::ActorInfo::Reader a) -> uint64_t {
    if (by == "mailbox") return a.getMailbox();
    if (by == "time") return a.getHandlingNs();
    if (by == "rate" || by == "handled") return a.getHandled();
    return UINT64_MAX - a.getId();
  };
  std::stable_sort(v.begin(), v.end(), [&](auto a, auto b) { return key(a) > key(b); });
  return v;
}

void print_actors(Session& s, bool json, const std::string& sort_by, const std::string& kind) {
  auto req = s.inspector.actorsRequest();
  req.setWithStatus(json);
  auto r = s.wait(req.send(), "the agent's actors", 5 * kj::SECONDS);
  auto list = sorted(r.getActors(), sort_by);
  if (json) {
    std::string out = "[";
    bool first = true;
    for (auto a : list)
      if (kind.empty() || a.getKind() == kind) out += (first ? "" : ",") + actor_json(a), first = false;
    std::cout << out << "]\n";
    return;
  }
  std::cout << fmt::format("{:>6} {:>6} {:<34} {:<17} {:>7} {:>10} {:>9} {:>9} {:>10}\n", "ID", "PARENT", "ACTOR",
                           "STATE", "MAILBOX", "HANDLED", "AVG_US", "MAX_MS", "ROWS_OUT");
  for (auto a : list) {
    if (!kind.empty() && a.getKind() != kind) continue;
    double avg = a.getHandled() ? static_cast<double>(a.getHandlingNs()) / a.getHandled() / 1000 : 0;
    std::cout << fmt::format("{:>6} {:>6} {:<34} {:<17} {:>7} {:>10} {:>9.1f} {:>9.1f} {:>10}\n", a.getId(),
                             a.getParent(), label(a).substr(0, 34), a.getState().cStr(), a.getMailbox(),
                             a.getHandled(), avg, static_cast<double>(a.getHandlingMaxNs()) / 1e6, a.getRowsOut());
    if (a.getLastError().size()) std::cout << "       last error: " << a.getLastError().cStr() << "\n";
  }
}

void print_tree(Session& s, bool json) {
  auto r = s.wait(s.inspector.actorsRequest().send(), "the agent's actors");
  std::map<uint64_t, std::vector<in::ActorInfo::Reader>> children;
  std::map<uint64_t, bool> present;
  for (auto a : r.getActors()) present[a.getId()] = true;
  for (auto a : r.getActors()) children[present.count(a.getParent()) ? a.getParent() : 0].push_back(a);
  std::function<std::string(uint64_t)> subtree = [&](uint64_t id) {
    std::string out = "[";
    for (auto a : children[id])
      out += (out.size() > 1 ? "," : "") +
             fmt::format("{{\"id\":{},\"kind\":{},\"name\":{},\"state\":{},\"children\":{}}}", a.getId(),
                         q(a.getKind()), q(a.getName()), q(a.getState()), subtree(a.getId()));
    return out + "]";
  };
  if (json) {
    std::cout << fmt::format("{{\"agent\":{},\"pid\":{},\"children\":{}}}\n", q(s.agent.c_str()), s.pid, subtree(0));
    return;
  }
  std::function<void(uint64_t, const std::string&)> walk = [&](uint64_t id, const std::string& indent) {
    auto& kids = children[id];
    for (size_t i = 0; i < kids.size(); ++i) {
      bool last = i + 1 == kids.size();
      auto a = kids[i];
      std::cout << indent << (last ? "└─ " : "├─ ") << label(a) << " #" << a.getId() << " [" << a.getState().cStr()
                << "]\n";
      walk(a.getId(), indent + (last ? "   " : "│  "));
    }
  };
  std::cout << "agent " << s.agent << " (pid " << s.pid << ")\n";
  walk(0, "");
}

// The kind-specific status of the actors of one kind, as JSON (one object, or a list).
void print_kind(Session& s, bool json, std::initializer_list<const char*> kinds, bool many) {
  auto req = s.inspector.actorsRequest();
  req.setWithStatus(true);
  auto r = s.wait(req.send(), "the agent's actors", 5 * kj::SECONDS);
  std::vector<std::string> found;
  for (auto a : r.getActors())
    for (auto k : kinds)
      if (a.getKind() == k) found.push_back(json || many ? actor_json(a) : std::string(a.getStatus().cStr()));
  if (found.empty()) throw Failure(std::string("the agent has no ") + *kinds.begin() + " actor");
  if (many) {
    std::string out = "[";
    for (auto& f : found) out += (out.size() > 1 ? ",\n " : "") + f;
    std::cout << out << "]\n";
  } else {
    std::cout << found.front() << "\n";
  }
}

void print_warnings(Session& s, bool json) {
  auto r = s.wait(s.inspector.warningsRequest().send(), "the agent's warnings");
  if (json) {
    std::string out = "[";
    for (auto w : r.getWarnings())
      out += (out.size() > 1 ? "," : "") +
             fmt::format("{{\"kind\":{},\"actor\":{},\"actor_name\":{},\"evidence\":{},\"since_ns\":{}}}",
                         q(w.getKind()), w.getActor(), q(w.getActorName()), q(w.getEvidence()), w.getSinceNs());
    std::cout << out << "]\n";
    return;
  }
  if (r.getWarnings().size() == 0) std::cout << "no warnings\n";
  for (auto w : r.getWarnings())
    std::cout << fmt::format("{:<16} {} #{}: {}\n", w.getKind().cStr(), w.getActorName().cStr(), w.getActor(),
                             w.getEvidence().cStr());
}

void print_status(Session& s, bool json) {
  auto actors = s.wait(s.inspector.actorsRequest().send(), "the agent's actors");
  auto warnings = s.wait(s.inspector.warningsRequest().send(), "the agent's warnings");
  std::map<std::string, unsigned> by_state, by_kind;
  uint64_t mailbox = 0;
  for (auto a : actors.getActors()) {
    ++by_state[a.getState()];
    ++by_kind[a.getKind()];
    mailbox += a.getMailbox();
  }
  auto counts = [&](const std::map<std::string, unsigned>& m, bool json) {
    std::string out;
    for (auto& [k, n] : m)
      out += (out.empty() ? "" : json ? "," : ", ") + (json ? q(k.c_str()) + ":" + std::to_string(n)
                                                             : k + " " + std::to_string(n));
    return out;
  };
  if (json) {
    std::cout << fmt::format(
        "{{\"agent\":{},\"pid\":{},\"control\":{},\"actors\":{},\"kinds\":{{{}}},\"states\":{{{}}},"
        "\"mailbox\":{},\"warnings\":{},\"exits\":{}}}\n",
        q(s.agent.c_str()), s.pid, s.control ? "true" : "false", actors.getActors().size(), counts(by_kind, true),
        counts(by_state, true), mailbox, warnings.getWarnings().size(), actors.getExits().size());
    return;
  }
  std::cout << "agent " << s.agent << " (pid " << s.pid << "), inspector " << (s.control ? "with control" : "read-only")
            << "\n"
            << actors.getActors().size() << " actors: " << counts(by_kind, false) << "\n"
            << "states: " << counts(by_state, false) << "; " << mailbox << " messages waiting\n"
            << warnings.getWarnings().size() << " warning(s)" << (warnings.getWarnings().size() ? " (outpostctl warnings)" : "")
            << "\n";
}

int logs(Session& s, bool follow, bool json) {
  uint64_t after = 0;
  for (;;) {
    auto req = s.inspector.logsRequest();
    req.setAfter(after);
    req.setMax(1000);
    auto r = s.wait(req.send(), "the agent's log lines");
    for (auto line : r.getLines()) std::cout << (json ? "{\"line\":" + q(line) + "}" : std::string(line.cStr())) << "\n";
    std::cout.flush();
    after = r.getLast();
    if (!follow) return 0;
    if (r.getLines().size() == 0) s.io.provider->getTimer().afterDelay(300 * kj::MILLISECONDS).wait(s.io.waitScope);
  }
}

int control(Session& s, in::Action action, const std::string& target, bool json) {
  auto req = s.inspector.controlRequest();
  req.setAction(action);
  req.setTarget(target);
  auto response = s.wait(req.send(), "the agent's answer");  // owns what getResult() points into
  auto result = response.getResult();
  std::cout << (json ? "{\"result\":" + q(result) + "}" : std::string(result.cStr())) << "\n";
  return 0;
}

// A Chrome trace-event file (Perfetto and chrome://tracing open it): a track
// per actor, a slice per handled message, a flow arrow from send to handling.
std::string trace_json(capnp::List<in::TraceEvent>::Reader events, capnp::List<in::ActorInfo>::Reader actors,
                       capnp::List<in::ActorExit>::Reader exits, const std::string& ended_by) {
  std::map<uint64_t, std::string> names;
  for (auto a : actors) names[a.getId()] = label(a);
  for (auto x : exits)
    names[x.getId()] = x.getName().size() ? std::string(x.getKind().cStr()) + " " + x.getName().cStr() : x.getKind().cStr();
  std::string out = "{\"displayTimeUnit\":\"ns\",\"otherData\":{\"ended_by\":" + q(ended_by.c_str()) + "},\"traceEvents\":[";
  bool first = true;
  auto add = [&](const std::string& e) {
    out += (first ? "\n" : ",\n") + e;
    first = false;
  };
  std::map<uint64_t, bool> seen;
  for (auto e : events) seen[e.getActor()] = true, seen[e.getSender()] = seen[e.getSender()] || false;
  for (auto& [id, _] : seen)
    if (id)
      add(fmt::format("{{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":1,\"tid\":{},\"args\":{{\"name\":{}}}}}", id,
                      q((names.count(id) ? names[id] : "actor") + " #" + std::to_string(id)).c_str()));
  auto us = [](int64_t ns) { return fmt::format("{:.3f}", static_cast<double>(ns) / 1000); };
  for (auto e : events) {
    add(fmt::format("{{\"ph\":\"X\",\"name\":{},\"cat\":\"message\",\"pid\":1,\"tid\":{},\"ts\":{},\"dur\":{},"
                    "\"args\":{{\"sender\":{},\"mailbox_us\":{},\"bytes\":{}{}}}}}",
                    q(e.getType()), e.getActor(), us(e.getStartNs()), us(e.getDurationNs()), e.getSender(),
                    e.getEnqueuedNs() ? us(e.getStartNs() - e.getEnqueuedNs()) : "null", e.getBytes(),
                    e.hasPayload() ? ",\"payload\":" + q(e.getPayload()) : std::string()));
    if (e.getFlow() && e.getSender() && e.getEnqueuedNs()) {
      add(fmt::format("{{\"ph\":\"s\",\"name\":{},\"cat\":\"send\",\"id\":{},\"pid\":1,\"tid\":{},\"ts\":{}}}",
                      q(e.getType()), e.getFlow(), e.getSender(), us(e.getEnqueuedNs())));
      add(fmt::format("{{\"ph\":\"f\",\"bp\":\"e\",\"name\":{},\"cat\":\"send\",\"id\":{},\"pid\":1,\"tid\":{},\"ts\":{}}}",
                      q(e.getType()), e.getFlow(), e.getActor(), us(e.getStartNs())));
    }
  }
  return out + "\n]}\n";
}

int trace(Session& s, const std::vector<uint64_t>& actors, unsigned seconds, uint64_t count,
          uint64_t rate, bool payloads, const std::string& file) {
  auto req = s.inspector.traceRequest();
  req.setPayloads(payloads);
  auto ids = req.initActors(static_cast<unsigned>(actors.size()));
  for (size_t i = 0; i < actors.size(); ++i) ids.set(i, actors[i]);
  req.setSeconds(seconds);
  req.setMaxEvents(count);
  req.setMaxPerSecond(rate);
  auto r = s.wait(req.send(), "the trace", seconds * kj::SECONDS);
  auto names = s.wait(s.inspector.actorsRequest().send(), "the agent's actors");
  std::string text = trace_json(r.getEvents(), names.getActors(), names.getExits(), r.getEndedBy());
  if (file.empty() || file == "-") {
    std::cout << text;
  } else {
    std::ofstream f(file, std::ios::binary);
    f << text;
    f.close();  // a write error may show only at close (NFS, FUSE)
    if (!f) throw Failure("cannot write " + file + ": " + std::strerror(errno));
    std::cerr << fmt::format("{} messages traced (ended by {}) into {}\n", r.getEvents().size(),
                             r.getEndedBy().cStr(), file);
  }
  return 0;
}

}  // namespace outpost::ctl
