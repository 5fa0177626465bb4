// outpost-agent: runs the buffer, the link and the configured queries until
// SIGTERM or SIGINT, then shuts down in order (a second signal forces exit).
// Its subcommands (query, collect, artifacts) run VQL once, locally, with
// the same configuration (checked the same way, its log settings applied).

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
#include "actors/registry.hpp"
#include "actors/supervisor.hpp"
#include "actors/system_config.hpp"
#include "actors/test_sources.hpp"
#include "net/agent/inspector_server.hpp"
#include "net/agent/metrics_server.hpp"
#include "net/agent/log_ring.hpp"
#include "net/agent/net_link.hpp"
#include "queries/agent_sources.hpp"
#include "tools/agent_local.hpp"

namespace {

using namespace outpost;

// Log lines go to stderr, to log.file when one is given, and to the ring the
// inspector reads (`outpostctl logs`).
std::shared_ptr<net::LogRing> setup_logging(const LogSpec& log) {
  auto ring = std::make_shared<net::LogRing>();
  std::vector<spdlog::sink_ptr> sinks{std::make_shared<spdlog::sinks::stderr_color_sink_mt>(), ring};
  if (!log.file.empty()) sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(log.file));
  auto logger = std::make_shared<spdlog::logger>("outpost", sinks.begin(), sinks.end());
  logger->set_level(spdlog::level::from_str(log.level));
  logger->flush_on(spdlog::level::info);  // lifecycle lines reach the file at once
  spdlog::set_default_logger(logger);
  return ring;
}

// The configuration file (or the built-in one) with every override applied,
// checked as a run needs it: VQL and artifacts are refused now, with the
// query named, rather than in a restart loop. Throws ConfigError.
AgentConfig load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::string origin = path.empty() ? "built-in config" : path;
  AgentConfig config = path.empty() ? parse_agent_config(default_agent_config_yaml(), origin)
                                    : load_agent_config(path);
  for (auto& o : overrides) apply_override(config, o);
  check_agent_config(config, origin);
  auto sources = vql::agent_sources(vql::ArtifactRepository::builtin(), nullptr);
  for (auto& q : config.queries) try {
      sources.check(q);
    } catch (const std::exception& e) {
      throw ConfigError(origin + ": query " + q.name + ": " + e.what());
    }
  return config;
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
    if (!second) caf::anon_send(sup, shutdown_atom::value);
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

// The agent's name: its id on the link, else the host's.
std::string agent_name(const AgentConfig& config) {
  if (!config.link.agent_id.empty()) return config.link.agent_id;
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  return host;
}

