#include "tools/agent_local.hpp"

#include <cctype>
#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>

#include "api/agent_impl.hpp"
#include "outpost/outpost.hpp"
#include "queries/artifact_check.hpp"

namespace outpost::tools {
namespace {

// Prints the rows as they come; 0 done, 1 failed while running, 2 refused.
int report(const Result& r) {
  if (r) return 0;
  std::cerr << "outpost-agent: " << r.message << "\n";
  return r.code == Errc::invalid_query ? 2 : 1;
}

bool print(const std::string& row) {
  std::cout << row << std::endl;
  return true;
}

}  // namespace

std::pair<std::string, std::string> parse_parameter(const std::string& text) {
  auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) throw std::invalid_argument("parameter \"" + text + "\": expected name=value");
  return {text.substr(0, eq), text.substr(eq + 1)};
}

int run_local_query(Agent& agent, const std::string& vql, const Parameters& parameters, size_t max_rows) {
  return report(agent.run_query(vql, print, {parameters, max_rows}));
}

int run_local_artifact(Agent& agent, const std::string& name, const Parameters& parameters, size_t max_rows) {
  return report(agent.run_artifact(name, print, {parameters, max_rows}));
}

namespace {

// A description's first sentence, on one line: up to the first '.', '!' or
// '?' that ends the text or is followed by a space and a capital letter (so
// "e.g. this" and "/proc/net.x" do not end it); the whole text if none does.
std::string first_sentence(const std::string& description) {
  std::string text;  // the words, one space between each
  std::istringstream words(description);
  for (std::string word; words >> word;) text += (text.empty() ? "" : " ") + word;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '.' && text[i] != '!' && text[i] != '?') continue;
    if (i + 1 == text.size()) break;
    if (text[i + 1] == ' ' && i + 2 < text.size() && std::isupper(static_cast<unsigned char>(text[i + 2])))
      return text.substr(0, i + 1);
  }
  return text;
}

// The agent's artifacts; what did not load is said on stderr.
std::shared_ptr<const vql::ArtifactRepository> artifacts_of(const Agent& agent) {
  auto& setup = AgentAccess::vql(agent);
  auto& report = setup.report;
  auto repo = setup.artifacts;
  for (auto& f : report.failed) std::cerr << "outpost-agent: " << f.origin << ": not loaded: " << f.message << "\n";
  for (auto& r : report.replaced) std::cerr << "outpost-agent: " << r.origin << ": " << r.message << "\n";
  return repo;
}

}  // namespace

int list_artifacts(const Agent& agent) {
  for (auto& [name, a] : artifacts_of(agent)->all())
    std::cout << name << (a.event ? " (event)" : "") << ": " << first_sentence(a.description) << "\n";
  return 0;
}

int show_artifact(const Agent& agent, const std::string& name) {
  auto repo = artifacts_of(agent);
  auto a = repo->find(name);
  if (!a) {
    std::cerr << "outpost-agent: unknown artifact " << name << " (see `outpost-agent artifacts list`)\n";
    return 2;
  }
  std::cout << a->yaml;
  return 0;
}

int check_artifacts(const Agent& agent, const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    std::cerr << "outpost-agent: " << path << ": no such file or directory\n";
    return 2;
  }
  auto checks = vql::check_artifacts(path, AgentAccess::registry(agent));
  if (checks.empty()) {
    std::cerr << "outpost-agent: " << path << ": no artifact definitions (*.yaml, *.yml) there\n";
    return 2;
  }
  size_t loads = 0;
  std::map<std::string, size_t> wanted;  // each need, by how many definitions have it
  for (auto& c : checks) {
    std::cout << (c.name.empty() ? "(no name)" : c.name) << " (" << c.origin << "): "
              << (c.loads ? "loads" : "does not load") << "\n";
    loads += c.loads;
    for (auto& n : c.needs) {
      std::cout << "  needs " << n << "\n";
      ++wanted[n];
    }
    for (auto& p : c.problems) std::cout << "  " << p << "\n";
  }
  std::cout << "\n" << loads << " of " << checks.size() << " load.\n";
  if (wanted.empty()) return loads == checks.size() ? 0 : 1;
  std::vector<std::pair<size_t, std::string>> ranked;
  for (auto& [need, count] : wanted) ranked.emplace_back(count, need);
  std::stable_sort(ranked.begin(), ranked.end(), [](auto& a, auto& b) { return a.first > b.first; });
  std::cout << "What the others need, by how many definitions need it:\n";
  for (auto& [count, need] : ranked) std::cout << "  " << count << "  " << need << "\n";
  return 1;
}

}  // namespace outpost::tools
