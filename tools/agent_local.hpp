#pragma once
// outpost-agent's one-shot commands, run without buffer or collector:
//   outpost-agent query "<VQL>" [--param k=v]     rows as JSON lines on stdout
//   outpost-agent collect <Artifact> [--param k=v]
//   outpost-agent artifacts list | show <Name>   list: each one's first sentence
//   outpost-agent artifacts check <DIR>          what definitions need that Outpost lacks
// outpost-agent has read and checked the configuration (--config, --set,
// --definitions) and set up its log before calling these; `agent` has not
// started.

#include <string>
#include <utility>

#include "outpost/outpost.hpp"

namespace outpost::tools {

// Exit codes: 0 done, 1 the query failed while running, 2 it was refused.
int run_local_query(Agent& agent, const std::string& vql, const Parameters& parameters, size_t max_rows);
int run_local_artifact(Agent& agent, const std::string& name, const Parameters& parameters, size_t max_rows);
// The agent's artifacts: the built-in ones and its configuration's.
int list_artifacts(const Agent& agent);
int show_artifact(const Agent& agent, const std::string& name);
// 0 when every definition below `path` loads, 1 when one does not, 2 when
// there is none.
int check_artifacts(const Agent& agent, const std::string& path);

// "k=v" -> {k, v}; throws std::invalid_argument.
std::pair<std::string, std::string> parse_parameter(const std::string& text);

}  // namespace outpost::tools
