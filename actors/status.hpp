#pragma once
// Small helpers for the caf::settings every actor answers `status` with.

#include <caf/settings.hpp>

#include <cstdint>
#include <string>

namespace outpost {

inline void put_count(caf::settings& s, const std::string& key, uint64_t value) {
  caf::put(s, key, static_cast<int64_t>(value));
}

}  // namespace outpost
