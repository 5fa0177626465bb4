#pragma once
// A record as the agent's buffer holds it, read back for the link: the one
// type that crosses from the store to the actors, without LMDB's headers.

#include <capnp/common.h>
#include <kj/array.h>

#include <cstddef>
#include <cstdint>

namespace outpost::persistence {

struct BufferedRecord {
  uint64_t seq = 0;
  uint64_t query_id = 0;
  int64_t created_ns = 0;
  kj::Array<capnp::word> words;  // the payload, copied to word-aligned memory
  size_t size = 0;               // payload bytes (words may be padded)
  uint64_t rows = 0;             // rows in it, when the actors counted them (not stored)
  kj::ArrayPtr<const kj::byte> payload() const { return words.asBytes().slice(0, size); }
};

// The payload bytes of records read together.
template <class Records>
uint64_t payload_bytes(const Records& records) {
  uint64_t n = 0;
  for (auto& r : records) n += r.size;
  return n;
}

}  // namespace outpost::persistence
