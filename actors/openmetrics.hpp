#pragma once
// The agent's counters in the OpenMetrics text format (Prometheus scrapes
// it): every live actor's counters (actors/metrics.hpp), and the numbers of
// the buffer's and the link's own status, as `outpost-agent` serves them on
// its metrics listener (inspector.metrics).
//
// Threads: any; reads the registry's atomics without a lock.

#include <string>

#include "actors/registry.hpp"

namespace outpost {

// `statuses`: the status of whichever actors were asked (the buffer and the
// link; others are left out). Ends with "# EOF", as the format requires.
std::string openmetrics_text(const ActorRegistry& registry, const Statuses& statuses);

inline constexpr const char* kOpenMetricsContentType = "application/openmetrics-text; version=1.0.0; charset=utf-8";

}  // namespace outpost
