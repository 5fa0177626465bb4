#include "tools/agent_local.hpp"

#include <cctype>
#include <iostream>
#include <sstream>

#include "outpost/outpost.hpp"
#include "queries/artifacts.hpp"

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

int run_local_query(const std::string& vql, const Parameters& parameters, size_t max_rows) {
  Agent agent(AgentOptions{});
  return report(agent.run_query(vql, print, {parameters, max_rows}));
}

int run_local_artifact(const std::string& name, const Parameters& parameters, size_t max_rows) {
  Agent agent(AgentOptions{});
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

}  // namespace

int list_artifacts() {
  for (auto& [name, a] : vql::ArtifactRepository::builtin().all())
    std::cout << name << (a.event ? " (event)" : "") << ": " << first_sentence(a.description) << "\n";
  return 0;
}

int show_artifact(const std::string& name) {
  auto a = vql::ArtifactRepository::builtin().find(name);
  if (!a) {
    std::cerr << "outpost-agent: unknown artifact " << name << " (see `outpost-agent artifacts list`)\n";
    return 2;
  }
  std::cout << a->yaml;
  return 0;
}

}  // namespace outpost::tools
