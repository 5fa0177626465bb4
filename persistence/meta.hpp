#pragma once
// The store's meta record: the seq counter and the exact accounting, updated
// in the same transaction as every append, ack, purge and quarantine.

#include <lmdb.h>
#include <xxhash.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>

#include "schemas/codec.hpp"

namespace outpost::persistence {

struct LaneCounters {
  uint64_t records = 0;
  uint64_t bytes = 0;  // accounted: payload plus record_format::kRecordOverhead each
  bool operator==(const LaneCounters& o) const { return records == o.records && bytes == o.bytes; }
};

struct Meta {
  uint64_t next_seq = 1;
  std::array<LaneCounters, schemas::kLaneCount> lanes{};
  LaneCounters quarantined;

  uint64_t live_bytes() const {
    uint64_t sum = 0;
    for (auto& l : lanes) sum += l.bytes;
    return sum;
  }
  uint64_t records() const {
    uint64_t sum = 0;
    for (auto& l : lanes) sum += l.records;
    return sum;
  }
};

namespace meta_format {

inline constexpr uint64_t kMagic = 0x4f5554504f535431;  // "OUTPOST1"
inline constexpr uint64_t kVersion = 1;
inline constexpr char kKey[] = "state";
// magic, version, next_seq, 2 per lane, 2 for quarantine, checksum
inline constexpr size_t kWords = 3 + 2 * schemas::kLaneCount + 2 + 1;
using Encoded = std::array<uint64_t, kWords>;

inline Encoded encode(const Meta& m) {
  Encoded w{};
  size_t i = 0;
  w[i++] = kMagic;
  w[i++] = kVersion;
  w[i++] = m.next_seq;
  for (auto& l : m.lanes) w[i++] = l.records, w[i++] = l.bytes;
  w[i++] = m.quarantined.records;
  w[i++] = m.quarantined.bytes;
  w[i] = XXH3_64bits(w.data(), i * 8);
  return w;
}

enum class Decoded { ok, damaged, newer_version };

inline Decoded decode(const MDB_val& value, Meta& m) {
  Encoded w;
  if (value.mv_size != sizeof w) return Decoded::damaged;
  std::memcpy(w.data(), value.mv_data, sizeof w);
  if (w[0] != kMagic || w[kWords - 1] != XXH3_64bits(w.data(), (kWords - 1) * 8))
    return Decoded::damaged;
  if (w[1] > kVersion) return Decoded::newer_version;
  size_t i = 2;
  m.next_seq = w[i++];
  for (auto& l : m.lanes) l.records = w[i++], l.bytes = w[i++];
  m.quarantined.records = w[i++];
  m.quarantined.bytes = w[i++];
  return Decoded::ok;
}

}  // namespace meta_format
}  // namespace outpost::persistence
