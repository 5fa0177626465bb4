#include "queries/artifact_check.hpp"

#include <re2/re2.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

#include "queries/parser.hpp"

namespace outpost::vql {
namespace {

// The thing a problem says is missing, as a summary key; empty when it
// says nothing a user could look up.
std::string need_of(const std::string& problem) {
  std::string name, arg, type;
  if (RE2::PartialMatch(problem, R"re(unknown plugin ([\w.]+)\(\))re", &name)) return "plugin " + name + "()";
  if (RE2::PartialMatch(problem, R"re(unknown function (\w+)\(\))re", &name)) return "function " + name + "()";
  if (RE2::PartialMatch(problem, R"re(Artifact\.([\w.]+)\(\): unknown artifact)re", &name)) return "artifact " + name;
  if (RE2::PartialMatch(problem, R"re(imports: unknown artifact ([\w.]+))re", &name)) return "artifact " + name;
  if (RE2::PartialMatch(problem, R"re(([\w.]+)\(\): (\w+): unknown argument)re", &name, &arg))
    return "argument " + name + "(" + arg + "=)";
  if (RE2::PartialMatch(problem, R"re(type "(\w+)" is filled in by Velociraptor's server)re", &type)) return "parameter type " + type;
  return "";
}

struct Scan {
  const Engine& engine;
  ArtifactCheck& check;
  Declared declared = {};

  void problem(const std::string& where, const std::string& what) {
    std::string line = where + ": " + what;
    if (std::find(check.problems.begin(), check.problems.end(), line) == check.problems.end())
      check.problems.push_back(line);
  }
  // Parses (the first syntax error is all a parser can tell), then lists
  // every unknown name.
  void vql(const std::string& where, const std::string& text) {
    try {
      for (auto& p : engine.problems(parse(text), declared)) problem(where, p);
    } catch (const ParseError& e) {
      problem(where, e.what());
      std::string what = e.what();
      auto colon = what.find(": ");  // after "line L, column C"
      check.needs.push_back("syntax: " + (colon == std::string::npos ? what : what.substr(colon + 2)));
    }
  }
};

std::string read(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

std::vector<ArtifactCheck> check_artifacts(const std::filesystem::path& path, const Registry& registry) {
  LoadReport report;
  auto repo = load_artifacts({path.string()}, registry, report);
  std::map<std::string, ArtifactCheck> by_file;
  for (auto& [name, a] : repo->all())
    if (a.origin != "built-in") by_file[a.origin] = ArtifactCheck{a.origin, a.name, true, {}, {}};
  Engine engine(registry, repo.get());
  for (auto& failed : report.failed) {
    auto& check = by_file[failed.origin];
    check.origin = failed.origin;
    check.problems.push_back(failed.message);
    if (auto need = need_of(failed.message); !need.empty()) check.needs.push_back(need);
    try {
      YAML::Node root = YAML::Load(read(failed.origin));
      if (root.IsMap() && root["name"] && root["name"].IsScalar()) check.name = root["name"].Scalar();
      Scan scan{engine, check, declared_lets(root)};
      for_each_vql(root, [&](const std::string& where, const std::string& text) { scan.vql(where, text); });
    } catch (const std::exception&) {
      // The YAML itself is broken: the load's message says where.
    }
  }
  std::vector<ArtifactCheck> out;
  for (auto& [file, check] : by_file) {
    for (auto& p : check.problems)
      if (auto need = need_of(p); !need.empty()) check.needs.push_back(need);
    std::sort(check.needs.begin(), check.needs.end());
    check.needs.erase(std::unique(check.needs.begin(), check.needs.end()), check.needs.end());
    out.push_back(std::move(check));
  }
  return out;
}

}  // namespace outpost::vql
