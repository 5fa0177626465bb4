#pragma once
// What the agent runs a query spec with: VQL and artifacts through the
// engine, the built-in test sources otherwise.

#include "actors/query_actor.hpp"
#include "queries/artifacts.hpp"
#include "queries/sensors.hpp"
#include "queries/vql_source.hpp"

namespace outpost::vql {

// The compiled queries of a VQL or artifact source, with its parameters as
// variables: the agent's artifact of that name, or the definition the
// collector sent (at most kMaxDefinitionBytes). Throws (ParseError,
// QueryError, ArtifactError) naming what is wrong.
inline constexpr size_t kMaxDefinitionBytes = 1 << 20;
struct PreparedQuery {
  std::vector<std::shared_ptr<const ast::Query>> queries;
  std::vector<Binding> parameters;
  bool event = false;  // an event artifact, or VQL using an event plugin
};
PreparedQuery prepare(const SourceSpec& source, const ArtifactRepository& artifacts, const Engine& engine);

// make() and check() for the supervisor. `sensors` must outlive the
// queries. `registry`: the plugins and functions VQL may call; null:
// default_registry(). `permissions`: what the configuration allows beyond reading.
SourceFactory agent_sources(std::shared_ptr<const ArtifactRepository> artifacts, SensorHub* sensors,
                            std::shared_ptr<const Paths> paths = default_paths(),
                            std::shared_ptr<const Registry> registry = nullptr, Permissions permissions = {});

}  // namespace outpost::vql
