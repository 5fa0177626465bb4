#include <gtest/gtest.h>

#include "queries/linux_plugins.hpp"
