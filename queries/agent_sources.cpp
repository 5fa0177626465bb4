#include "queries/agent_sources.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <charconv>
#include <fmt/format.h>

#include "actors/test_sources.hpp"

namespace outpost::vql {

namespace {

// A query's parameter (text from a command line, a collector or a
// configuration) as a variable: "name:type" types it (string, int, float,
// bool); a plain name is an int or a float when the number written back is
// the same text ("5", "2.5"; not "007", "1.10", "1e3", "+5": those stay
// text), a bool for true/false, text otherwise.
Binding typed_parameter(const std::string& given, const std::string& text) {
  size_t colon = given.find(':');
  std::string name = given.substr(0, colon);
  std::string type = colon == std::string::npos ? "" : given.substr(colon + 1);
  auto refuse = [&] { return ArtifactError("parameter " + name + ": \"" + text + "\" is not a" +
                                           (type == "int" ? "n int" : " " + type)); };
  auto as_int = [&](bool exact) -> std::optional<int64_t> {
    int64_t v = 0;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (error != std::errc() || end != text.data() + text.size() || (exact && std::to_string(v) != text))
      return std::nullopt;
    return v;
  };
  auto as_float = [&](bool exact) -> std::optional<double> {
    char* end = nullptr;
    double v = text.empty() || std::isspace(static_cast<unsigned char>(text[0])) ? NAN : std::strtod(text.c_str(), &end);
    if (!std::isfinite(v) || end != text.c_str() + text.size() || (exact && fmt::format("{}", v) != text))
      return std::nullopt;
    return v;
  };
  auto as_bool = [&]() -> std::optional<bool> {
    std::string lower;
    for (char c : text) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower == "true" || lower == "false") return lower == "true";
    return std::nullopt;
  };
  if (type == "string") return {name, Value(text), nullptr};
  if (type == "int") {
    if (auto v = as_int(false)) return {name, Value(*v), nullptr};
    throw refuse();
  }
  if (type == "float") {
    if (auto v = as_float(false)) return {name, Value(*v), nullptr};
    throw refuse();
  }
  if (type == "bool") {
    if (auto v = as_bool()) return {name, Value(*v), nullptr};
    throw refuse();
  }
  if (!type.empty())
    throw ArtifactError("parameter " + given + ": no type " + type + " (string, int, float or bool)");
  if (auto v = as_int(true)) return {name, Value(*v), nullptr};
  if (auto v = as_float(true)) return {name, Value(*v), nullptr};
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