// `inspector` makes the read-only inspector the collector may ask for.
link_actor spawn_link(caf::actor_system& sys, const buffer_actor& buf,
                      std::shared_ptr<const persistence::BufferStore> store, const LinkSpec& link,
                      std::function<kj::Own<inspector::Inspector::Server>(kj::Timer&)> inspector) {
  if (link.kind != LinkSpec::Kind::collector) {
    bool file = link.kind == LinkSpec::Kind::file;
    return spawn_file_link(sys, buf, file ? link.path : std::string{}, file);
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
  c.inspector = std::move(inspector);
  // Unreadable certificates are a configuration error: say so now, not in a retry loop.
  if (!c.tls.insecure) net::TlsSetup check(c.tls, false);
  auto reader = sys.spawn<caf::detached>(buffer_reader, std::move(store), buf);
  return sys.spawn(net::net_link, buf, reader, std::move(c));
}

// The inspector (outpostctl's socket), unless the configuration turns it off.
// One that cannot start is logged: the agent runs on without it.
std::unique_ptr<net::InspectorServer> start_inspector(caf::actor_system& sys, ActorRegistry& registry,
                                                      std::shared_ptr<net::LogRing> logs, supervisor_actor sup,
                                                      const AgentConfig& config) {
  if (config.inspector.socket.empty()) return nullptr;
  try {
    auto dir = std::filesystem::path(config.inspector.socket).parent_path();
    if (!dir.empty()) std::filesystem::create_directories(dir);
    return std::make_unique<net::InspectorServer>(
        net::InspectorContext{sys, registry, std::move(logs), std::move(sup), config.inspector, agent_name(config)});
  } catch (const std::exception& e) {
    spdlog::error("{}; running without an inspector", e.what());
    return nullptr;
  }
}

// The OpenMetrics listener, when the configuration names one. One that cannot
// start is logged: the agent runs on without it.
std::unique_ptr<net::MetricsServer> start_metrics(caf::actor_system& sys, ActorRegistry& registry,
                                                  const AgentConfig& config) {
  if (config.inspector.metrics.empty()) return nullptr;
  try {
    return std::make_unique<net::MetricsServer>(sys, registry, config.inspector.metrics);
  } catch (const std::exception& e) {
    spdlog::error("{}; running without a metrics listener", e.what());
    return nullptr;
  }
}

int run(const AgentConfig& config, sigset_t signals, std::shared_ptr<net::LogRing> logs) {
  // The store's limit includes the shutdown reserve (buffer_actor.hpp).
  auto store_options = config.buffer;
  uint64_t reserve = config.pending_budget;
  store_options.limit_bytes += std::min(reserve, UINT64_MAX - store_options.limit_bytes);
  auto store = std::make_shared<persistence::BufferStore>(store_options);
  if (auto& r = store->open_report(); r.set_aside_to || r.lost || r.lost_unknown)
    spdlog::error("buffer was damaged ({}): {} records salvaged, {} lost{}", r.reason, r.salvaged,
                  r.lost_unknown ? "an unknown number" : std::to_string(r.lost),
                  r.set_aside_to ? "; the damaged file is kept at " + r.set_aside_to->string() : "");
  auto stats = store->stats();
  spdlog::info("buffer {}: {} records, {} of {} bytes", config.buffer.dir.string(), stats.records,
               stats.live_bytes, config.buffer.limit_bytes);

  AgentSystemConfig cfg;
  caf::actor_system sys{configure_scheduler(cfg)};
  auto buf = sys.spawn<caf::detached>(buffer_with, store, BufferOptions{config.pending_budget, reserve});
  // The collector's operator sees the same as outpostctl, read-only.
  auto remote = config.inspector;
  remote.control = false;
  net::InspectorContext remote_context{sys, *cfg.registry, logs, supervisor_actor{}, remote, agent_name(config)};
  link_actor link = spawn_link(sys, buf, store, config.link, [remote_context](kj::Timer& timer) {
    return net::make_inspector_service(remote_context, timer);
  });
  caf::anon_send(buf, set_link_atom::value, link);
  auto sensors = std::make_unique<vql::SensorHub>(sys);
  auto sup = sys.spawn(supervisor, buf, link, config.queries,
                       vql::agent_sources(vql::ArtifactRepository::builtin(), sensors.get()), RestartPolicy{});
  // The collector's requests (collect, cancel, event table) reach the supervisor through the link.
  if (config.link.kind == LinkSpec::Kind::collector)
    caf::anon_send(caf::actor_cast<net_link_actor>(link), set_supervisor_atom::value, sup);
  auto inspector = start_inspector(sys, *cfg.registry, std::move(logs), sup, config);
  auto metrics = start_metrics(sys, *cfg.registry, config);
  spdlog::info("agent running: {} queries, link {}", config.queries.size(), describe(config.link));
  watch_signals(signals, sup);

  bool failed = false;
  {
    caf::scoped_actor self{sys};
    self->monitor(sup);
    self->receive([&](caf::down_msg& down) { failed = static_cast<bool>(down.reason); });
  }
  inspector.reset();
  metrics.reset();
  sensors.reset();  // the queries are gone: no sensor has a subscriber left
  sys.await_all_actors_done();
  spdlog::info("agent stopped{}", failed ? " after a failure" : "");
  return failed ? 1 : 0;
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
  app.add_flag("--print-default-config", print_default, "print the built-in configuration and exit");
  app.footer(
      "query, collect and artifacts run here, once, without buffer or link; they read and check "
      "the configuration as a run does, and log as its log section says. Exit codes: 0 done, 1 "
      "failed, 2 refused (usage, configuration, query), 130 forced by a second signal.");
  app.fallthrough();  // --config and --set may also follow a command

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
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help is 0; a usage error is refused, 2
  }

  if (print_default) {
    std::cout << default_agent_config_yaml();
    return 0;
  }
  AgentConfig config;
  try {
    config = load_config(config_path, overrides);
  } catch (const ConfigError& e) {
    std::cerr << "outpost-agent: invalid configuration: " << e.what() << "\n";
    return 2;
  }
  std::shared_ptr<net::LogRing> logs;
  try {
    logs = setup_logging(config.log);
  } catch (const std::exception& e) {
    std::cerr << "outpost-agent: log.file: " << e.what() << "\n";
    return 1;
  }

  if (*query_cmd || *collect_cmd || *artifacts_cmd) try {
    pthread_sigmask(SIG_UNBLOCK, &signals, nullptr);
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

  try {
    if (config.link.kind == LinkSpec::Kind::file) {
      auto parent = std::filesystem::path(config.link.path).parent_path();
      if (!parent.empty()) std::filesystem::create_directories(parent);
    }
    return run(config, signals, std::move(logs));
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());  // on stderr, and in the log file
    return 1;
  }
}
