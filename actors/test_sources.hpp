#pragma once
#include "actors/agent_config.hpp"
#include "actors/source.hpp"

namespace outpost {

// The built-in sources of this step: a synthetic row generator and a clock.
std::unique_ptr<Source> make_test_source(const SourceSpec& spec);

}  // namespace outpost
