#include <caf/all.hpp>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <filesystem>

#include "actors/buffer_actor.hpp"
#include "actors/buffer_reader.hpp"
#include "actors/file_link.hpp"
#include "actors/instrumented.hpp"
#include "actors/log_route.hpp"
#include "actors/supervisor.hpp"
#include "actors/system_config.hpp"
#include "api/agent_impl.hpp"
#include "api/host_link.hpp"
#include "api/host_plugins.hpp"
#include "api/host_source.hpp"
#include "api/log_sink.hpp"
#include "net/agent/inspector_server.hpp"
#include "net/agent/metrics_server.hpp"
#include "net/agent/net_link.hpp"
#include "net/tls_config.hpp"
#include "queries/agent_sources.hpp"

namespace outpost {
namespace {

std::string describe(const LinkSpec& link) {
  switch (link.kind) {
    case LinkSpec::Kind::file: return "file " + link.path;
    case LinkSpec::Kind::offline: return "offline";
    case LinkSpec::Kind::host: return "the host's sink";
    case LinkSpec::Kind::collector:
      return "collector " + link.host + ":" + std::to_string(link.port) +
             (link.alternates.empty() ? "" : " (+" + std::to_string(link.alternates.size()) + " more)") +
             (link.insecure ? " (INSECURE: no TLS)" : " (TLS)");
  }
  return "?";
}

std::string host_name() {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  return host;
}

// The agent's name: its id on the link, else the host's.
std::string agent_name(const AgentConfig& config) {
  return config.link.agent_id.empty() ? host_name() : config.link.agent_id;
}

// `inspector` makes the read-only inspector the collector may ask for; a
// host link's acknowledgements go through `acks`.
link_actor spawn_link(caf::actor_system& sys, const buffer_actor& buf,
                      std::shared_ptr<const persistence::BufferStore> store, const LinkSpec& link,
                      std::function<kj::Own<inspector::Inspector::Server>(kj::Timer&)> inspector,
                      const Sink& sink, std::shared_ptr<AckChannel>& acks) {
  if (link.kind == LinkSpec::Kind::host) {
    auto [host, channel] = spawn_host_link(sys, buf, sink, link.max_unacked);
    acks = std::move(channel);
    return caf::actor_cast<link_actor>(host);
  }
  if (link.kind != LinkSpec::Kind::collector) {
    bool file = link.kind == LinkSpec::Kind::file;
    return spawn_file_link(sys, buf, file ? link.path : std::string{}, file);
  }
  net::ClientConfig c;
  c.host = link.host;
  c.port = link.port;
  c.alternates = link.alternates;
  c.server_name = link.server_name;
  c.tls = {link.ca, link.cert, link.key, link.insecure};
  c.claimed_id = link.agent_id;
  c.hostname = host_name();
  c.backoff = {link.backoff_initial, link.backoff_cap};
  c.max_delay = link.max_delay;
  c.inspector = std::move(inspector);
  auto reader = sys.spawn<caf::detached>(buffer_reader, std::move(store), buf);
  return sys.spawn(net::net_link, buf, reader, std::move(c));
}

// The inspector (outpostctl's socket), unless the configuration turns it off.
// One that cannot start is logged: the agent runs on without it.
std::unique_ptr<net::InspectorServer> start_inspector(net::InspectorContext context) {
  if (context.spec.socket.empty()) return nullptr;
  try {
    auto dir = std::filesystem::path(context.spec.socket).parent_path();
    if (!dir.empty()) std::filesystem::create_directories(dir);
    return std::make_unique<net::InspectorServer>(std::move(context));
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

// The engine's sources, and the host's for queries with `source: {type: host}`.
SourceFactory with_host_sources(SourceFactory engine, std::map<std::string, std::shared_ptr<PushQueue>> queues) {
  auto check = engine.check;
  return SourceFactory(
      [engine = std::move(engine), queues = std::move(queues)](const QuerySpec& q) -> std::unique_ptr<Source> {
        if (q.source.kind != SourceSpec::Kind::host) return engine(q);
        return std::make_unique<HostSource>(queues.at(q.name));
      },
      std::move(check));
}

// The buffer, opened (and salvaged when damaged). Throws on failure.
std::shared_ptr<persistence::BufferStore> open_buffer(const AgentConfig& config) {
  // The store's limit includes the shutdown reserve (buffer_actor.hpp).
  auto options = config.buffer;
  options.limit_bytes += std::min(config.pending_budget, UINT64_MAX - options.limit_bytes);
  auto store = std::make_shared<persistence::BufferStore>(options);
  if (auto& r = store->open_report(); r.set_aside_to || r.lost || r.lost_unknown)
    spdlog::error("buffer was damaged ({}): {} records salvaged, {} lost{}", r.reason, r.salvaged,
                  r.lost_unknown ? "an unknown number" : std::to_string(r.lost),
                  r.set_aside_to ? "; the damaged file is kept at " + r.set_aside_to->string() : "");
  auto stats = store->stats();
  spdlog::info("buffer {}: {} records, {} of {} bytes", config.buffer.dir.string(), stats.records,
               stats.live_bytes, config.buffer.limit_bytes);
  return store;
}

}  // namespace

const char* to_string(Errc code) {
  switch (code) {
    case Errc::ok: return "ok";
    case Errc::invalid_config: return "invalid_config";
    case Errc::invalid_query: return "invalid_query";
    case Errc::query_failed: return "query_failed";
    case Errc::io: return "io";
    case Errc::already_started: return "already_started";
    case Errc::timeout: return "timeout";
    case Errc::failed: return "failed";
    case Errc::would_block: return "would_block";
    case Errc::unknown_query: return "unknown_query";
    case Errc::not_running: return "not_running";
    case Errc::too_large: return "too_large";
  }
  return "unknown";
}

void log_load_report(const vql::LoadReport& report) {
  for (auto& f : report.failed) spdlog::warn("artifacts: {}: not loaded: {}", f.origin, f.message);
  for (auto& r : report.replaced) spdlog::warn("artifacts: {}: {}", r.origin, r.message);
}

Agent::Impl::Impl(AgentOptions o) : options(std::move(o)) {
  try {
    registry = host_registry(options.plugins, options.functions);
  } catch (const std::exception& e) {
    plugins_refused = std::string("AgentOptions: ") + e.what();
  }
}

Agent::Impl::~Impl() = default;

std::shared_ptr<LogRoute> Agent::Impl::make_route(const std::string& level, const std::string& file) const {
  std::vector<spdlog::sink_ptr> sinks{logs};
  if (options.log_sink)
    sinks.push_back(std::make_shared<HostLogSink>(options.log_sink));
  else
    sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  if (!file.empty()) sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(file));
  return std::make_shared<LogRoute>(std::move(sinks), spdlog::level::from_str(level));
}

const LogRoute* Agent::Impl::route() const {
  std::lock_guard<std::mutex> lock(mutex);
  return log_route.get();
}

AgentConfig Agent::Impl::read_config() const {
  AgentConfig config = parse_agent_config(
      options.config_yaml.empty() ? default_agent_config_yaml() : options.config_yaml, options.origin);
  for (auto& o : options.overrides) apply_override(config, o);
  return config;
}

const Agent::Impl::VqlSetup& Agent::Impl::vql() const {
  std::lock_guard<std::mutex> lock(vql_mutex);
  if (vql_setup) return *vql_setup;
  if (!registry) throw ConfigError(plugins_refused);
  AgentConfig config = read_config();
  auto setup = std::make_unique<VqlSetup>();
  setup->artifacts = vql::load_artifacts(config.artifact_paths, *registry, setup->report);
  setup->permissions.execve = config.allow_execve;
  vql::parse_backend(config.sensors.process_events, setup->sensors.process_events.backend);  // checked when read
  setup->sensors.process_events.ring_buffer_bytes = config.sensors.ring_buffer;
  vql_setup = std::move(setup);
  return *vql_setup;
}

AgentConfig Agent::Impl::load_config() const {
  const auto& origin = options.origin;
  AgentConfig config = read_config();
  check_agent_config(config, origin);
  auto& setup = vql();
  auto sources = vql::agent_sources(setup.artifacts, nullptr, vql::default_paths(), registry, setup.permissions);
  for (auto& q : config.queries) try {
      sources.check(q);
    } catch (const std::exception& e) {
      throw ConfigError(origin + ": query " + q.name + ": " + e.what());
    }
  bool host_link = config.link.kind == LinkSpec::Kind::host;
  if (host_link && !options.sink)
    throw ConfigError(origin + ": link: type host hands the records to the program that embeds Outpost, and this "
                               "one gave no sink (AgentOptions::sink)");
  if (!host_link && options.sink)
    throw ConfigError(origin + ": link: the program gives a sink (AgentOptions::sink), so the link's type must "
                               "be host");
  if (config.link.kind == LinkSpec::Kind::collector && !config.link.insecure) try {
      net::TlsSetup check(net::TlsFiles{config.link.ca, config.link.cert, config.link.key, false}, false);
    } catch (const std::exception& e) {
      throw ConfigError(origin + ": link: " + e.what());  // now, not in a retry loop
    }
  return config;
}

void Agent::Impl::ask_stop() {
  std::lock_guard<std::mutex> lock(mutex);
  if (stop_asked) return;
  stop_asked = true;
  for (auto& [name, queue] : queues) queue->close();  // what they hold goes with the hand-over
  if (sup) caf::anon_send(sup, shutdown_atom::value);  // else start() sends it when it has one
  // Under the lock: a query leaves the set (and its waker dies) only after taking it.
  for (auto* w : wakers) (*w)();
}

bool Agent::Impl::wait_ended(std::unique_lock<std::mutex>& lock, std::chrono::steady_clock::time_point until) {
  return changed.wait_until(lock, until, [&] { return phase != Phase::running; });
}

void Agent::Impl::tear_down(std::unique_lock<std::mutex>& lock) {
  if (phase == Phase::stopped) return;  // also after a refused start(): nothing ran
  if (tearing_down) return changed.wait(lock, [&] { return phase == Phase::stopped; });
  tearing_down = true;
  changed.wait(lock, [&] { return queries_running == 0; });
  lock.unlock();
  inspector.reset();
  metrics.reset();
  sensors.reset();  // the queries are gone: no sensor has a subscriber left
  sup = nullptr;
  if (acks) acks->close();  // the host's later acknowledgements find no link
  acks.reset();
  sys->await_all_actors_done();
  sys.reset();
  cfg.reset();
  store.reset();
  spdlog::info("agent stopped{}", failure.empty() ? "" : " after a failure");
  lock.lock();
  phase = Phase::stopped;
  changed.notify_all();
}

bool Agent::Impl::on_own_thread() const { return t_handling_system && t_handling_system == sys.get(); }

Agent::Agent(AgentOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Agent::~Agent() { stop(); }

std::string Agent::default_config_yaml() { return default_agent_config_yaml(); }

Result Agent::start() {
  auto& d = *impl_;
  {
    std::lock_guard<std::mutex> lock(d.mutex);
    if (d.phase != Impl::Phase::created || d.stop_asked)
      return {Errc::already_started, "this agent was started or stopped before: an Agent runs once"};
    d.phase = Impl::Phase::running;  // a concurrent start() is refused
  }
  auto refuse = [&](Errc code, std::string why) {
    std::lock_guard<std::mutex> lock(d.mutex);
    d.phase = Impl::Phase::stopped;  // nothing runs: stop() and wait() answer at once
    d.changed.notify_all();
    return Result{code, std::move(why)};
  };
  AgentConfig config;
  try {
    config = d.load_config();
  } catch (const std::exception& e) {
    return refuse(Errc::invalid_config, e.what());
  }
  std::shared_ptr<LogRoute> route;
  try {
    route = d.make_route(config.log.level, config.log.file);
  } catch (const std::exception& e) {
    return refuse(Errc::io, d.options.origin + ": log.file: " + e.what());
  }
  route_default_logger();
  {
    std::lock_guard<std::mutex> lock(d.mutex);
    d.log_route = route;
  }
  ScopedLogRoute log(route.get());
  auto& setup = d.vql();  // load_config() loaded it
  log_load_report(setup.report);
  std::shared_ptr<persistence::BufferStore> store;
  try {
    if (config.link.kind == LinkSpec::Kind::file) {
      auto parent = std::filesystem::path(config.link.path).parent_path();
      if (!parent.empty()) std::filesystem::create_directories(parent);
    }
    store = open_buffer(config);
  } catch (const std::exception& e) {
    return refuse(Errc::io, e.what());
  }

  auto cfg = std::make_unique<AgentSystemConfig>();
  cfg->registry->set_log_route(route.get());
  ReleaseCafLogger release;
  configure_scheduler(*cfg);
  if (d.options.worker_threads) cfg->set("scheduler.max-threads", d.options.worker_threads);
  auto sys = std::make_unique<caf::actor_system>(*cfg);
  uint64_t reserve = config.pending_budget;
  buffer_actor buf = sys->spawn<caf::detached>(buffer_with, store,
                                               BufferOptions{config.pending_budget, reserve, config.commit_interval});
  // The collector's operator sees the same as outpostctl, read-only.
  auto remote = config.inspector;
  remote.control = false;
  net::InspectorContext remote_context{*sys, *cfg->registry, d.logs, supervisor_actor{}, remote, agent_name(config)};
  std::shared_ptr<AckChannel> acks;
  link_actor link = spawn_link(
      *sys, buf, store, config.link,
      [remote_context](kj::Timer& timer) { return net::make_inspector_service(remote_context, timer); },
      d.options.sink, acks);
  caf::anon_send(buf, set_link_atom::value, link);
  auto sensors = std::make_unique<vql::SensorHub>(*sys, setup.sensors);
  std::map<std::string, std::shared_ptr<PushQueue>> queues;
  for (auto& q : config.queries)
    if (q.source.kind == SourceSpec::Kind::host)
      queues[q.name] = std::make_shared<PushQueue>(q, d.options.on_writable);
  auto sources = with_host_sources(
      vql::agent_sources(setup.artifacts, sensors.get(), vql::default_paths(), d.registry, setup.permissions), queues);
  supervisor_actor sup = sys->spawn(supervisor, buf, link, config.queries, std::move(sources), RestartPolicy{});
  // The collector's requests (collect, cancel, event table) reach the supervisor through the link.
  if (config.link.kind == LinkSpec::Kind::collector)
    caf::anon_send(caf::actor_cast<net_link_actor>(link), set_supervisor_atom::value, sup);
  // Ended (by a shutdown or a failure): the phase says so to every waiter.
  // (It runs on the thread the supervisor ends on, or here if it has already.)
  Impl* impl = &d;
  auto& system = *sys;
  caf::actor_cast<caf::abstract_actor*>(sup)->attach_functor([impl, &system](const caf::error& reason) {
    {
      std::lock_guard<std::mutex> lock(impl->mutex);
      if (reason) impl->failure = system.render(reason);
      impl->phase = Impl::Phase::ended;
    }
    impl->changed.notify_all();
  });
  auto inspector = start_inspector({*sys, *cfg->registry, d.logs, sup, config.inspector, agent_name(config)});
  auto metrics = start_metrics(*sys, *cfg->registry, config);
  spdlog::info("agent running: {} queries, link {}", config.queries.size(), describe(config.link));

  std::lock_guard<std::mutex> lock(d.mutex);
  d.cfg = std::move(cfg);
  d.sys = std::move(sys);
  d.store = std::move(store);
  d.sensors = std::move(sensors);
  d.inspector = std::move(inspector);
  d.metrics = std::move(metrics);
  d.sup = sup;
  d.acks = std::move(acks);
  d.queues = std::move(queues);
  if (d.stop_asked) caf::anon_send(sup, shutdown_atom::value);  // asked while starting
  return {};
}

Result Agent::check() const {
  try {
    impl_->load_config();
    return {};
  } catch (const std::exception& e) {
    return {Errc::invalid_config, e.what()};
  }
}

void Agent::request_stop() { impl_->ask_stop(); }

Result Agent::stop(std::chrono::milliseconds deadline) {
  auto& d = *impl_;
  {
    std::lock_guard<std::mutex> lock(d.mutex);
    if (d.phase == Impl::Phase::created) {
      d.stop_asked = true;  // start() refuses from now on
      d.phase = Impl::Phase::stopped;
      return {};
    }
  }
  ScopedLogRoute log(d.route());
  d.ask_stop();
  auto until = std::chrono::steady_clock::now() + deadline;
  std::unique_lock<std::mutex> lock(d.mutex);
  if (d.on_own_thread()) return {};  // waiting here would wait for ourselves
  Result result;
  if (!d.wait_ended(lock, until)) {
    // Past the deadline: end the actors now; the buffer keeps what it committed.
    result = {Errc::timeout, "the ordered shutdown did not finish within " + std::to_string(deadline.count()) +
                                 " ms: the agent's actors were ended"};
    spdlog::error("agent: {}", result.message);
    if (d.cfg)  // else start() is still starting them: it sends the shutdown when it is done
      for (auto& e : d.cfg->registry->live())  // every actor: the queries are not linked to the supervisor
        if (auto a = e.actor.lock()) caf::anon_send_exit(caf::actor_cast<caf::actor>(a), caf::exit_reason::kill);
    d.changed.wait(lock, [&] { return d.phase != Impl::Phase::running; });
  }
  d.tear_down(lock);
  if (result) result = d.failure.empty() ? Result{} : Result{Errc::failed, d.failure};
  return result;
}

namespace {

// The host query's queue, when the agent runs; else why not.
std::pair<PushQueue*, Result> queue_of(Agent::Impl& d, const std::string& query) {
  std::lock_guard<std::mutex> lock(d.mutex);
  if (d.phase != Agent::Impl::Phase::running || d.stop_asked)
    return {nullptr, {Errc::not_running, "the agent is not running"}};
  auto it = d.queues.find(query);
  if (it == d.queues.end())
    return {nullptr, {Errc::unknown_query, "no query named " + query + " has a host source (source: {type: host})"}};
  return {it->second.get(), {}};  // the agent keeps it until it is destroyed
}

Result answer(Errc code, const std::string& query) {
  switch (code) {
    case Errc::ok: return {};
    case Errc::would_block:
      return {code, "query " + query + " holds as many rows as it may (its queue_rows): the buffer is at its limit"};
    case Errc::too_large:
      return {code, "query " + query + ": the row alone is bigger than a record may be (" +
                        std::to_string(schemas::kMaxRecordBytes) + " bytes)"};
    default: return {code, "the agent is stopping"};
  }
}

}  // namespace

Result Agent::push(const std::string& query, const Row& row) {
  auto [queue, why] = queue_of(*impl_, query);
  return queue ? answer(queue->push(row), query) : why;
}

Result Agent::wait_writable(const std::string& query, std::chrono::milliseconds timeout) {
  auto [queue, why] = queue_of(*impl_, query);
  return queue ? answer(queue->wait_writable(timeout), query) : why;
}

Result Agent::wait() {
  auto& d = *impl_;
  ScopedLogRoute log(d.route());
  std::unique_lock<std::mutex> lock(d.mutex);
  if (d.phase == Impl::Phase::created) return {};
  d.changed.wait(lock, [&] { return d.phase != Impl::Phase::running; });
  d.tear_down(lock);
  return d.failure.empty() ? Result{} : Result{Errc::failed, d.failure};
}

}  // namespace outpost
