// ArtifactRepository: loading definitions, compiling an artifact into the
// queries it runs, and Artifact.Name() calls from VQL.

#include <algorithm>
#include <fstream>
#include <sstream>

#include "queries/artifacts.hpp"

namespace outpost::vql {

// Generated from queries/artifacts/*.yaml (embed_artifacts.cmake).
extern const char* const kBuiltinArtifacts[][2];
extern const size_t kBuiltinArtifactCount;

namespace {

bool is_definition(const std::filesystem::path& p) { return p.extension() == ".yaml" || p.extension() == ".yml"; }

// The files below `path`, in name order; what cannot be listed is reported.
std::vector<std::filesystem::path> definition_files(const std::filesystem::path& path, LoadReport& report) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(path, ec)) {
    if (fs::exists(path, ec)) return {path};
    report.failed.push_back({path.string(), "no such file or directory"});
    return {};
  }
  std::vector<fs::path> files;
  fs::recursive_directory_iterator it(path, fs::directory_options::skip_permission_denied, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
    if (it->is_regular_file(ec) && is_definition(it->path())) files.push_back(it->path());
  if (ec) report.failed.push_back({path.string(), "cannot list: " + ec.message()});
  std::sort(files.begin(), files.end());
  return files;
}

void append(std::vector<ast::Statement>& to, const std::shared_ptr<const ast::Query>& from) {
  if (from) to.insert(to.end(), from->statements.begin(), from->statements.end());
}

}  // namespace

void ArtifactRepository::add(Artifact artifact) {
  auto name = artifact.name;
  artifacts_.insert_or_assign(name, std::move(artifact));
}

void ArtifactRepository::load(const std::filesystem::path& path, const Engine& engine, LoadReport& report) {
  for (auto& file : definition_files(path, report)) {
    std::ifstream in(file, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) {
      report.failed.push_back({file.string(), "cannot read"});
      continue;
    }
    try {
      Artifact a = parse_artifact(text.str(), file.string(), engine);
      if (auto old = find(a.name))
        report.replaced.push_back({file.string(), a.name + " replaces the one from " + old->origin});
      add(std::move(a));
    } catch (const ArtifactError& e) {
      std::string message = e.what();  // "<file>: <where>: <problem>"
      if (message.rfind(file.string() + ": ", 0) == 0) message.erase(0, file.string().size() + 2);
      report.failed.push_back({file.string(), message});
    }
  }
}

void ArtifactRepository::check_links(const Registry& registry, LoadReport& report) {
  Engine engine(registry, this);
  for (bool removed = true; removed;) {  // one removed may break those that use it
    removed = false;
    for (auto it = artifacts_.begin(); it != artifacts_.end();) {
      try {
        for (auto& q : programs(it->second)) engine.check(*q);
        ++it;
      } catch (const std::exception& e) {
        report.failed.push_back({it->second.origin, e.what()});
        it = artifacts_.erase(it);
        removed = true;
      }
    }
  }
}

const Artifact* ArtifactRepository::find(const std::string& name) const {
  auto it = artifacts_.find(name);
  return it == artifacts_.end() ? nullptr : &it->second;
}

