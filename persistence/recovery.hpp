#pragma once
// Checking and rescuing a buffer environment where a crash cannot hurt.
//
// LMDB trusts its pages: on some damage it aborts in its own assertions,
// loops, or frees pages without end. So a store that was not closed cleanly,
// or whose file changed since, is walked in a forked child process first;
// when the walk finds damage, a child copies every record it can still read
// into a fresh environment (restarted past the spot whenever one dies), and
// the damaged file is set aside. The parent only ever reads the children's
// reports, so damage costs records, never the process.
//
// Both functions fork: call them from the store's owner while no LMDB
// environment of that directory is open in this process. The child uses
// LMDB and the allocator only (glibc's malloc is fork-safe), so this is safe
// in a multi-threaded process too. They block until the child is done (a
// child silent for kChildTimeout is killed).

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "schemas/codec.hpp"

namespace outpost::persistence::recovery {

struct Check {
  bool healthy = false;
  std::string problem;  // what is damaged and where, or how the child died
  uint64_t corrupt_records = 0;  // failing their checksum: quarantined by reads, not damage
};

// Walks every lane, the quarantine, the meta and the free list of the
// environment in `dir` with a read transaction, checking keys, page headers
// and that every value lies inside the file.
Check check(const std::filesystem::path& dir, uint64_t map_size);

struct Salvage {
  uint64_t salvaged = 0;
  std::optional<uint64_t> expected;  // the records the meta record says were there
  uint64_t crashes = 0;              // children that died on the way (and were restarted)
  std::string problem;               // the first damage met, for the log
};

// Copies every intact record of every lane of `from` into a new environment
// in `to` (created; must not hold one), keeping their seqs. Never throws for
// damage in `from`; throws StoreError when `to` cannot be written.
Salvage salvage(const std::filesystem::path& from, const std::filesystem::path& to,
                uint64_t map_size);

}  // namespace outpost::persistence::recovery
