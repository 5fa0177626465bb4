#pragma once
// Payloads that travel between actors. Cap'n Proto data is encoded once by
// its producer and shared read-only from there on: CAF copies a message when
// two receivers hold it, so it travels behind a shared_ptr.

#include <caf/allowed_unsafe_message_type.hpp>

#include <memory>
#include <vector>

#include "persistence/buffered_record.hpp"
#include "schemas/codec.hpp"

namespace outpost {

using schemas::Lane;

// One encoded record on its way into the buffer.
struct RecordRef {
  std::shared_ptr<const schemas::Encoded> encoded;
  uint64_t query_id = 0;
  int64_t created_ns = 0;
  uint64_t rows = 0;  // rows in it: a row batch's, set by the query; 0 for other records
};

// Records read from the buffer, or a small commit's records sent with its
// notification, for the link, in seq order.
using BufferedRecords = std::shared_ptr<const std::vector<persistence::BufferedRecord>>;

// Counts the rows of records read from the store into each one's `rows`
// (the store does not keep them); returns their sum. The reading actor's
// thread, before the records are shared.
inline uint64_t count_rows(std::vector<persistence::BufferedRecord>& records) {
  uint64_t n = 0;
  for (auto& r : records) n += r.rows = schemas::row_count(r.words);
  return n;
}
// The rows of records counted before (read, or handed over with a commit).
template <class Records>
uint64_t rows_of(const Records& records, size_t begin = 0, size_t end = SIZE_MAX) {
  uint64_t n = 0;
  for (size_t i = begin; i < records.size() && i < end; ++i) n += records[i].rows;
  return n;
}

}  // namespace outpost

// Local only: these never cross a process boundary through CAF.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(outpost::RecordRef)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(outpost::BufferedRecords)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(outpost::Lane)
