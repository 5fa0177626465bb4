// outpost-agent: runs the buffer, the link and the configured queries until
// SIGTERM or SIGINT, then shuts down in order (a second signal forces exit).
// Its subcommands (query, collect, artifacts) run VQL once, locally.

#include <caf/all.hpp>
#include <signal.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>
#include <thread>

#include "actors/agent_config.hpp"
#include "actors/buffer_actor.hpp"
#include "actors/buffer_reader.hpp"
#include "actors/file_link.hpp"
#include "actors/supervisor.hpp"
#include "actors/system_config.hpp"
#include "actors/test_sources.hpp"
#include "net/net_link.hpp"
#include "queries/agent_sources.hpp"
#include "tools/agent_local.hpp"

namespace {

using namespace outpost;

void setup_logging(const LogSpec& log) {
  std::shared_ptr<spdlog::logger> logger;
  if (log.file.empty())
    logger = spdlog::stderr_color_mt("outpost");
  else
    logger = spdlog::basic_logger_mt("outpost", log.file);
  logger->set_level(spdlog::level::from_str(log.level));
  logger->flush_on(spdlog::level::info);  // lifecycle lines reach the file at once
  spdlog::set_default_logger(logger);
}

// First SIGINT/SIGTERM: ordered shutdown. Second: exit now.
void watch_signals(sigset_t signals, supervisor_actor sup) {
  std::thread([signals, sup] {
    int sig = 0;
    sigwait(&signals, &sig);
    spdlog::info("{} received: shutting down (send it again to force exit)", strsignal(sig));
    // A second signal already pending must win over a shutdown that could finish first.
    sigset_t pending;
    sigpending(&pending);
    bool second = sigismember(&pending, SIGINT) == 1 || sigismember(&pending, SIGTERM) == 1;
    if (!second) caf::anon_send(sup, stop_atom::value);
    sigwait(&signals, &sig);
    spdlog::warn("second {}: exiting without waiting", strsignal(sig));
    spdlog::shutdown();
    _exit(130);
  }).detach();
}

std::string describe(const LinkSpec& link) {
  switch (link.kind) {
    case LinkSpec::Kind::file: return "file " + link.path;
    case LinkSpec::Kind::offline: return "offline";
    case LinkSpec::Kind::collector:
      return "collector " + link.host + ":" + std::to_string(link.port) +
             (link.insecure ? " (INSECURE: no TLS)" : " (TLS)");
  }
  return "?";
}

link_actor spawn_link(caf::actor_system& sys, const buffer_actor& buf,
                      std::shared_ptr<const persistence::BufferStore> store, const LinkSpec& link) {
  if (link.kind != LinkSpec::Kind::collector) {
    bool file = link.kind == LinkSpec::Kind::file;
    return sys.spawn(file_link, buf, file ? link.path : std::string{}, file);
  }
  net::ClientConfig c;
  c.host = link.host;
  c.port = link.port;
  c.server_name = link.server_name;
  c.tls = {link.ca, link.cert, link.key, link.insecure};
  c.claimed_id = link.agent_id;
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  c.hostname = host;
  c.backoff = {link.backoff_initial, link.backoff_cap};
  // Unreadable certificates are a configuration error: say so now, not in a retry loop.
  if (!c.tls.insecure) net::TlsSetup check(c.tls, false);
  auto reader = sys.spawn<caf::detached>(buffer_reader, std::move(store), buf);
  return sys.spawn(net::net_link, buf, reader, std::move(c));
}

int run(const AgentConfig& config, sigset_t signals) {
  // The store's limit includes the shutdown reserve (buffer_actor.hpp).
  auto store_options = config.buffer;
  uint64_t reserve = config.pending_budget;
  store_options.limit_bytes += std::min(reserve, UINT64_MAX - store_options.limit_bytes);
  auto store = std::make_shared<persistence::BufferStore>(store_options);
  if (auto& r = store->open_report(); r.set_aside_to)
    spdlog::error("buffer was unreadable ({}); kept at {}", r.reason, r.set_aside_to->string());
  auto stats = store->stats();
  spdlog::info("buffer {}: {} records, {} of {} bytes", config.buffer.dir.string(), stats.records,
               stats.live_bytes, config.buffer.limit_bytes);


  caf::actor_system_config cfg;
  caf::actor_system sys{configure_scheduler(cfg)};
  auto buf = sys.spawn<caf::detached>(buffer_with, store, BufferOptions{config.pending_budget, reserve});
  link_actor link = spawn_link(sys, buf, store, config.link);
  caf::anon_send(buf, subscribe_atom::value, link);
  auto sensors = std::make_unique<vql::SensorHub>(sys);
  auto sup = sys.spawn(supervisor, buf, link, config.queries,
                       vql::agent_sources(vql::ArtifactRepository::builtin(), sensors.get()), RestartPolicy{});
  // The collector's requests (collect, cancel, event table) reach the supervisor through the link.
  if (config.link.kind == LinkSpec::Kind::collector)
    caf::anon_send(caf::actor_cast<net_link_actor>(link), subscribe_atom::value, sup);
  spdlog::info("agent running: {} queries, link {}", config.queries.size(), describe(config.link));
  watch_signals(signals, sup);

  bool failed = false;
  {
    caf::scoped_actor self{sys};
    self->monitor(sup);
    self->receive([&](caf::down_msg& down) { failed = static_cast<bool>(down.reason); });
  }
  sensors.reset();  // the queries are gone: no sensor has a subscriber left
  sys.await_all_actors_done();
  spdlog::info("agent stopped{}", failed ? " after a failure" : "");
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
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
  app.add_flag("--print-default-config", print_default, "print the built-in configuration and exit");

  std::string vql, artifact;
  std::vector<std::string> params;
  size_t max_rows = 0;
  auto* query_cmd = app.add_subcommand("query", "run VQL once, here, and print its rows as JSON lines");
  query_cmd->add_option("vql", vql, "the query")->required();
  auto* collect_cmd = app.add_subcommand("collect", "run an artifact once, here, and print its rows");
  collect_cmd->add_option("artifact", artifact, "its name (see `artifacts list`)")->required();
  for (auto* cmd : {query_cmd, collect_cmd}) {
    cmd->add_option("-p,--param", params, "a parameter, name=value (repeatable)");
    cmd->add_option("-n,--max-rows", max_rows, "stop after this many rows (0: at the end)");
  }
  auto* artifacts_cmd = app.add_subcommand("artifacts", "the built-in artifacts");
  artifacts_cmd->require_subcommand(1);
  artifacts_cmd->add_subcommand("list", "their names and what they do");
  std::string show_name;
  artifacts_cmd->add_subcommand("show", "one artifact's YAML")->add_option("name", show_name)->required();
  app.require_subcommand(0, 1);
  CLI11_PARSE(app, argc, argv);

  if (*query_cmd || *collect_cmd || *artifacts_cmd) try {
    spdlog::set_default_logger(spdlog::stderr_color_mt("outpost"));
    spdlog::set_level(spdlog::level::warn);
    if (*artifacts_cmd)
      return artifacts_cmd->got_subcommand("list") ? tools::list_artifacts() : tools::show_artifact(show_name);
    tools::Parameters parameters;
    try {
      for (auto& p : params) parameters.push_back(tools::parse_parameter(p));
    } catch (const std::exception& e) {
      std::cerr << "outpost-agent: " << e.what() << "\n";
      return 2;
    }
    return *query_cmd ? tools::run_local_query(vql, parameters, max_rows)
                      : tools::run_local_artifact(artifact, parameters, max_rows);
  } catch (const std::exception& e) {
    std::cerr << "outpost-agent: " << e.what() << "\n";
    return 2;
  }

  // Signals wait for the watcher thread (started once the actors run), from
  // the start: a SIGTERM during startup still gets an ordered shutdown. Blocked
  // before CAF starts its threads, which inherit the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  if (print_default) {
    std::cout << default_agent_config_yaml();
    return 0;
  }
  AgentConfig config;
  try {
    config = config_path.empty() ? parse_agent_config(default_agent_config_yaml(), "built-in config")
                                 : load_agent_config(config_path);
    for (auto& o : overrides) apply_override(config, o);
    std::string origin = config_path.empty() ? "built-in config" : config_path;
    check_agent_config(config, origin);
    // VQL and artifacts: refused now, with the query named, rather than in a restart loop.
    auto sources = vql::agent_sources(vql::ArtifactRepository::builtin(), nullptr);
    for (auto& q : config.queries) try {
        sources.check(q);
      } catch (const std::exception& e) {
        throw ConfigError(origin + ": query " + q.name + ": " + e.what());
      }
  } catch (const ConfigError& e) {
    std::cerr << "outpost-agent: invalid configuration: " << e.what() << "\n";
    return 2;
  }
  try {
    setup_logging(config.log);
    if (config.link.kind == LinkSpec::Kind::file) {
      auto parent = std::filesystem::path(config.link.path).parent_path();
      if (!parent.empty()) std::filesystem::create_directories(parent);
    }
    return run(config, signals);
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    std::cerr << "outpost-agent: " << e.what() << "\n";
    return 1;
  }
}
