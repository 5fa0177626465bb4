#include "queries/agent_sources.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <regex>

#include "actors/test_sources.hpp"

namespace outpost::vql {

namespace {

// A query's parameter (text from a command line, a collector or a
// configuration) as a variable: "name:type" types it (string, int, float,
// bool); a plain name is an int when the text is one (no leading zero, so
// "007" stays text), a float when it is a decimal, a bool for true/false.
Binding typed_parameter(const std::string& given, const std::string& text) {
  size_t colon = given.find(':');
  std::string name = given.substr(0, colon);
  std::string type = colon == std::string::npos ? "" : given.substr(colon + 1);
  static const std::regex integer("-?(0|[1-9][0-9]*)"), decimal("-?[0-9]+(\\.[0-9]*)?([eE][-+]?[0-9]+)?");
  auto refuse = [&] { return ArtifactError("parameter " + name + ": \"" + text + "\" is not a" +
                                           (type == "int" ? "n int" : " " + type)); };
  auto as_int = [&]() -> std::optional<int64_t> {
    errno = 0;
    char* end = nullptr;
    long long v = std::strtoll(text.c_str(), &end, 10);
    if (!std::regex_match(text, integer) || errno == ERANGE) return std::nullopt;
    return v;
  };
  auto as_float = [&]() -> std::optional<double> {
    if (!std::regex_match(text, decimal)) return std::nullopt;
    double v = std::strtod(text.c_str(), nullptr);
    return std::isfinite(v) ? std::optional<double>(v) : std::nullopt;
  };
  auto as_bool = [&]() -> std::optional<bool> {
    std::string lower;
    for (char c : text) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower == "true" || lower == "false") return lower == "true";
    return std::nullopt;
  };
  if (type == "string") return {name, Value(text), nullptr};
  if (type == "int") {
    if (auto v = as_int()) return {name, Value(*v), nullptr};
    throw refuse();
  }
  if (type == "float") {
    if (auto v = as_float()) return {name, Value(*v), nullptr};
    throw refuse();
  }
  if (type == "bool") {
    if (auto v = as_bool()) return {name, Value(*v), nullptr};
    throw refuse();
  }
  if (!type.empty())
    throw ArtifactError("parameter " + given + ": no type " + type + " (string, int, float or bool)");
  if (auto v = as_int()) return {name, Value(*v), nullptr};
  if (auto v = as_float(); v && text.find_first_of(".eE") != std::string::npos) return {name, Value(*v), nullptr};
  if (auto v = as_bool()) return {name, Value(*v), nullptr};
  return {name, Value(text), nullptr};
}

PreparedQuery prepared(const Artifact& artifact, const SourceSpec& source, const ArtifactRepository& artifacts,
                       const Engine& engine) {
  PreparedQuery p;
  p.queries = artifacts.programs(artifact);
  for (auto& q : p.queries) engine.check(*q);  // its imports' and Artifact.X() calls' (a file's: check_links)
  p.parameters = bind_parameters(artifact, source.parameters);
  p.event = artifact.event;
  return p;
}

}  // namespace

PreparedQuery prepare(const SourceSpec& source, const ArtifactRepository& artifacts, const Engine& engine) {
  PreparedQuery p;
  if (source.kind == SourceSpec::Kind::vql) {
    p.queries.push_back(std::make_shared<const ast::Query>(engine.compile(source.query)));
    for (auto& [name, value] : source.parameters) p.parameters.push_back(typed_parameter(name, value));
    return p;
  }
  if (!source.definition.empty()) {  // the collector's: checked as a file of ours is
    if (source.definition.size() > kMaxDefinitionBytes)
      throw ArtifactError("the definition sent for " + source.name + " is " +
                          std::to_string(source.definition.size()) + " bytes, more than " +
                          std::to_string(kMaxDefinitionBytes));
    Artifact sent = parse_artifact(source.definition, "the definition sent for " + source.name, engine);
    if (sent.name != source.name)
      throw ArtifactError("the definition sent for " + source.name + " defines " + sent.name);
    return prepared(sent, source, artifacts, engine);
  }
  auto artifact = artifacts.find(source.name);
  if (!artifact) throw ArtifactError("unknown artifact " + source.name + " (see `outpost-agent artifacts list`)");
  return prepared(*artifact, source, artifacts, engine);
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
