#include "schemas/codec.hpp"

#include <kj/exception.h>

#include <chrono>

namespace outpost::schemas {

const char* lane_name(Lane lane) {
  switch (lane) {
    case Lane::CONTROL: return "control";
    case Lane::EVENTS: return "events";
    case Lane::RESULTS: return "results";
    case Lane::UPLOADS: return "uploads";
  }
  return "unknown";
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
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
    : RecordWriter(query_id, now_ns(), first_segment_words), batch_(record_.initRowBatch()), columns_(columns.size()) {
  batch_.setQueryId(query_id);
  batch_.setArtifact(artifact);
  batch_.setSource(source);
  batch_.setLane(lane);
  batch_.setCreatedNs(record_.getCreatedNs());
  auto names = batch_.initColumns(columns_);
  for (unsigned i = 0; i < columns_; ++i) names.set(i, columns[i]);
}

capnp::List<schema::Value>::Builder RowBatchWriter::add_row() {
  rows_.push_back(message_.getOrphanage().newOrphan<capnp::List<schema::Value>>(columns_));
  return rows_.back().get();
}

Encoded RowBatchWriter::finish() {
  auto rows = batch_.initRows(rows_.size());
  for (unsigned i = 0; i < rows_.size(); ++i) rows.adopt(i, kj::mv(rows_[i]));
  rows_.clear();
  return RecordWriter::finish();
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

}  // namespace outpost::schemas
