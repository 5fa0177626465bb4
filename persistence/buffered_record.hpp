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
  kj::ArrayPtr<const kj::byte> payload() const { return words.asBytes().slice(0, size); }
};

}  // namespace outpost::persistence
