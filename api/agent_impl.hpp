#pragma once
// The agent behind include/outpost/outpost.hpp: what outpost-agent's main()
// assembled before, minus signals, command line and printing.

#include <caf/actor_system.hpp>
#include <caf/logger.hpp>

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "actors/agent_config.hpp"
#include "actors/interfaces.hpp"
#include "actors/registry.hpp"
#include "outpost/outpost.hpp"
#include "net/agent/log_ring.hpp"
#include "queries/artifacts.hpp"
#include "queries/sensors.hpp"

namespace outpost {
namespace net {
class InspectorServer;
class MetricsServer;
}  // namespace net
namespace persistence {
class BufferStore;
}
class AckChannel;
class LogRoute;
class PushQueue;

// CAF 0.17 leaves a thread that built an actor system or spawned into it
// holding the system's logger, and the system's destructor waits until every
// holder lets go: a host thread that would hold it forever (it called
// start() or run_query(), and the agent is stopped from another) lets go
// when the call returns.
struct ReleaseCafLogger {
  ReleaseCafLogger() = default;
  ReleaseCafLogger(const ReleaseCafLogger&) = delete;
  ReleaseCafLogger& operator=(const ReleaseCafLogger&) = delete;
  ~ReleaseCafLogger() { caf::logger::set_current_actor_system(nullptr); }
};

struct Agent::Impl {
  // created -> running -> ended (the supervisor is down) -> stopped (every
  // actor and thread gone). stop() before start() goes to stopped at once.
  enum class Phase { created, running, ended, stopped };

  explicit Impl(AgentOptions o);
  ~Impl();

  // The configuration with its overrides, checked as a run needs it
  // (every query's VQL or artifact). Throws ConfigError. Any thread.
  AgentConfig load_config() const;
  // The configuration with its overrides, not checked further. Throws
  // ConfigError. Any thread.
  AgentConfig read_config() const;

  // What the agent's VQL runs with, from its configuration.
  struct VqlSetup {
    // The built-in artifacts and those of artifacts.paths, compiled with `registry`.
    std::shared_ptr<const vql::ArtifactRepository> artifacts;
    vql::LoadReport report;  // the files that did not load, or replaced another
    vql::Permissions permissions;  // vql.allow_execve
    vql::SensorSettings sensors;   // sensors.*
  };
  // Read (read_config()) and loaded on the first call, then the same.
  // Throws ConfigError (also when the host's plugins were refused). Any
  // thread; the first call blocks on reading the files.
  const VqlSetup& vql() const;

  // The agent's log: the ring `outpostctl logs` shows, and the host's log
  // sink or stderr, and `log.file` when set, at `level`. Throws
  // std::exception when the file cannot be opened. Any thread.
  std::shared_ptr<LogRoute> make_route(const std::string& level, const std::string& file) const;
  // The route start() made; null before. Any thread (takes the lock).
  const LogRoute* route() const;

  const AgentOptions options;
  // The plugins and functions its VQL may call: the built-in ones and the
  // host's (options.plugins, options.functions). Null when the host's were
  // refused, and `plugins_refused` says why (start() and run_query() answer it).
  std::shared_ptr<const vql::Registry> registry;
  std::string plugins_refused;
  // The lines `outpostctl logs` shows: the route writes them.
  std::shared_ptr<net::LogRing> logs = std::make_shared<net::LogRing>();

  mutable std::mutex vql_mutex;  // guards the one below
  mutable std::unique_ptr<const VqlSetup> vql_setup;  // set once, by vql()

  mutable std::mutex mutex;  // guards everything below
  std::condition_variable changed;
  Phase phase = Phase::created;
  bool stop_asked = false;
  bool tearing_down = false;  // one caller tears down; the others wait for stopped
  std::string failure;        // why the supervisor ended, when it failed
  unsigned queries_running = 0;              // run_query calls using `sys`
  std::set<std::function<void()>*> wakers;   // theirs: request_stop wakes them

  // Set by start(), reset by the teardown (in reverse order).
  std::shared_ptr<LogRoute> log_route;  // set once, by start(); kept to the end: late lines use it
  std::unique_ptr<AgentSystemConfig> cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::shared_ptr<persistence::BufferStore> store;
  std::unique_ptr<vql::SensorHub> sensors;
  std::unique_ptr<net::InspectorServer> inspector;
  std::unique_ptr<net::MetricsServer> metrics;
  supervisor_actor sup;
  std::shared_ptr<AckChannel> acks;  // a host link's (link: host), else null
  // Host sources' queues by query name; kept until the agent is destroyed
  // (push() uses one outside the lock).
  std::map<std::string, std::shared_ptr<PushQueue>> queues;

  // Sends the supervisor its shutdown (once) and wakes the one-shot queries.
  // Takes the lock.
  void ask_stop();
  // Waits (lock held) until the phase is ended or later, or `until`; false on timeout.
  bool wait_ended(std::unique_lock<std::mutex>& lock, std::chrono::steady_clock::time_point until);
  // From ended: ends the listeners and sensors, waits for every actor, ends
  // the actor system. Once; other callers wait for it. Lock held on entry and exit.
  void tear_down(std::unique_lock<std::mutex>& lock);
  // True on a thread of this agent's actor system, where waiting for the
  // actors to end would wait for ourselves. Lock held.
  bool on_own_thread() const;
};

// Warns of each artifact file that did not load or replaced another, on the
// current log route.
void log_load_report(const vql::LoadReport& report);

// What outpost-agent (Outpost's own binary) reaches beyond the public API.
struct AgentAccess {
  // Where the agent's lines go, for a thread of the program's own (its
  // signal thread) to log into; null before start(). Any thread.
  static const LogRoute* log_route(const Agent& agent) { return agent.impl_->route(); }
  // The artifacts it runs: the built-in ones and its configuration's
  // (artifacts.paths). Throws ConfigError. Any thread.
  static const Agent::Impl::VqlSetup& vql(const Agent& agent) { return agent.impl_->vql(); }
  // The plugins and functions its VQL may call. Throws ConfigError.
  static const vql::Registry& registry(const Agent& agent) {
    if (!agent.impl_->registry) throw ConfigError(agent.impl_->plugins_refused);
    return *agent.impl_->registry;
  }
};

}  // namespace outpost
