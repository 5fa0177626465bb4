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

#include "actors/agent_config.hpp"
#include "tools/inspector_views.hpp"

namespace {

using namespace outpost::ctl;

struct Options {
  std::string socket, config;
  bool json = false;
  unsigned timeout_s = 10;
};

std::string socket_path(const Options& o) {
  if (!o.socket.empty()) return o.socket;
  if (!o.config.empty()) {
    auto config = outpost::load_agent_config(o.config);
    if (config.inspector.socket.empty()) throw Failure(o.config + ": the inspector is off (inspector.socket is empty)");
    return config.inspector.socket;
  }
  return outpost::InspectorSpec{}.socket;
}

// The agent's inspector on its socket, greeted.
void connect(Session& s, const Options& o) {
  std::string path = socket_path(o);
  s.open(connect_unix(path, [&](int e) -> std::string {
    if (e == ENOENT || e == ECONNREFUSED)
      return "no agent is running with its inspector at " + path + " (" + std::strerror(e) +
             "); --socket or --config names another";
    if (e == EACCES || e == EPERM) return "permission denied on " + path + ": run as the agent's user (or root)";
    return "cannot connect to " + path + ": " + std::strerror(e);
  }));
  s.inspector = s.client->bootstrap().castAs<Inspector>();
  s.hello();
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
  std::string action;
  app.add_subcommand("buffer", "the buffer's status; `buffer compact` shrinks its file (needs control)")
      ->add_option("action", action, "compact: rewrite the file without its free pages")
      ->check(CLI::IsMember({"compact"}));
  app.add_subcommand("link", "the link's status; `link reconnect` connects again now (needs control)")
      ->add_option("action", action, "reconnect: end the connection (or the wait for the next attempt) and "
                                     "connect again at once")
      ->check(CLI::IsMember({"reconnect"}));
  app.add_subcommand("queries", "every query with its counters and status");
  app.add_subcommand("warnings", "conditions worth attention, with their evidence");
  bool follow = false;
  auto* logs_cmd = app.add_subcommand("logs", "the agent's last 1000 log lines");
  logs_cmd->add_flag("-f,--follow", follow, "keep printing new lines");
  std::string target;
  auto* suspend_cmd = app.add_subcommand("suspend", "stop a query pulling rows until resumed (needs control)");
  auto* resume_cmd = app.add_subcommand("resume", "resume a suspended query (needs control)");
  auto* restart_cmd = app.add_subcommand("restart", "restart a query now (needs control)");
  auto* cancel_cmd = app.add_subcommand("cancel", "stop a query and delete its buffered rows; restart starts "
                                                  "it again (needs control)");
  for (auto* c : {suspend_cmd, resume_cmd, restart_cmd, cancel_cmd})
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
  bool payloads = false;
  trace_cmd->add_flag("--payloads", payloads, "keep the rows the messages carry (the first 4 KiB of each)");

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
    Session s(o.timeout_s);
    connect(s, o);
    auto* cmd = app.get_subcommands().front();
    std::string name = cmd->get_name();
    if (name == "status") print_status(s, o.json);
    else if (name == "actors") print_actors(s, o.json, sort_by, "");
    else if (name == "tree") print_tree(s, o.json);
    else if (name == "buffer" && action == "compact") return control(s, in::Action::COMPACT, "", o.json);
    else if (name == "buffer") print_kind(s, o.json, {"buffer"}, false);
    else if (name == "link" && action == "reconnect") return control(s, in::Action::RECONNECT, "", o.json);
    else if (name == "link") print_kind(s, o.json, {"net-link", "link"}, false);
    else if (name == "queries") o.json ? print_kind(s, o.json, {"query"}, true) : print_actors(s, o.json, sort_by, "query");
    else if (name == "warnings") print_warnings(s, o.json);
    else if (name == "logs") return logs(s, follow, o.json);
    else if (name == "suspend") return control(s, in::Action::SUSPEND, target, o.json);
    else if (name == "resume") return control(s, in::Action::RESUME, target, o.json);
    else if (name == "restart") return control(s, in::Action::RESTART, target, o.json);
    else if (name == "cancel") return control(s, in::Action::CANCEL, target, o.json);
    else if (name == "log-level") return control(s, in::Action::LOG_LEVEL, target, o.json);
    else if (name == "trace") return trace(s, trace_actors, seconds, count, rate, payloads, out_file);
    else if (name == "top") return run_top(s, interval_ms, iterations, top_sort);
    return 0;
  } catch (const Failure& e) {
    std::cerr << "outpostctl: " << e.what() << "\n";
  } catch (const kj::Exception& e) {  // before std::exception: kj's also derive from it
    std::cerr << "outpostctl: " << kj_error(e) << "\n";
  } catch (const std::exception& e) {
    std::cerr << "outpostctl: " << e.what() << "\n";
  }
  return 1;
}
