// outpostctl: looks inside a running agent through its inspector socket
// (schemas/inspector.capnp): its actors and their counters, the supervision
// tree, warnings, log lines, traces; and, when the agent allows control,
// suspends, resumes and restarts queries and changes the log level.

#include <capnp/rpc-twoparty.h>
#include <fmt/format.h>
#include <kj/async-io.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <thread>

#include "tools/inspector_client.hpp"

namespace {

using namespace outpost::ctl;

std::string ms(uint64_t ns) { return fmt::format("{:.3f}", static_cast<double>(ns) / 1e6); }

std::string actor_json(in::ActorInfo::Reader a) {
  std::string s = fmt::format(
      "{{\"id\":{},\"kind\":{},\"name\":{},\"parent\":{},\"state\":{},\"state_for_ms\":{},\"mailbox\":{},"
      "\"handled\":{},\"handling_ms\":{},\"handling_max_ms\":{},\"busy_for_ms\":{},\"rows_in\":{},"
      "\"rows_out\":{},\"bytes_in\":{},\"bytes_out\":{},\"dropped\":{},\"detached\":{},\"start_ns\":{}",
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

void print_actors(Session& s, const Options& o, const std::string& sort_by, const std::string& kind) {
  auto req = s.inspector.actorsRequest();
  req.setWithStatus(o.json);
  auto r = s.wait(req.send(), "the agent's actors", 5 * kj::SECONDS);
  auto list = sorted(r.getActors(), sort_by);
  if (o.json) {
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

void print_tree(Session& s, const Options& o) {
  auto r = s.wait(s.inspector.actorsRequest().send(), "the agent's actors");
  std::map<uint64_t, std::vector<in::ActorInfo::Reader>> children;
  std::map<uint64_t, bool> present;
  for (auto a : r.getActors()) present[a.getId()] = true;
  for (auto a : r.getActors()) children[present.count(a.getParent()) ? a.getParent() : 0].push_back(a);
  std::function<std::string(uint64_t)> json = [&](uint64_t id) {
    std::string out = "[";
    for (auto a : children[id])
      out += (out.size() > 1 ? "," : "") +
             fmt::format("{{\"id\":{},\"kind\":{},\"name\":{},\"state\":{},\"children\":{}}}", a.getId(),
                         q(a.getKind()), q(a.getName()), q(a.getState()), json(a.getId()));
    return out + "]";
  };
  if (o.json) {
    std::cout << fmt::format("{{\"agent\":{},\"pid\":{},\"children\":{}}}\n", q(s.agent.c_str()), s.pid, json(0));
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
void print_kind(Session& s, const Options& o, std::initializer_list<const char*> kinds, bool many) {
  auto req = s.inspector.actorsRequest();
  req.setWithStatus(true);
  auto r = s.wait(req.send(), "the agent's actors", 5 * kj::SECONDS);
  std::vector<std::string> found;
  for (auto a : r.getActors())
    for (auto k : kinds)
      if (a.getKind() == k) found.push_back(o.json || many ? actor_json(a) : std::string(a.getStatus().cStr()));
  if (found.empty()) throw Failure(std::string("the agent has no ") + *kinds.begin() + " actor");
  if (many) {
    std::string out = "[";
    for (auto& f : found) out += (out.size() > 1 ? ",\n " : "") + f;
    std::cout << out << "]\n";
  } else {
    std::cout << found.front() << "\n";
  }
}

void print_warnings(Session& s, const Options& o) {
  auto r = s.wait(s.inspector.warningsRequest().send(), "the agent's warnings");
  if (o.json) {
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

void print_status(Session& s, const Options& o) {
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
  if (o.json) {
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

int logs(Session& s, bool follow) {
  uint64_t after = 0;
  for (;;) {
    auto req = s.inspector.logsRequest();
    req.setAfter(after);
    req.setMax(1000);
    auto r = s.wait(req.send(), "the agent's log lines");
    for (auto line : r.getLines()) std::cout << line.cStr() << "\n";
    std::cout.flush();
    after = r.getLast();
    if (!follow) return 0;
    if (r.getLines().size() == 0) s.io.provider->getTimer().afterDelay(300 * kj::MILLISECONDS).wait(s.io.waitScope);
  }
}

int control(Session& s, in::Action action, const std::string& target) {
  auto req = s.inspector.controlRequest();
  req.setAction(action);
  req.setTarget(target);
  std::cout << s.wait(req.send(), "the agent's answer").getResult().cStr() << "\n";
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
                    "\"args\":{{\"sender\":{},\"mailbox_us\":{}}}}}",
                    q(e.getType()), e.getActor(), us(e.getStartNs()), us(e.getDurationNs()), e.getSender(),
                    e.getEnqueuedNs() ? us(e.getStartNs() - e.getEnqueuedNs()) : "null"));
    if (e.getFlow() && e.getSender() && e.getEnqueuedNs()) {
      add(fmt::format("{{\"ph\":\"s\",\"name\":{},\"cat\":\"send\",\"id\":{},\"pid\":1,\"tid\":{},\"ts\":{}}}",
                      q(e.getType()), e.getFlow(), e.getSender(), us(e.getEnqueuedNs())));
      add(fmt::format("{{\"ph\":\"f\",\"bp\":\"e\",\"name\":{},\"cat\":\"send\",\"id\":{},\"pid\":1,\"tid\":{},\"ts\":{}}}",
                      q(e.getType()), e.getFlow(), e.getActor(), us(e.getStartNs())));
    }
  }
  return out + "\n]}\n";
}

int trace(Session& s, const Options& o, const std::vector<uint64_t>& actors, unsigned seconds, uint64_t count,
          uint64_t rate, const std::string& file) {
  auto req = s.inspector.traceRequest();
  auto ids = req.initActors(static_cast<unsigned>(actors.size()));
  for (size_t i = 0; i < actors.size(); ++i) ids.set(i, actors[i]);
  req.setSeconds(seconds);
  req.setMaxEvents(count);
  req.setMaxPerSecond(rate);
  auto r = s.wait(req.send(), "the trace", seconds * kj::SECONDS);
  auto names = s.wait(s.inspector.actorsRequest().send(), "the agent's actors");
  std::string json = trace_json(r.getEvents(), names.getActors(), names.getExits(), r.getEndedBy());
  if (file.empty() || file == "-") {
    std::cout << json;
  } else {
    std::ofstream f(file, std::ios::binary);
    f << json;
    if (!f.flush()) throw Failure("cannot write " + file + ": " + std::strerror(errno));
    std::cerr << fmt::format("{} messages traced (ended by {}) into {}\n", r.getEvents().size(),
                             r.getEndedBy().cStr(), file);
  }
  (void)o;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"outpostctl: looks inside a running outpost-agent through its inspector socket"};
  Options o;
  app.add_option("--socket", o.socket, "the agent's inspector socket (default: the config's inspector.socket, "
                                       "or outpost-data/inspector.sock)");
  app.add_option("-c,--config", o.config, "the agent's configuration file, for its inspector.socket");
  app.add_flag("--json", o.json, "print JSON");
  app.add_option("--timeout", o.timeout_s, "seconds to wait for each answer (default 10)");
  app.require_subcommand(1);
  app.fallthrough();
  app.footer("Exit codes: 0 done, 1 failed (the agent unreachable, permission, refused), 2 usage.");

  app.add_subcommand("status", "the agent in brief: actors by kind and state, warnings");
  std::string sort_by = "id";
  auto* actors_cmd = app.add_subcommand("actors", "every actor with its counters");
  actors_cmd->add_option("--sort", sort_by, "mailbox, rate (messages handled), time (in handlers), or id")
      ->check(CLI::IsMember({"id", "mailbox", "rate", "time", "handled"}));
  app.add_subcommand("tree", "the supervision tree");
  app.add_subcommand("buffer", "the buffer's status");
  app.add_subcommand("link", "the link's status");
  app.add_subcommand("queries", "every query with its counters and status");
  app.add_subcommand("warnings", "conditions worth attention, with their evidence");
  bool follow = false;
  auto* logs_cmd = app.add_subcommand("logs", "the agent's last 1000 log lines");
  logs_cmd->add_flag("-f,--follow", follow, "keep printing new lines");
  std::string target;
  auto* suspend_cmd = app.add_subcommand("suspend", "stop a query pulling rows until resumed (needs control)");
  auto* resume_cmd = app.add_subcommand("resume", "resume a suspended query (needs control)");
  auto* restart_cmd = app.add_subcommand("restart", "restart a query now (needs control)");
  for (auto* c : {suspend_cmd, resume_cmd, restart_cmd})
    c->add_option("query", target, "the query's name or id")->required();
  auto* level_cmd = app.add_subcommand("log-level", "change the agent's log level (needs control)");
  level_cmd->add_option("level", target, "trace, debug, info, warn, error, critical, off")->required();
  std::vector<uint64_t> trace_actors;
  unsigned seconds = 5;
  uint64_t count = 10000, rate = 20000;
  std::string out_file = "trace.json";
  auto* trace_cmd = app.add_subcommand("trace", "record handled messages as a Chrome trace-event (Perfetto) file");
  trace_cmd->add_option("actors", trace_actors, "actor ids to trace (default: all)");
  trace_cmd->add_option("--seconds", seconds, "stop after this long (default 5, at most 600)");
  trace_cmd->add_option("--count", count, "stop after this many messages (default 10000)");
  trace_cmd->add_option("--rate", rate, "stop in a second with more messages than this (default 20000)");
  trace_cmd->add_option("-o,--output", out_file, "the file to write (default trace.json; - for stdout)");

  unsigned interval_ms = 1000;
  int iterations = 0;
  std::string top_sort = "mailbox";
  auto* top_cmd = app.add_subcommand("top", "a live view: actors with rates, the buffer's lanes, the link, warnings");
  top_cmd->add_option("--interval", interval_ms, "milliseconds between refreshes (default 1000)")
      ->check(CLI::Range(100u, 3600000u));
  top_cmd->add_option("--iterations", iterations, "refresh this many times, then exit (default: until q)");
  top_cmd->add_option("--sort", top_sort, "mailbox, rate, time or id (keys m, r, t, i change it)")
      ->check(CLI::IsMember({"id", "mailbox", "rate", "time"}));

  CLI11_PARSE(app, argc, argv);
  try {
    Session s(o);
    auto* cmd = app.get_subcommands().front();
    std::string name = cmd->get_name();
    if (name == "status") print_status(s, o);
    else if (name == "actors") print_actors(s, o, sort_by, "");
    else if (name == "tree") print_tree(s, o);
    else if (name == "buffer") print_kind(s, o, {"buffer"}, false);
    else if (name == "link") print_kind(s, o, {"net-link", "link"}, false);
    else if (name == "queries") o.json ? print_kind(s, o, {"query"}, true) : print_actors(s, o, sort_by, "query");
    else if (name == "warnings") print_warnings(s, o);
    else if (name == "logs") return logs(s, follow);
    else if (name == "suspend") return control(s, in::Action::SUSPEND, target);
    else if (name == "resume") return control(s, in::Action::RESUME, target);
    else if (name == "restart") return control(s, in::Action::RESTART, target);
    else if (name == "log-level") return control(s, in::Action::LOG_LEVEL, target);
    else if (name == "trace") return trace(s, o, trace_actors, seconds, count, rate, out_file);
    else if (name == "top") return run_top(s, interval_ms, iterations, top_sort);
    return 0;
  } catch (const Failure& e) {
    std::cerr << "outpostctl: " << e.what() << "\n";
  } catch (const kj::Exception& e) {  // before std::exception: kj's also derive from it
    std::string why = e.getDescription().cStr();
    if (e.getType() == kj::Exception::Type::DISCONNECTED && why.find("timed out") == std::string::npos)
      why = "the agent closed the connection (" + why + ")";
    for (const std::string remote = "remote exception: "; why.rfind(remote, 0) == 0;) why = why.substr(remote.size());
    std::cerr << "outpostctl: " << why << "\n";
  } catch (const std::exception& e) {
    std::cerr << "outpostctl: " << e.what() << "\n";
  }
  return 1;
}
