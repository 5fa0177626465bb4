#pragma once
// VQL's Linux collection plugins and the file functions: info(), pslist(),
// glob(), read_file(), parse_lines(), users(), netstat(), mounts(); hash(),
// stat(). Each reads from Env::paths, so that tests point it at fixtures.

#include "queries/plugin.hpp"

namespace outpost::vql {

void add_linux_plugins(Registry& registry);

}  // namespace outpost::vql
