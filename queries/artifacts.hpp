#pragma once
// Artifacts: named, parameterized VQL in YAML, as Velociraptor writes them.
//
//   name: Linux.Sys.Pslist
//   description: Processes running now.
//   type: CLIENT                  # or CLIENT_EVENT (never ends)
//   parameters:
//     - name: ProcessRegex
//       default: .
//       type: regex                # string (default), int, bool, float, regex, timestamp
//                                  # (Velociraptor's str, hidden, choices, glob, yara are strings;
//                                  # int64 and integer are int)
//       description: Which processes.
//   sources:
//     - name: processes            # optional
//       query: SELECT * FROM pslist() WHERE Name =~ ProcessRegex
//
// Parameters become variables of every source's query; a caller may
// override their defaults. Keys Velociraptor uses and Outpost does not
// (author, reference, precondition, ...) are accepted and ignored; any other
// key is an error, so that a typo does not pass silently.

#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "queries/engine.hpp"

namespace outpost::vql {

class ArtifactError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Artifact {
  struct Parameter {
    std::string name;
    std::string default_value;
    std::string type = "string";  // the value's: string, int, bool, float, regex or timestamp
    std::string description;
  };
  struct Source {
    std::string name;
    std::string query;
    std::shared_ptr<const ast::Query> compiled;
  };
  std::string name;
  std::string description;
  bool event = false;  // type: CLIENT_EVENT
  std::vector<Parameter> parameters;
  std::vector<Source> sources;
  std::string yaml;  // as written
};

// Throws ArtifactError "<origin>: <key path>: <problem>"; every source's
// query is compiled (parsed, and its plugins and functions checked).
Artifact parse_artifact(const std::string& yaml, const std::string& origin, const Engine& engine);

// The parameters as variables: defaults, overridden by `given` (text, as a
// collector or a command line sends them), each converted to its type.
// Throws ArtifactError naming the artifact and the parameter.
std::vector<Binding> bind_parameters(const Artifact& artifact,
                                     const std::vector<std::pair<std::string, std::string>>& given);

class ArtifactRepository {
 public:
  // Outpost's own (queries/artifacts/*.yaml, built into the binary).
  static const ArtifactRepository& builtin();

  // Adds or replaces; throws ArtifactError for a file that does not parse.
  void add(Artifact artifact);
  void load_directory(const std::filesystem::path& dir, const Engine& engine);
  const Artifact* find(const std::string& name) const;
  const std::map<std::string, Artifact>& all() const { return artifacts_; }

 private:
  std::map<std::string, Artifact> artifacts_;
};

}  // namespace outpost::vql
