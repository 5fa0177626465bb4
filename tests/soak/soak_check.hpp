#pragma once
// The soak's verdict: what the collector stored for the agent, checked row
// by row against what the agent's runs committed. Each run's queries are
// named r<run>q<i> and number their rows 1, 2, 3...: a query's rows must be
// stored once each, in order, without a gap. A run killed with SIGKILL ends
// where its buffer's last commit ended (what the process held in memory dies
// with it); the last run is stopped with SIGTERM, and every row it says it
// committed must be there too.
//
// A gap is "lost to damage", not lost, only where the soak corrupted the
// buffer that held it: a record of the gap is missing and lay beyond what the
// collector had stored when the soak corrupted the file of that run or a
// later one. The agent must have reported at least as many records lost.

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace outpost::soak {

struct Corruption {
  int run = 0;              // the agent run whose buffer file was corrupted (after it was killed)
  uint64_t stored_max = 0;  // the highest record seq the collector had stored by then
};

struct Verdict {
  uint64_t rows = 0;            // distinct rows stored
  uint64_t records = 0;         // distinct records stored, every lane
  uint64_t query_runs = 0;      // r<run>q<i> folders
  uint64_t duplicated = 0;      // rows stored more than once
  uint64_t reordered = 0;       // rows stored after a later row of their query
  uint64_t lost = 0;            // rows missing and not explained
  uint64_t lost_to_damage = 0;  // rows missing where the soak corrupted the buffer
  uint64_t damaged_records = 0; // missing records those rows were in
  std::vector<std::string> problems;  // the first few, each naming query, row and record
};

// Reads every file under `agent_dir` (the collector's folder for the agent).
// `committed` holds, for the queries of the gracefully stopped last run, the
// rows each said it committed.
Verdict verify(const std::filesystem::path& agent_dir, const std::vector<Corruption>& corruptions,
               const std::map<std::string, uint64_t>& committed);

// The highest record seq stored under `agent_dir`, every lane.
uint64_t highest_record(const std::filesystem::path& agent_dir);

// "query <name> stopped: P rows produced, C rows committed" lines of a log.
std::map<std::string, uint64_t> committed_rows(const std::string& log);

}  // namespace outpost::soak
