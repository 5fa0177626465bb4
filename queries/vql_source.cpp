#include "queries/vql_source.hpp"

namespace outpost::vql {

VqlSource::VqlSource(const Engine& engine, std::vector<std::shared_ptr<const ast::Query>> queries,
                     const std::vector<Binding>& parameters, Paths paths, SensorHub* sensors)
    : engine_(engine.registry()), queries_(std::move(queries)) {
  env_.paths = std::move(paths);
  env_.sensors = sensors;
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

PullResult VqlSource::pull(schemas::RowBatchWriter& batch, size_t max_rows) {
  if (next_ == pending_.size()) {
    pending_.clear();
    next_ = 0;
    last_ = stream_->next(pending_, max_rows);
  }
  PullResult result;
  result.dropped = std::exchange(env_.dropped_events, 0);
  for (; next_ < pending_.size() && max_rows > 0; ++next_, --max_rows) {
    const Row& row = pending_[next_];
    if (!same_columns(row)) {
      // The batch is sent (or dropped, if empty) and the next one starts
      // with this row's columns.
      columns_.clear();
      for (auto& item : row.items()) columns_.push_back(item.first);
      result.cut = true;
      return result;
    }
    auto out = batch.add_row();
    size_t i = 0;
    for (auto& item : row.items()) write_value(item.second, out[static_cast<unsigned>(i++)]);
  }
  if (next_ < pending_.size()) return result;  // more to write
  switch (last_.state) {
    case Step::State::more: break;
    case Step::State::wait: result.state = PullResult::State::wait; result.wait = last_.wait; break;
    case Step::State::blocked: result.state = PullResult::State::blocked; break;
    case Step::State::done: result.state = PullResult::State::done; break;
  }
  return result;
}

}  // namespace outpost::vql