QueryPtrs ArtifactRepository::programs(const Artifact& a, const RunOptions& options) const {
  std::vector<ast::Statement> prelude;  // Velociraptor's order: conversions, its export, then each import's
  append(prelude, a.conversions);
  append(prelude, a.exports);
  for (auto& name : a.imports) {
    auto other = find(name);
    if (!other) throw ArtifactError(a.name + ": imports: unknown artifact " + name);
    append(prelude, other->exports);
  }
  std::vector<const Artifact::Source*> sources;
  for (auto& s : a.sources)
    if (options.source.empty() || s.name == options.source) sources.push_back(&s);
  if (sources.empty()) {
    std::string names;
    for (auto& s : a.sources) names += (names.empty() ? "" : ", ") + (s.name.empty() ? "(unnamed)" : s.name);
    throw ArtifactError(a.name + ": no source named " + options.source + "; it has " + names);
  }
  auto program = [&](const std::vector<const Artifact::Source*>& these, std::shared_ptr<const ast::Query> precondition) {
    auto q = std::make_shared<ast::Query>();
    q->statements = prelude;
    for (auto* s : these) {
      size_t first = q->statements.size();
      append(q->statements, s->compiled);
      if (q->statements.size() > first && q->statements.back().select)
        q->statements.back().result = a.source_label(*s);
    }
    if (options.preconditions && precondition && a.conversions) {  // it reads the parameters as the sources do
      auto converted = std::make_shared<ast::Query>();
      append(converted->statements, a.conversions);
      append(converted->statements, precondition);
      precondition = std::move(converted);
    }
    if (options.preconditions) q->precondition = std::move(precondition);
    return std::shared_ptr<const ast::Query>(std::move(q));
  };
  bool own_preconditions = std::any_of(sources.begin(), sources.end(), [](auto* s) { return bool(s->precondition); });
  if (!a.event && (a.precondition || !own_preconditions)) return {program(sources, a.precondition)};
  QueryPtrs out;
  for (auto* s : sources) out.push_back(program({s}, s->precondition ? s->precondition : a.precondition));
  return out;
}

void ArtifactRepository::check_call(const std::string& name, const std::vector<std::string>& arguments) const {
  auto a = find(name);
  if (!a) throw QueryError("Artifact." + name + "(): unknown artifact");
  for (auto& arg : arguments) {
    if (arg == "source" || arg == "preconditions") continue;
    if (std::none_of(a->parameters.begin(), a->parameters.end(), [&](auto& p) { return p.name == arg; }))
      throw QueryError("Artifact." + name + "(): " + arg + ": not a parameter of " + name);
  }
}

std::unique_ptr<RowStream> ArtifactRepository::call(const std::string& name, const Args& arguments,
                                                    const ScopePtr& caller, RunContext& context) const {
  auto a = find(name);
  if (!a) throw QueryError("Artifact." + name + "(): unknown artifact");
  RunOptions options;
  options.preconditions = false;  // as Velociraptor's calls: only when asked
  std::vector<std::pair<std::string, Value>> values;
  for (auto& [arg, value] : arguments.values()) {
    if (arg == "source")
      options.source = arguments.string("source").value_or("");
    else if (arg == "preconditions")
      options.preconditions = truthy(value);
    else
      values.emplace_back(arg, value);
  }
  std::vector<Binding> bindings;
  QueryPtrs queries;
  try {
    bindings = bind_values(*a, values);
    queries = programs(*a, options);
  } catch (const ArtifactError& e) {
    throw QueryError("Artifact." + name + "(): " + e.what());
  }
  Caller from{caller, context.artifact_depth + 1, true};
  std::vector<std::unique_ptr<RowStream>> streams;
  for (auto& q : queries) streams.push_back(context.engine.start(*q, bindings, context.env, from));
  return a->event ? merge_streams(std::move(streams)) : chain_streams(std::move(streams));
}

const ArtifactRepository& ArtifactRepository::builtin() {
  static const ArtifactRepository repo = [] {
    ArtifactRepository r;
    Engine engine(default_registry());
    for (size_t i = 0; i < kBuiltinArtifactCount; ++i) {
      Artifact a = parse_artifact(kBuiltinArtifacts[i][1], kBuiltinArtifacts[i][0], engine);
      a.origin = "built-in";
      r.add(std::move(a));
    }
    return r;
  }();
  return repo;
}

std::shared_ptr<const ArtifactRepository> load_artifacts(const std::vector<std::string>& paths,
                                                         const Registry& registry, LoadReport& report) {
  auto repo = std::make_shared<ArtifactRepository>(ArtifactRepository::builtin());
  Engine engine(registry);
  for (auto& p : paths) repo->load(p, engine, report);
  if (!paths.empty()) repo->check_links(registry, report);
  report.loaded = static_cast<size_t>(std::count_if(repo->all().begin(), repo->all().end(),
                                                    [](auto& entry) { return entry.second.origin != "built-in"; }));
  return repo;
}

}  // namespace outpost::vql
