#pragma once
// The one place that builds and reads Outpost's Cap'n Proto records.
// Nothing else in the tree encodes rows by hand.

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/array.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "schemas/rows.capnp.h"
#include "schemas/values.capnp.h"

namespace outpost::schemas {

using schema::Lane;
inline constexpr size_t kLaneCount = 4;  // tests check this against rows.capnp

const char* lane_name(Lane lane);
int64_t now_ns();

// An encoded message: word-aligned, so a reader can use it in place.
class Encoded {
 public:
  Encoded() = default;
  explicit Encoded(kj::Array<capnp::word> words) : words_(kj::mv(words)) {}

  kj::ArrayPtr<const capnp::word> words() const { return words_; }
  kj::ArrayPtr<const kj::byte> bytes() const { return words_.asPtr().asBytes(); }
  size_t size() const { return words_.size() * sizeof(capnp::word); }

 private:
  kj::Array<capnp::word> words_;
};

class DecodeError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Caps what a reader may traverse: a hostile or corrupt record cannot make
// us allocate or loop beyond this.
inline constexpr uint64_t kMaxRecordWords = 64ull << 20 >> 3;  // 64 MiB

// Reads a record in place. `words` must outlive the view.
class RecordView {
 public:
  // Throws DecodeError naming what is wrong when the message is malformed.
  explicit RecordView(kj::ArrayPtr<const capnp::word> words);
  schema::Record::Reader record() const { return record_; }

 private:
  kj::Own<capnp::FlatArrayMessageReader> reader_;
  schema::Record::Reader record_;
};

// Builds any record: set the union on record(), then finish().
class RecordWriter {
 public:
  // `first_segment_words` sizes the first allocation: a good guess (the size
  // of the previous batch) keeps small batches small and big ones in one segment.
  explicit RecordWriter(uint64_t query_id, int64_t created_ns = now_ns(),
                        unsigned first_segment_words = capnp::SUGGESTED_FIRST_SEGMENT_WORDS);
  virtual ~RecordWriter() = default;
  schema::Record::Builder record() { return record_; }
  size_t encoded_size();  // bytes finish() would produce
  virtual Encoded finish();

 protected:
  capnp::MallocMessageBuilder message_;
  schema::Record::Builder record_;
};

// Accumulates rows of one query into a RowBatch. Rows are built in the
// message's own arena, so finish() links them without copying.
class RowBatchWriter : public RecordWriter {
 public:
  RowBatchWriter(uint64_t query_id, kj::StringPtr artifact, kj::StringPtr source, Lane lane,
                 const std::vector<std::string>& columns,
                 unsigned first_segment_words = capnp::SUGGESTED_FIRST_SEGMENT_WORDS);
  // A row with one (null) value per column, to fill in place.
  capnp::List<schema::Value>::Builder add_row();
  size_t row_count() const { return rows_.size(); }
  // At least what finish() will produce: linking a row into the batch can
  // take a pointer and a double-far landing pad when the row sits in
  // another segment.
  size_t encoded_size() { return RecordWriter::encoded_size() + rows_.size() * 3 * sizeof(capnp::word); }
  Encoded finish() override;

 private:
  schema::RowBatch::Builder batch_;
  unsigned columns_;
  std::vector<capnp::Orphan<capnp::List<schema::Value>>> rows_;
};

Encoded encode_log(uint64_t query_id, schema::LogMessage::Level level, kj::StringPtr text);
// The status record a query sends when its source missed events.
Encoded encode_dropped(uint64_t query_id, uint64_t dropped);

}  // namespace outpost::schemas
