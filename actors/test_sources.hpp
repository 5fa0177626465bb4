#pragma once
#include "actors/agent_config.hpp"
#include "actors/source.hpp"

namespace outpost {

// The built-in test sources: a synthetic row generator and a clock. VQL and
// artifacts are the query engine's (queries/agent_sources.hpp).
std::unique_ptr<Source> make_test_source(const SourceSpec& spec);

}  // namespace outpost
