#pragma once
// The memory soak: an agent and a collector under steady flow, no faults,
// their RSS sampled from /proc at a fixed period. After a warm-up, neither
// may grow by more than a bound: a leak shows as growth that does not stop.

#include <cstdint>
#include <string>
#include <vector>

#include "tests/soak/soak_world.hpp"

namespace outpost::soak {

struct MemorySoakOptions {
  int seconds = 300;
  int sample_seconds = 10;
  int warmup_seconds = 60;
  double max_growth_mib = 32;  // each process, from the sample at the warm-up's end to the largest after it
};

struct MemorySample {
  double seconds = 0;  // since the start
  uint64_t agent_rss = 0, collector_rss = 0;
  uint64_t stored_bytes = 0;
};

struct MemoryReport {
  MemorySoakOptions options;
  std::vector<MemorySample> samples;
  double agent_growth_mib = 0, collector_growth_mib = 0;
  double agent_mib_per_hour = 0, collector_mib_per_hour = 0;  // least-squares slope after the warm-up
  std::vector<std::string> problems;

  bool ok() const { return problems.empty(); }
  std::string json() const;
  std::string text() const;
};

MemoryReport run_memory_soak(const WorldOptions& world, const MemorySoakOptions& options);

}  // namespace outpost::soak
