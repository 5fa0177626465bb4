#include "queries/linux_plugins.hpp"

#include "queries/linux_util.hpp"

namespace outpost::vql {

void add_linux_plugins(Registry& registry) {
  add_linux_proc_plugins(registry);
  add_linux_file_plugins(registry);
}

}  // namespace outpost::vql
