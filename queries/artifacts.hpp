#pragma once
// Artifacts: named, parameterized VQL in YAML, as Velociraptor writes them.
//
//   name: Linux.Sys.Pslist
//   description: Processes running now.
//   type: CLIENT                  # or CLIENT_EVENT (never ends)
//   precondition: SELECT OS FROM info() WHERE OS = 'linux'
//   parameters:
//     - name: ProcessRegex
//       default: .
//       type: regex                # string (default), int, bool, float, regex, timestamp,
//                                  # csv, json, json_array, upload, upload_file
//                                  # (Velociraptor's str, hidden, choices, glob, yara are strings;
//                                  # int64 and integer are int)
//       description: Which processes.
//   export: LET helper = ...       # statements for its sources and for artifacts importing it
//   imports: [Other.Artifact]      # their `export` statements come before the sources
//   sources:
//     - name: processes            # optional
//       precondition: SELECT ...   # optional: this source runs only if it gives a row
//       query: SELECT * FROM pslist() WHERE Name =~ ProcessRegex
//
// Parameters become variables of every source's query; a caller may
// override their defaults. Keys Velociraptor uses and Outpost does not
// (author, reference, column_types, ...) are accepted and ignored; any other
// key is an error, so that a typo does not pass silently.
//
// How the sources run is Velociraptor's: in order, in one scope (a LET of
// the first is seen by the second), after the artifact's precondition gave a
// row. When sources have preconditions of their own and the artifact has
// none, or the artifact is an event artifact, each source runs on its own,
// with its own scope and precondition.

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "queries/engine.hpp"

namespace YAML {
class Node;
}

namespace outpost::vql {

class ArtifactError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

using QueryPtrs = std::vector<std::shared_ptr<const ast::Query>>;

struct Artifact {
  struct Parameter {
    std::string name;
    std::string default_value;
    // The value's: string, int, bool, float, regex, timestamp, csv, json,
    // json_array, upload (a file's content) or upload_file (a file's path).
    std::string type = "string";
    std::string description;
  };
  struct Source {
    std::string name;
    std::string query;
    std::shared_ptr<const ast::Query> compiled;
    std::shared_ptr<const ast::Query> precondition;  // null: none
  };
  std::string name;
  std::string description;
  bool event = false;  // type: CLIENT_EVENT
  std::vector<Parameter> parameters;
  std::shared_ptr<const ast::Query> precondition;  // null: none
  std::shared_ptr<const ast::Query> conversions;   // LETs of upload_file parameters; null: none
  std::shared_ptr<const ast::Query> exports;       // null: none
  std::vector<std::string> imports;
  std::vector<Source> sources;
  std::string yaml;    // as written
  std::string origin;  // the file it came from, or "built-in"

  // "Name", or "Name/Source" for a named source: its rows' _Source.
  std::string source_label(const Source& s) const { return s.name.empty() ? name : name + "/" + s.name; }
};

// Throws ArtifactError "<origin>: <key path>: <problem>"; every source's
// query is compiled (parsed, and its plugins and functions checked).
Artifact parse_artifact(const std::string& yaml, const std::string& origin, const Engine& engine);

// Each VQL text of an artifact's YAML, as far as it has the expected shape:
// `fn(where, vql)` for the precondition, the export, and each source's
// precondition and query (its `queries` list as one text).
void for_each_vql(const YAML::Node& root, const std::function<void(const std::string&, const std::string&)>& fn);

// What those texts define with LET (as far as they parse), callable from
// each of them; any name when the artifact imports others.
Declared declared_lets(const YAML::Node& root);

// The parameters as variables: defaults, overridden by `given` (text, as a
// collector or a command line sends them), each converted to its type.
// Throws ArtifactError naming the artifact and the parameter.
std::vector<Binding> bind_parameters(const Artifact& artifact,
                                     const std::vector<std::pair<std::string, std::string>>& given);
// The same for values from VQL (Artifact.X(Param=...)): text is converted,
// values of the parameter's type are kept.
std::vector<Binding> bind_values(const Artifact& artifact, const std::vector<std::pair<std::string, Value>>& given);

// A definition that did not load, or that replaced another.
struct LoadProblem {
  std::string origin;  // the file
  std::string message;
};
struct LoadReport {
  size_t loaded = 0;  // load_artifacts(): the definitions from files now in the repository
  std::vector<LoadProblem> failed;    // not loaded: what is wrong, where
  std::vector<LoadProblem> replaced;  // loaded over another of its name (a built-in, an earlier file)
};

// Which of an artifact's queries run, and how.
struct RunOptions {
  std::string source;         // only this source (its name); empty: all
  bool preconditions = true;  // false: run without checking them
};

// Not shared while being changed; once loaded, its const methods are safe
// to call from any thread.
class ArtifactRepository : public ArtifactCalls {
 public:
  // Outpost's own (queries/artifacts/*.yaml, built into the binary).
  static const ArtifactRepository& builtin();

  // Adds or replaces.
  void add(Artifact artifact);
  // Loads every *.yaml and *.yml below `path` (a directory, recursively, in
  // name order; or one file), compiled by `engine`. A file that does not
  // load is reported and the others load.
  void load(const std::filesystem::path& path, const Engine& engine, LoadReport& report);
  // Once all are loaded: removes (and reports) artifacts whose imports or
  // Artifact.X() calls name an artifact that is not here, or arguments it
  // does not take.
  void check_links(const Registry& registry, LoadReport& report);

  const Artifact* find(const std::string& name) const;
  const std::map<std::string, Artifact>& all() const { return artifacts_; }

  // What running `artifact` runs: one query with every source in order, or
  // one per source (see the top of this file). Throws ArtifactError for an
  // unknown source or import.
  QueryPtrs programs(const Artifact& artifact, const RunOptions& options = {}) const;

  // ArtifactCalls: Artifact.Name(args) from VQL. Besides the parameters it
  // takes source= and preconditions= (default FALSE, as in Velociraptor).
  void check_call(const std::string& name, const std::vector<std::string>& arguments) const override;
  std::unique_ptr<RowStream> call(const std::string& name, const Args& arguments, const ScopePtr& caller,
                                  RunContext& context) const override;

 private:
  std::map<std::string, Artifact> artifacts_;
};

// The built-in artifacts and those below `paths` (directories or files, in
// order: a later definition replaces an earlier one), compiled with
// `registry`.
std::shared_ptr<const ArtifactRepository> load_artifacts(const std::vector<std::string>& paths,
                                                         const Registry& registry, LoadReport& report);

}  // namespace outpost::vql
