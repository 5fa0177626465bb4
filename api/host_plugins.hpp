#pragma once
// The host's plugins and functions (outpost/plugins.hpp) in the engine: the
// built-in registry with the host's added, each call of theirs wrapped so
// that what the host throws fails only the query, naming the plugin.

#include <memory>
#include <vector>

#include "outpost/plugins.hpp"
#include "queries/plugin.hpp"

namespace outpost {

// The built-in plugins and functions and the host's. Throws
// std::invalid_argument naming a definition it refuses (not an identifier,
// taken twice or a built-in's name, no open() or call()). Any thread.
std::shared_ptr<const vql::Registry> host_registry(const std::vector<PluginDef>& plugins,
                                                   const std::vector<FunctionDef>& functions);

// A host row as the engine's, and an engine value as the host sees it (a
// container or a query's rows as JSON text, a timestamp as RFC 3339 text).
vql::Row to_engine_row(Row row);
Value to_host_value(const vql::Value& value);

}  // namespace outpost
