#pragma once
// The one place that builds and reads Outpost's Cap'n Proto records.
// Nothing else in the tree encodes rows by hand.

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/array.h>

#include <cstdint>
#include <memory>
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

// The one record-size limit (rows.capnp maxRecordBytes): no record bigger
// than this is built, buffered or uploaded.
inline constexpr uint64_t kMaxRecordBytes = schema::MAX_RECORD_BYTES;

// Caps what a reader may traverse: a hostile or corrupt record cannot make
// us allocate or loop beyond this.
inline constexpr uint64_t kMaxRecordWords = 64ull << 20 >> 3;  // 64 MiB
static_assert(kMaxRecordBytes <= kMaxRecordWords * sizeof(capnp::word),
              "a reader must be able to read the largest record");

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

// The rows in a record's row batch; 0 for another record or a malformed one.
// Reads the message in place; allocates only for a message of several segments.
uint64_t row_count(kj::ArrayPtr<const capnp::word> words);

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

// Accumulates rows of one query into a RowBatch of at most kMaxRecordBytes.
// Rows are built in the message's own arena, so finish() links them without
// copying. A source fills each row in place after add_row(); the writer
// measures a row once it is complete (when the next one starts, or at
// take_refused(), encoded_size() or finish()):
//  - a row that would take the batch past kMaxRecordBytes is carried over:
//    it starts the next batch (take_carried()), and the batch is full();
//  - a row that alone would make a record bigger than kMaxRecordBytes can
//    never be sent: it is refused (dropped, counted in take_refused()).
// Rows moved out of the arena make finish() copy the batch (rare).
class RowBatchWriter : public RecordWriter {
 public:
  RowBatchWriter(uint64_t query_id, kj::StringPtr artifact, kj::StringPtr source, Lane lane,
                 const std::vector<std::string>& columns,
                 unsigned first_segment_words = capnp::SUGGESTED_FIRST_SEGMENT_WORDS);
  // A row with one (null) value per column, to fill in place.
  capnp::List<schema::Value>::Builder add_row();
  // Rows kept: in the batch, carried over to the next one, and the one being filled.
  size_t row_count() const { return rows_.size() + carried_.size(); }  // rows_ holds the open one
  // At least what finish() will produce, the row being filled included (but
  // not the carried-over rows).
  size_t encoded_size();
  // A row was carried over: nothing more fits, send this batch.
  bool full() const { return !carried_.empty(); }

  struct Refused {
    uint64_t rows = 0;
    uint64_t largest_bytes = 0;  // the biggest refused row's encoded size
  };
  // Rows refused since the last call; completes the row being filled.
  Refused take_refused();
  // The next batch (same query, columns and lane), holding the carried-over
  // rows; null when there are none. Call before finish(). The next batch may
  // itself be full().
  std::unique_ptr<RowBatchWriter> take_carried();
  Encoded finish() override;

 private:
  // Bytes a row adds to the batch: its content, the pointer to it, and a
  // double-far landing pad when it sits in another segment.
  static uint64_t row_cost(capnp::Orphan<capnp::List<schema::Value>>& row);
  void complete_open_row();
  void keep(capnp::Orphan<capnp::List<schema::Value>> row, uint64_t cost);

  schema::RowBatch::Builder batch_;
  std::vector<std::string> column_names_;
  std::string artifact_, source_;
  Lane lane_;
  uint64_t header_bytes_ = 0;  // the record without rows, and the segment table's slack
  uint64_t row_bytes_ = 0;     // row_cost() of rows_
  bool open_ = false;          // rows_.back() is still being filled
  bool moved_out_ = false;     // rows left the arena: finish() copies the batch
  std::vector<capnp::Orphan<capnp::List<schema::Value>>> rows_;
  std::vector<capnp::Orphan<capnp::List<schema::Value>>> carried_;
  Refused refused_;
};

Encoded encode_log(uint64_t query_id, schema::LogMessage::Level level, kj::StringPtr text);
// The status record a query sends when its source missed events.
Encoded encode_dropped(uint64_t query_id, uint64_t dropped);
// A collection's start and end, for the collector's `flows` (rows.capnp's QueryStatus).
struct FlowEnd {
  uint64_t rows = 0, bytes = 0;
  int64_t duration_ns = 0;
  schema::QueryStatus::Outcome outcome = schema::QueryStatus::Outcome::FINISHED;
  std::string error;
};
Encoded encode_flow_started(uint64_t flow_id, kj::StringPtr artifact);
Encoded encode_flow_finished(uint64_t flow_id, kj::StringPtr artifact, const FlowEnd& end);

}  // namespace outpost::schemas
