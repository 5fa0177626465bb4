#include "schemas/codec.hpp"

#include <kj/exception.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <utility>

#include "schemas/protocol.capnp.h"
#include "schemas/wall_clock.hpp"

namespace outpost::schemas {

// The collector takes any record the agent may send: one upload holds at
// least one whole record (net/ sends a record bigger than its upload size
// alone), and its traversal limit (net/collector_server.cpp wire_limits())
// is maxUploadBytes plus framing.
static_assert(kMaxRecordBytes + (64 << 10) <= protocol::MAX_UPLOAD_BYTES,
              "an upload of one maximal record must be within the collector's limit");

const char* lane_name(Lane lane) {
  switch (lane) {
    case Lane::CONTROL: return "control";
    case Lane::EVENTS: return "events";
    case Lane::RESULTS: return "results";
    case Lane::UPLOADS: return "uploads";
  }
  return "unknown";
}

namespace {
std::atomic<int64_t> wall_clock_offset_ns{0};
}

void set_wall_clock_offset(std::chrono::nanoseconds offset) {
  wall_clock_offset_ns.store(offset.count(), std::memory_order_relaxed);
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
             .count() +
         wall_clock_offset_ns.load(std::memory_order_relaxed);
}

namespace {
capnp::ReaderOptions bounded_options() {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = kMaxRecordWords;
  options.nestingLimit = 64;
  return options;
}
}  // namespace

RecordView::RecordView(kj::ArrayPtr<const capnp::word> words) {
  // Cap'n Proto validates lazily; building the reader and touching the root
  // and its union here turns a malformed frame into an error now, not later.
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
                reader_ = kj::heap<capnp::FlatArrayMessageReader>(words, bounded_options());
                record_ = reader_->getRoot<schema::Record>();
                (void)record_.which();
              })) {
    throw DecodeError("malformed record: " + std::string(e->getDescription().cStr()));
  }
}

uint64_t row_count(kj::ArrayPtr<const capnp::word> words) {
  uint64_t n = 0;
  (void)kj::runCatchingExceptions([&] {
    capnp::FlatArrayMessageReader reader(words, bounded_options());
    auto record = reader.getRoot<schema::Record>();
    if (record.isRowBatch()) n = record.getRowBatch().getRows().size();
  });
  return n;
}

RecordWriter::RecordWriter(uint64_t query_id, int64_t created_ns, unsigned first_segment_words)
    : message_(first_segment_words), record_(message_.initRoot<schema::Record>()) {
  record_.setQueryId(query_id);
  record_.setCreatedNs(created_ns);
}

size_t RecordWriter::encoded_size() {
  return capnp::computeSerializedSizeInWords(message_) * sizeof(capnp::word);
}

Encoded RecordWriter::finish() { return Encoded(capnp::messageToFlatArray(message_)); }

RowBatchWriter::RowBatchWriter(uint64_t query_id, kj::StringPtr artifact, kj::StringPtr source,
                               Lane lane, const std::vector<std::string>& columns,
                               unsigned first_segment_words)
    : RecordWriter(query_id, now_ns(), first_segment_words),
      batch_(record_.initRowBatch()),
      column_names_(columns),
      artifact_(artifact.cStr()),
      source_(source.cStr()),
      lane_(lane) {
  batch_.setQueryId(query_id);
  batch_.setArtifact(artifact);
  batch_.setSource(source);
  batch_.setLane(lane);
  batch_.setCreatedNs(record_.getCreatedNs());
  auto names = batch_.initColumns(columns.size());
  for (unsigned i = 0; i < columns.size(); ++i) names.set(i, columns[i]);
  // The rows list's far pointer and a segment table of up to 60 segments
  // (the arena grows by doubling) are above what the header measures now.
  header_bytes_ = RecordWriter::encoded_size() + 256;
}

uint64_t RowBatchWriter::row_cost(capnp::Orphan<capnp::List<schema::Value>>& row) {
  return (row.getReader().totalSize().wordCount + 3) * sizeof(capnp::word);
}

