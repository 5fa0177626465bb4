#pragma once
// How one buffered record sits in LMDB. Said once, here.
//
//   key:   seq as big-endian u64, so cursor order is seq order
//   value: [u64 checksum][u64 query id][i64 created ns][payload ...]
//
// The checksum is XXH3-64 of everything after it, seeded with the seq, so a
// flipped bit anywhere in the value, or a value under the wrong key, is caught.

#include <lmdb.h>
#include <xxhash.h>

#include <cstdint>
#include <cstring>
#include <optional>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "record headers are stored little-endian");

namespace outpost::persistence::record_format {

inline constexpr size_t kHeaderSize = 24;

// Bytes a record counts against the limit beyond its payload: our header, the
// key, LMDB's node header and page index slot, with room for page slack.
inline constexpr uint64_t kRecordOverhead = 64;

struct Header {
  uint64_t query_id;
  int64_t created_ns;
};

struct Key {
  unsigned char bytes[8];
  explicit Key(uint64_t seq) {
    for (int i = 7; i >= 0; --i, seq >>= 8) bytes[i] = static_cast<unsigned char>(seq);
  }
  MDB_val val() { return {sizeof bytes, bytes}; }
};

inline std::optional<uint64_t> seq_of(const MDB_val& key) {
  if (key.mv_size != 8) return std::nullopt;
  uint64_t seq = 0;
  auto* p = static_cast<const unsigned char*>(key.mv_data);
  for (int i = 0; i < 8; ++i) seq = seq << 8 | p[i];
  return seq;
}

inline uint64_t accounted_bytes(size_t payload_size) { return payload_size + kRecordOverhead; }

// Counts a stored value even when its header is damaged.
inline uint64_t accounted_bytes(const MDB_val& value) {
  return accounted_bytes(value.mv_size > kHeaderSize ? value.mv_size - kHeaderSize : 0);
}

inline uint64_t checksum(uint64_t seq, const void* after_checksum, size_t size) {
  return XXH3_64bits_withSeed(after_checksum, size, seq);
}

// Fills a value of kHeaderSize + payload bytes (for example LMDB's MDB_RESERVE space).
inline void write(void* value, uint64_t seq, const Header& header, const void* payload,
                  size_t payload_size) {
  auto* p = static_cast<unsigned char*>(value);
  std::memcpy(p + 8, &header.query_id, 8);
  std::memcpy(p + 16, &header.created_ns, 8);
  if (payload_size) std::memcpy(p + kHeaderSize, payload, payload_size);
  uint64_t sum = checksum(seq, p + 8, kHeaderSize - 8 + payload_size);
  std::memcpy(p, &sum, 8);
}

// The header of an intact record, or nothing when the checksum does not match.
inline std::optional<Header> verify(uint64_t seq, const MDB_val& value) {
  if (value.mv_size < kHeaderSize) return std::nullopt;
  auto* p = static_cast<const unsigned char*>(value.mv_data);
  uint64_t stored;
  std::memcpy(&stored, p, 8);
  if (stored != checksum(seq, p + 8, value.mv_size - 8)) return std::nullopt;
  Header header;
  std::memcpy(&header.query_id, p + 8, 8);
  std::memcpy(&header.created_ns, p + 16, 8);
  return header;
}

}  // namespace outpost::persistence::record_format
