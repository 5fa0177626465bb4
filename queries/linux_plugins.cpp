#include "queries/linux_plugins.hpp"

namespace outpost::vql {

void add_linux_plugins(Registry&) {}

}  // namespace outpost::vql
