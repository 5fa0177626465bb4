#include "queries/vql_source.hpp"

#include "queries/sensors.hpp"

namespace outpost::vql {

VqlSource::VqlSource(const Engine& engine, std::vector<std::shared_ptr<const ast::Query>> queries,
                     const std::vector<Binding>& parameters, std::shared_ptr<const Paths> paths, SensorHub* sensors,
                     uint64_t query_id)
    : engine_(engine), queries_(std::move(queries)), query_id_(query_id) {
  env_.paths = std::move(paths);
  env_.sensors = sensors;
  if (sensors) env_.system = &sensors->system();  // the agent's: the hub runs on it
  std::vector<std::unique_ptr<RowStream>> streams;
  for (auto& q : queries_) streams.push_back(engine_.start(*q, parameters, env_));
  stream_ = streams.size() == 1 ? std::move(streams[0]) : merge_streams(std::move(streams));
}

void VqlSource::set_wake(std::function<void()> wake) { env_.wake = std::move(wake); }

bool VqlSource::same_columns(const Row& row) const {
  if (row.size() != columns_.size()) return false;
  for (size_t i = 0; i < columns_.size(); ++i)
    if (row.items()[i].first != columns_[i]) return false;
  return true;
}

// Fills the batch from as many slices of the stream as it takes (a few at
// most: each slice is bounded work) or until the columns change.
PullResult VqlSource::pull(schemas::RowBatchWriter& batch, size_t max_rows) {
  PullResult result;
  for (int slices = 0; max_rows > 0; ) {
    if (next_ == pending_.size()) {
      if (slices > 0 && last_.state != Step::State::more) break;
      if (slices++ == 8) return result;  // more to do, in the next pull
      pending_.clear();
      next_ = 0;
      last_ = stream_->next(pending_, max_rows);
      if (pending_.empty()) break;
    }
    // A pull adds rows up to about kMaxPullBytes (plus a row): rows of up to
    // 1 MiB (read_file, parse_lines) do not pile up into one batch beyond
    // the record-size limit before the query actor cuts it.
    if (batch.row_count() > 0 && batch.encoded_size() >= kMaxPullBytes) break;
    const Row& row = pending_[next_];
    if (!same_columns(row)) {
      // The batch is sent (or dropped, if empty) and the next one starts
      // with this row's columns.
      columns_.clear();
      for (auto& item : row.items()) columns_.push_back(item.first);
      result.cut = true;
      break;
    }
    auto out = batch.add_row();
    size_t i = 0;
    for (auto& item : row.items()) write_value(item.second, out[static_cast<unsigned>(i++)]);
    ++next_;
    --max_rows;
  }
  result.dropped = std::exchange(env_.dropped_events, 0);
  // One chunk of a file upload() asked for per pull: a big file goes at the
  // pace the buffer takes it, between the rows.
  for (auto& request : env_.upload_requests) uploads_.add(std::move(request));
  env_.upload_requests.clear();
  if (auto chunk = uploads_.next_chunk(query_id_)) {
    result.records.push_back({schemas::Lane::UPLOADS, std::move(*chunk)});
    if (!uploads_.idle()) return result;  // more to send
  }
  if (next_ < pending_.size() || result.cut) return result;  // more to write
  switch (last_.state) {
    case Step::State::more: break;
    case Step::State::wait: result.state = PullResult::State::wait; result.wait = last_.wait; break;
    case Step::State::parked: result.state = PullResult::State::parked; break;
    case Step::State::done: result.state = PullResult::State::done; break;
  }
  return result;
}

}  // namespace outpost::vql
