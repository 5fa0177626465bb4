// Agent::run_query, run_artifact and status_json: VQL run once on the
// caller's thread, in the running agent's actor system or in one of its own.

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <mutex>

#include "actors/log_route.hpp"
#include "actors/system_config.hpp"
#include "api/agent_impl.hpp"
#include "queries/agent_sources.hpp"

namespace outpost {
namespace {

using namespace vql;

// Pulls the streams on this thread, parking until a source wakes it (or its
// wait is over, or the agent is stopping), and hands rows to `on_row`.
Result pull(PreparedQuery& p, Engine engine, caf::actor_system& sys, SensorHub& hub, Agent::Impl* agent,
            const RowCallback& on_row, uint64_t max_rows) {
  std::mutex mutex;
  std::condition_variable woken;
  bool wake = false;
  std::function<void()> waker = [&] {
    std::lock_guard<std::mutex> lock(mutex);
    wake = true;
    woken.notify_one();
  };
  Env env;
  env.sensors = &hub;
  env.system = &sys;
  env.wake = waker;
  // Registered while it runs, so that request_stop() ends an event query.
  auto stopping = [&] {
    if (!agent) return false;
    std::lock_guard<std::mutex> lock(agent->mutex);
    return agent->stop_asked;
  };
  if (agent) {
    std::lock_guard<std::mutex> lock(agent->mutex);
    agent->wakers.insert(&waker);
  }
  struct Unregister {
    Agent::Impl* agent;
    std::function<void()>* waker;
    ~Unregister() {
      if (!agent) return;
      std::lock_guard<std::mutex> lock(agent->mutex);
      agent->wakers.erase(waker);
    }
  } unregister{agent, &waker};
  try {
    std::vector<std::unique_ptr<RowStream>> streams;
    for (auto& q : p.queries) streams.push_back(engine.start(*q, p.parameters, env));
    auto stream = merge_streams(std::move(streams));
    uint64_t handed = 0;
    for (;;) {
      std::vector<vql::Row> rows;
      Step step = stream->next(rows, 256);
      for (auto& r : rows) {
        if (!on_row(to_json(r))) return {};
        if (max_rows && ++handed >= max_rows) return {};
      }
      if (uint64_t dropped = std::exchange(env.dropped_events, 0))
        spdlog::warn("query: {} events dropped at the source", dropped);
      if (step.state == Step::State::done || stopping()) return {};
      std::unique_lock<std::mutex> lock(mutex);
      if (step.state == Step::State::parked)
        woken.wait(lock, [&] { return wake; });
      else if (step.state == Step::State::wait)
        woken.wait_for(lock, step.wait, [&] { return wake; });
      wake = false;
    }
  } catch (const std::exception& e) {
    return {Errc::query_failed, e.what()};
  }
}

// In the running agent; otherwise, unless `agent_only`, in a system of its own.
Result run(Agent::Impl& d, const SourceSpec& spec, const RowCallback& on_row, uint64_t max_rows,
           bool agent_only = false) {
  if (!d.registry) return {Errc::invalid_query, d.plugins_refused};
  const Registry& registry = *d.registry;
  const Agent::Impl::VqlSetup* setup = nullptr;
  try {
    setup = &d.vql();
  } catch (const std::exception& e) {
    return {Errc::invalid_config, e.what()};
  }
  const Engine engine(registry, setup->artifacts.get(), setup->permissions);
  PreparedQuery p;
  try {
    p = prepare(spec, *setup->artifacts, engine);
  } catch (const std::exception& e) {
    return {Errc::invalid_query, e.what()};
  }
  {
    std::unique_lock<std::mutex> lock(d.mutex);
    if (d.phase == Agent::Impl::Phase::running && d.sys && !d.stop_asked) {
      ++d.queries_running;  // the teardown waits for it
      lock.unlock();
      Result r;
      {
        ScopedLogRoute log(d.log_route.get());
        ReleaseCafLogger release;  // it spawns into the agent's system
        r = pull(p, engine, *d.sys, *d.sensors, &d, on_row, max_rows);
      }
      lock.lock();
      --d.queries_running;
      d.changed.notify_all();
      return r;
    }
    if (agent_only) return {Errc::query_failed, "the agent is not running"};
  }
  // Not running: a system of its own, whose actors() lists this run's own actors (its sensors),
  // logging at info to the host's sink or stderr.
  auto route = d.make_route("info", "");
  route_default_logger();
  ScopedLogRoute log(route.get());
  log_load_report(setup->report);
  AgentSystemConfig cfg;
  cfg.registry->set_log_route(route.get());
  caf::actor_system sys{configure_scheduler(cfg)};
  Result r;
  {
    SensorHub hub(sys, setup->sensors);
    r = pull(p, engine, sys, hub, nullptr, on_row, max_rows);
  }
  sys.await_all_actors_done();
  return r;
}

SourceSpec source(SourceSpec::Kind kind, const std::string& text, const QueryOptions& options) {
  SourceSpec spec;
  spec.kind = kind;
  (kind == SourceSpec::Kind::vql ? spec.query : spec.name) = text;
  spec.parameters = options.parameters;
  return spec;
}

}  // namespace

Result Agent::run_query(const std::string& vql, const RowCallback& on_row, const QueryOptions& options) {
  return run(*impl_, source(SourceSpec::Kind::vql, vql, options), on_row, options.max_rows);
}

Result Agent::run_artifact(const std::string& name, const RowCallback& on_row, const QueryOptions& options) {
  return run(*impl_, source(SourceSpec::Kind::artifact, name, options), on_row, options.max_rows);
}

std::string Agent::status_json() const {
  std::string out = "[";
  auto r = run(*impl_, source(SourceSpec::Kind::vql, "SELECT * FROM actors()", {}), [&](const std::string& row) {
    out += (out.size() > 1 ? "," : "") + row;
    return true;
  }, 0, true);
  return r ? out + "]" : "[]";
}

}  // namespace outpost
