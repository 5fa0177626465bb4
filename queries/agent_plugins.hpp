#pragma once
// VQL plugins about the agent itself: actors().

#include "queries/plugin.hpp"

namespace outpost::vql {

void add_agent_plugins(Registry& registry);

}  // namespace outpost::vql
