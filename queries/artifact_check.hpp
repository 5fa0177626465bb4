#pragma once
// What running a directory of artifact definitions needs that Outpost does
// not have: `outpost-agent artifacts check DIR`, a user's first question
// before migrating.

#include <filesystem>
#include <string>
#include <vector>

#include "queries/artifacts.hpp"

namespace outpost::vql {

struct ArtifactCheck {
  std::string origin;  // the file
  std::string name;    // the artifact's, when the file gives one
  bool loads = false;
  // Each thing it needs that Outpost lacks, once: "function if()",
  // "plugin execve()", "argument glob(nosymlink=)", "parameter type csv",
  // "syntax: <what the parser expected>", "artifact X.Y".
  std::vector<std::string> needs;
  // Every problem found, "<where>: <problem>" (the VQL's past the first).
  std::vector<std::string> problems;
};

// Loads every definition below `path` (with the built-in artifacts, as an
// agent would) and, for each file that does not load, goes on past the
// first problem to list them all. In file order. Blocks on reading files.
std::vector<ArtifactCheck> check_artifacts(const std::filesystem::path& path, const Registry& registry);

}  // namespace outpost::vql
