#include "queries/linux_plugins.hpp"
