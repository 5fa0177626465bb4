#pragma once
// Query specs and sources the benchmarks spawn by the thousand.

#include <caf/scoped_actor.hpp>
#include <fmt/format.h>

#include "actors/query_actor.hpp"
#include "actors/registry.hpp"
#include "actors/system_config.hpp"
#include "actors/test_sources.hpp"
#include "actors/waker.hpp"

namespace outpost::bench {

inline const SourceFactory kTestSources{[](const QuerySpec& q) { return make_test_source(q.source); }};

// What every benchmark agent starts from: an actor system scheduled like the
// agent's (its actors counted, as the agent's are, unless `counters` is false),
// a blocking handle into it, and the waker its queries sleep on.
struct BenchSystem {
  explicit BenchSystem(bool counters = true) : cfg(counters) {}
  AgentSystemConfig cfg;
  caf::actor_system sys{configure_scheduler(cfg)};
  caf::scoped_actor self{sys};
  waker_actor wake = sys.spawn(waker);
};

inline QuerySpec bench_query(uint64_t id, const std::string& artifact, SourceSpec::Kind kind) {
  QuerySpec q;
  q.id = id;
  q.name = fmt::format("{}-{}", artifact, id);
  q.artifact = artifact;
  q.source.kind = kind;
  return q;
}

}  // namespace outpost::bench
