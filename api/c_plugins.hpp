#pragma once
// A C host's plugins and functions (outpost_options::plugins, ::functions)
// as outpost::PluginDef and FunctionDef.

#include "outpost/outpost.h"
#include "outpost/outpost.hpp"

namespace outpost {

// Copies the definitions in `c` (names, arguments) into `options`. Throws
// std::invalid_argument for a NULL name or callback.
void add_c_plugins(const outpost_options& c, AgentOptions& options);

}  // namespace outpost
