#pragma once
// How big an upload's messages are, for Cap'n Proto's first segment: without
// a size hint every request and every answer starts with an 8 KiB segment,
// zeroed, whatever it holds (an answer is one number; a live upload a few
// hundred bytes). Pure; any thread.

#include <capnp/common.h>

#include <cstddef>
#include <cstdint>

namespace outpost::net {

// Session.upload's params (protocol.capnp): the struct and its list (a few
// words), each UploadRecord two words, each record's data rounded up to words
// (at most 7 bytes each). Capnp adds the call's own header to it.
inline capnp::MessageSize upload_request_size(size_t records, uint64_t data_bytes) {
  return {8 + 3 * records + (data_bytes + 7 * records) / 8, 0};
}

// Session.upload's results: storedThrough.
inline constexpr capnp::MessageSize kUploadResultsSize{4, 0};

}  // namespace outpost::net
