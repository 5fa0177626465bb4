#pragma once
// outpost-agent's one-shot commands, run without buffer or collector:
//   outpost-agent query "<VQL>" [--param k=v]     rows as JSON lines on stdout
//   outpost-agent collect <Artifact> [--param k=v]
//   outpost-agent artifacts list | show <Name>   list: each one's first sentence
// outpost-agent has read and checked the configuration (--config, --set) and
// set up its log before calling these.

#include <string>
#include <utility>

#include "outpost/outpost.hpp"

namespace outpost::tools {

// Exit codes: 0 done, 1 the query failed while running, 2 it was refused.
int run_local_query(const std::string& vql, const Parameters& parameters, size_t max_rows);
int run_local_artifact(const std::string& name, const Parameters& parameters, size_t max_rows);
int list_artifacts();
int show_artifact(const std::string& name);

// "k=v" -> {k, v}; throws std::invalid_argument.
std::pair<std::string, std::string> parse_parameter(const std::string& text);

}  // namespace outpost::tools
