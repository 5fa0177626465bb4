// outpost-agent: runs the buffer, the link and the configured queries until
// SIGTERM or SIGINT, then shuts down in order (a second signal forces exit).
// Its subcommands (query, collect, artifacts) run VQL once, locally, with
// the same configuration (checked the same way, its log settings applied).

#include <signal.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <thread>

#include "actors/log_thread.hpp"
#include "actors/agent_config.hpp"
#include "api/agent_impl.hpp"
#include "outpost/outpost.hpp"
#include "tools/agent_local.hpp"
#include "tools/param_file.hpp"

namespace {

using namespace outpost;

// This program's own lines (the agent's go where the library routes them:
// stderr, log.file and the ring `outpostctl logs` reads) go to stderr and to
// log.file when one is given.
void setup_logging(const LogSpec& log) {
  std::vector<spdlog::sink_ptr> sinks{std::make_shared<spdlog::sinks::stderr_color_sink_mt>()};
  if (!log.file.empty()) sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(log.file));
  auto logger = std::make_shared<spdlog::logger>("outpost", sinks.begin(), sinks.end());
  logger->set_level(spdlog::level::from_str(log.level));
  logger->flush_on(spdlog::level::info);  // lifecycle lines reach the file at once
  spdlog::set_default_logger(logger);
}

// The configuration file's text (empty: the built-in configuration).
std::string read_config(const std::string& path) {
  if (path.empty()) return {};
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) throw ConfigError(path + ": cannot read it");
  return text.str();
}

// First SIGINT/SIGTERM: ordered shutdown. Second: exit now.
// The thread shares the agent: a signal while main returns finds it alive.
void watch_signals(sigset_t signals, std::shared_ptr<Agent> agent) {
  std::thread([signals, agent] {
    ScopedLogRoute log(AgentAccess::log_route(*agent));  // its lines are the agent's
    int sig = 0;
    sigwait(&signals, &sig);
    spdlog::info("{} received: shutting down (send it again to force exit)", strsignal(sig));
    // A second signal already pending must win over a shutdown that could finish first.
    sigset_t pending;
    sigpending(&pending);
    bool second = sigismember(&pending, SIGINT) == 1 || sigismember(&pending, SIGTERM) == 1;
    if (!second) agent->request_stop();
    sigwait(&signals, &sig);
    spdlog::warn("second {}: exiting without waiting", strsignal(sig));
    spdlog::shutdown();
    _exit(130);
  }).detach();
}

sigset_t shutdown_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  return signals;
}

// SIGINT and SIGTERM are blocked before any of the process's own code runs,
// and wait for the watcher thread that starts once the actors run: one that
// comes during startup (the libraries' initialisation, options,
// configuration, opening the buffer) still gets an ordered shutdown. CAF's
// threads, started later, inherit the mask. An executable's .preinit_array
// runs after the dynamic loader and before every library's initialisation:
// only a signal during the loading itself still ends the process by default.
void block_shutdown_signals(int, char**, char**) {
  sigset_t signals = shutdown_signals();
  sigprocmask(SIG_BLOCK, &signals, nullptr);  // one thread yet
}
[[gnu::section(".preinit_array"), gnu::used]] void (*const block_signals_first)(int, char**, char**) =
    block_shutdown_signals;

}  // namespace