void RowBatchWriter::keep(capnp::Orphan<capnp::List<schema::Value>> row, uint64_t cost) {
  if (header_bytes_ + cost > kMaxRecordBytes) {  // no batch can hold it
    ++refused_.rows;
    refused_.largest_bytes = std::max(refused_.largest_bytes, header_bytes_ + cost);
    moved_out_ = true;  // `row` is destroyed here; its space stays in the arena
    return;
  }
  if (!carried_.empty() || header_bytes_ + row_bytes_ + cost > kMaxRecordBytes) {
    carried_.push_back(kj::mv(row));  // the next batch's, in order
    return;
  }
  row_bytes_ += cost;
  rows_.push_back(kj::mv(row));
}

void RowBatchWriter::complete_open_row() {
  if (!open_) return;
  open_ = false;
  auto row = kj::mv(rows_.back());
  rows_.pop_back();
  uint64_t cost = row_cost(row);
  keep(kj::mv(row), cost);
}

capnp::List<schema::Value>::Builder RowBatchWriter::add_row() {
  complete_open_row();
  rows_.push_back(message_.getOrphanage().newOrphan<capnp::List<schema::Value>>(column_names_.size()));
  open_ = true;
  return rows_.back().get();
}

size_t RowBatchWriter::encoded_size() {
  return header_bytes_ + row_bytes_ + (open_ ? row_cost(rows_.back()) : 0);
}

RowBatchWriter::Refused RowBatchWriter::take_refused() {
  complete_open_row();
  return std::exchange(refused_, Refused{});
}

std::unique_ptr<RowBatchWriter> RowBatchWriter::take_carried() {
  complete_open_row();
  if (carried_.empty()) return nullptr;
  auto next = std::make_unique<RowBatchWriter>(record_.getQueryId(), artifact_.c_str(), source_.c_str(), lane_,
                                               column_names_);
  for (auto& row : carried_) {
    auto copy = next->message_.getOrphanage().newOrphanCopy(row.getReader());
    uint64_t cost = row_cost(copy);
    next->keep(kj::mv(copy), cost);
  }
  carried_.clear();
  moved_out_ = true;
  return next;
}

Encoded RowBatchWriter::finish() {
  complete_open_row();
  if (!carried_.empty()) throw std::logic_error("RowBatchWriter: take_carried() before finish()");
  auto rows = batch_.initRows(rows_.size());
  for (unsigned i = 0; i < rows_.size(); ++i) rows.adopt(i, kj::mv(rows_[i]));
  rows_.clear();
  if (!moved_out_ && RecordWriter::encoded_size() <= kMaxRecordBytes) return RecordWriter::finish();
  // Space of rows refused or carried over is still in the arena: copy what
  // the record holds into one segment of its own size.
  auto root = message_.getRoot<schema::Record>().asReader();
  capnp::MallocMessageBuilder copy(static_cast<unsigned>(root.totalSize().wordCount + 1),
                                   capnp::AllocationStrategy::FIXED_SIZE);
  copy.setRoot(root);
  return Encoded(capnp::messageToFlatArray(copy));
}

Encoded encode_log(uint64_t query_id, schema::LogMessage::Level level, kj::StringPtr text) {
  RecordWriter writer(query_id);
  auto log = writer.record().initLog();
  log.setLevel(level);
  log.setText(text);
  log.setTimeNs(writer.record().getCreatedNs());
  return writer.finish();
}

Encoded encode_dropped(uint64_t query_id, uint64_t dropped) {
  RecordWriter writer(query_id);
  writer.record().initQueryStatus().setDroppedAtSource(dropped);
  return writer.finish();
}

Encoded encode_flow_started(uint64_t flow_id, kj::StringPtr artifact) {
  RecordWriter writer(0);
  auto status = writer.record().initQueryStatus();
  status.setStarted();
  status.setFlowId(flow_id);
  status.setArtifact(artifact);
  return writer.finish();
}

Encoded encode_flow_finished(uint64_t flow_id, kj::StringPtr artifact, const FlowEnd& end) {
  RecordWriter writer(0);
  auto status = writer.record().initQueryStatus();
  auto finished = status.initFinished();
  finished.setRowCount(end.rows);
  finished.setError(end.error);
  finished.setBytes(end.bytes);
  finished.setDurationNs(end.duration_ns);
  finished.setOutcome(end.outcome);
  status.setFlowId(flow_id);
  status.setArtifact(artifact);
  return writer.finish();
}

}  // namespace outpost::schemas
