#include "queries/agent_sources.hpp"

#include "actors/test_sources.hpp"

namespace outpost::vql {

PreparedQuery prepare(const SourceSpec& source, const ArtifactRepository& artifacts, const Engine& engine) {
  PreparedQuery p;
  if (source.kind == SourceSpec::Kind::vql) {
    p.queries.push_back(std::make_shared<const ast::Query>(engine.compile(source.query)));
    for (auto& [name, value] : source.parameters) p.parameters.push_back({name, Value(value), nullptr});
    return p;
  }
  auto artifact = artifacts.find(source.name);
  if (!artifact) throw ArtifactError("unknown artifact " + source.name + " (see `outpost-agent artifacts list`)");
  p.queries = artifacts.programs(*artifact);
  p.parameters = bind_parameters(*artifact, source.parameters);
  p.event = artifact->event;
  return p;
}

SourceFactory agent_sources(std::shared_ptr<const ArtifactRepository> artifacts, SensorHub* sensors,
                            std::shared_ptr<const Paths> paths, std::shared_ptr<const Registry> registry,
                            Permissions permissions) {
  // The engine refers to the registry and the artifacts: the lambdas keep all three.
  std::shared_ptr<const Engine> engine(
      new Engine(registry ? *registry : default_registry(), artifacts.get(), permissions),
      [registry, artifacts](const Engine* e) { delete e; });
  auto is_engine_source = [](const QuerySpec& q) {
    return q.source.kind == SourceSpec::Kind::vql || q.source.kind == SourceSpec::Kind::artifact;
  };
  return SourceFactory(
      [artifacts, sensors, paths, engine, is_engine_source](const QuerySpec& q) -> std::unique_ptr<Source> {
        if (!is_engine_source(q)) return make_test_source(q.source);
        auto p = prepare(q.source, *artifacts, *engine);
        return std::make_unique<VqlSource>(*engine, std::move(p.queries), p.parameters, paths, sensors, q.id);
      },
      [artifacts, engine, is_engine_source](const QuerySpec& q) {
        if (is_engine_source(q)) prepare(q.source, *artifacts, *engine);
      });
}

}  // namespace outpost::vql