int main(int argc, char** argv) {
  sigset_t signals = shutdown_signals();  // blocked already; the one-shot commands unblock them

  CLI::App app{
      "outpost-agent: runs monitoring queries and buffers their rows on disk until the link "
      "has delivered them"};
  std::string config_path;
  std::vector<std::string> overrides;
  bool print_default = false;
  app.add_option("-c,--config", config_path, "YAML configuration file (default: built-in)")
      ->check(CLI::ExistingFile);
  app.add_option("--set", overrides,
                 "override a key, e.g. --set buffer.limit=64MiB --set link=offline "
                 "--set link=file:out.jsonl --set log.level=debug (repeatable)");
  std::vector<std::string> definitions;
  app.add_option("--definitions", definitions,
                 "artifact definitions: a directory (every *.yaml below) or a file; as --set "
                 "artifacts.paths=DIR (repeatable)");
  app.add_flag("--print-default-config", print_default, "print the built-in configuration and exit");
  app.footer(
      "query, collect and artifacts run here, once, without buffer or link; they read and check "
      "the configuration as a run does, and log as its log section says. Exit codes: 0 done, 1 "
      "failed, 2 refused (usage, configuration, query), 130 forced by a second signal.");
  app.fallthrough();  // --config and --set may also follow a command

  std::string vql, artifact;
  std::vector<std::string> params, param_files;
  size_t max_rows = 0;
  auto* query_cmd = app.add_subcommand("query", "run VQL once, here, and print its rows as JSON lines");
  query_cmd->add_option("vql", vql, "the query")->required();
  auto* collect_cmd = app.add_subcommand("collect", "run an artifact once, here, and print its rows");
  collect_cmd->add_option("artifact", artifact, "its name (see `artifacts list`)")->required();
  for (auto* cmd : {query_cmd, collect_cmd}) {
    cmd->add_option("-p,--param", params,
                    "a parameter, name=value (repeatable); a query's are typed: 5 is an int, 2.5 a float, true "
                    "a bool, the rest text, unless the name says, as in id:string=5 (string, int, float, bool)");
    cmd->add_option("-f,--param-file", param_files, "name=FILE: the file's content as the value (repeatable)");
    cmd->add_option("-n,--max-rows", max_rows, "stop after this many rows (0: at the end)");
  }
  auto* artifacts_cmd = app.add_subcommand("artifacts", "the artifacts: built-in and --definitions");
  artifacts_cmd->require_subcommand(1);
  artifacts_cmd->add_subcommand("list", "their names and what they do");
  std::string show_name, check_path;
  artifacts_cmd->add_subcommand("show", "one artifact's YAML")->add_option("name", show_name)->required();
  artifacts_cmd
      ->add_subcommand("check", "whether each definition below a directory loads, and what those that do not need")
      ->add_option("dir", check_path, "a directory (every *.yaml below) or a file")
      ->required();
  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help is 0; a usage error is refused, 2
  }

  if (print_default) {
    std::cout << default_agent_config_yaml();
    return 0;
  }
  // The library checks the configuration again as it starts; here it is
  // read for the log settings, and refused before anything runs.
  AgentOptions options;
  options.origin = config_path.empty() ? "built-in config" : config_path;
  for (auto& d : definitions) overrides.push_back("artifacts.paths=" + d);
  options.overrides = overrides;
  AgentConfig config;
  try {
    options.config_yaml = read_config(config_path);
    config = parse_agent_config(options.config_yaml.empty() ? Agent::default_config_yaml() : options.config_yaml,
                                options.origin);
    for (auto& o : overrides) apply_override(config, o);
  } catch (const ConfigError& e) {
    std::cerr << "outpost-agent: invalid configuration: " << e.what() << "\n";
    return 2;
  }
  auto agent = std::make_shared<Agent>(options);
  try {
    setup_logging(config.log);
  } catch (const std::exception& e) {
    std::cerr << "outpost-agent: log.file: " << e.what() << "\n";
    return 1;
  }

  if (auto checked = agent->check(); !checked) {
    std::cerr << "outpost-agent: invalid configuration: " << checked.message << "\n";
    return 2;
  }
  if (*query_cmd || *collect_cmd || *artifacts_cmd) try {
    pthread_sigmask(SIG_UNBLOCK, &signals, nullptr);
    if (artifacts_cmd->got_subcommand("list")) return tools::list_artifacts(*agent);
    if (artifacts_cmd->got_subcommand("show")) return tools::show_artifact(*agent, show_name);
    if (artifacts_cmd->got_subcommand("check")) return tools::check_artifacts(*agent, check_path);
    Parameters parameters;
    try {
      for (auto& p : params) parameters.push_back(tools::parse_parameter(p));
      for (auto& p : param_files) parameters.push_back(tools::file_parameter(p));
    } catch (const std::exception& e) {
      std::cerr << "outpost-agent: " << e.what() << "\n";
      return 2;
    }
    return *query_cmd ? tools::run_local_query(*agent, vql, parameters, max_rows)
                      : tools::run_local_artifact(*agent, artifact, parameters, max_rows);
  } catch (const std::exception& e) {
    std::cerr << "outpost-agent: " << e.what() << "\n";
    return 2;
  }

  if (auto started = agent->start(); !started) {
    if (started.code == Errc::invalid_config) {
      std::cerr << "outpost-agent: invalid configuration: " << started.message << "\n";
      return 2;
    }
    spdlog::critical("{}", started.message);  // on stderr, and in the log file
    return 1;
  }
  watch_signals(signals, agent);
  auto ended = agent->wait();
  return ended ? 0 : 1;
}
