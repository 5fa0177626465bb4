#pragma once
// The wall-clock times the collector and the agent write in JSON
// ("2026-11-27T22:13:38.306335881Z", schemas/json.hpp), read back by tests.

#include <time.h>

#include <cstdint>
#include <string>

namespace outpost::testing {

// Nanoseconds since the epoch; 0 for text that is not such a time.
inline int64_t parse_utc_ns(const std::string& t) {
  struct tm tm = {};
  if (t.size() < 29 || !strptime(t.c_str(), "%Y-%m-%dT%H:%M:%S", &tm) || t[19] != '.') return 0;
  return static_cast<int64_t>(timegm(&tm)) * 1'000'000'000 + std::stoll(t.substr(20, 9));
}

}  // namespace outpost::testing
