#pragma once
// The fault soak: cycles of one random fault each (kill -9 of the agent, of
// the collector or of both; a cut, reset, throttled or black-holed link; a
// full agent or collector disk; a corrupted buffer file between two agent
// runs), held for a random time (a cut or a reset is over at once), healed,
// and followed by a wait until a row made after the healing is stored (its
// recovery time). Then the last run is stopped, its buffer drained, and
// every row checked (soak_check.hpp).

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tests/soak/soak_check.hpp"
#include "tests/soak/soak_world.hpp"

namespace outpost::soak {

enum class Fault {
  kill_agent,
  kill_collector,
  kill_both,
  cut,
  reset,
  throttle,
  blackhole,
  agent_disk_full,
  collector_disk_full,
  corrupt_buffer,
};
constexpr size_t kFaultCount = 10;
const char* to_string(Fault f);

struct FaultSoakOptions {
  int cycles = 100;
  uint64_t seed = 0;
  std::chrono::seconds recovery_limit{60};  // a fault not recovered from by then is a wedge
};

struct FaultStats {
  int count = 0;
  int refused = 0;  // disk faults: how many made a write fail (a buffer with room in its file may not need the disk)
  std::vector<double> recovery_ms;  // from healing to a row made after it being stored
};

// What the agent said of its damaged buffers, summed over its runs' logs.
struct DamageReported {
  uint64_t quarantined = 0;     // "record N is damaged; moved to quarantine"
  uint64_t salvage_lost = 0;    // "salvaged S records, lost L"
  uint64_t salvages = 0;
  bool lost_unknown = false;    // "lost an unknown number"
};

struct FaultReport {
  FaultSoakOptions options;
  std::string disks_unavailable;
  std::array<FaultStats, kFaultCount> faults;
  int agent_runs = 0;
  double seconds = 0;
  Verdict verdict;
  DamageReported damage;
  uint64_t left_in_buffer = 0;  // records the stopped agent still held, all stored already
  std::vector<std::string> problems;  // wedges and inconsistencies, besides the verdict's

  bool ok() const;
  std::string json() const;
  std::string text() const;
};

FaultReport run_fault_soak(const WorldOptions& world, const FaultSoakOptions& options);

}  // namespace outpost::soak
