#include "api/host_source.hpp"

#include "schemas/codec.hpp"

namespace outpost {
namespace {

void write(const Value& v, schema::Value::Builder out) {
  switch (v.index()) {
    case 0: out.setNull(); break;
    case 1: out.setBool(std::get<bool>(v)); break;
    case 2: out.setInt64(std::get<int64_t>(v)); break;
    case 3: out.setUint64(std::get<uint64_t>(v)); break;
    case 4: out.setFloat64(std::get<double>(v)); break;
    default: {
      auto& s = std::get<std::string>(v);
      out.setText(capnp::Text::Reader(s.data(), s.size()));
    }
  }
}

bool same_columns(const Row& row, const std::vector<std::string>& columns) {
  if (row.size() != columns.size()) return false;
  for (size_t i = 0; i < row.size(); ++i)
    if (row[i].first != columns[i]) return false;
  return true;
}

}  // namespace

PushQueue::PushQueue(const QuerySpec& spec, WritableCallback on_writable)
    : spec_(spec), on_writable_(std::move(on_writable)) {}

PushQueue::~PushQueue() = default;

void PushQueue::finish_open() {
  while (open_) {
    auto carried = open_->take_carried();  // rows past the record limit: the next batch's
    if (uint64_t n = open_->row_count())
      ready_.push_back({spec_.lane, open_->finish(), n, open_since_ns_});
    open_ = std::move(carried);
    if (open_ && !open_->full()) return;  // filled on
  }
}

Errc PushQueue::push(const Row& row) {
  std::function<void()> wake;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return Errc::not_running;
    if (rows_ >= spec_.source.queue_rows) {
      refused_ = true;
      return Errc::would_block;
    }
    if (open_ && !same_columns(row, columns_)) finish_open();
    if (!open_) {
      columns_.clear();
      for (auto& [name, value] : row) columns_.push_back(name);
      open_ = std::make_unique<schemas::RowBatchWriter>(spec_.id, spec_.artifact.c_str(), spec_.name.c_str(),
                                                        spec_.lane, columns_);
      open_since_ns_ = schemas::now_ns();
    }
    auto out = open_->add_row();
    for (unsigned i = 0; i < row.size(); ++i) write(row[i].second, out[i]);
    if (open_->take_refused().rows) {  // completes the row: too big for any record
      if (open_->row_count() == 0) open_.reset();
      return Errc::too_large;
    }
    if (++rows_ == 1) wake = wake_;  // the query may be parked on an empty queue
    if (open_->full() || open_->row_count() >= spec_.batch_rows || open_->encoded_size() >= spec_.batch_bytes)
      finish_open();
  }
  if (wake) wake();
  return Errc::ok;
}

Errc PushQueue::wait_writable(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!writable_.wait_for(lock, timeout, [&] { return closed_ || rows_ < spec_.source.queue_rows; }))
    return Errc::would_block;
  return closed_ ? Errc::not_running : Errc::ok;
}

void PushQueue::close() {
  std::lock_guard<std::mutex> lock(mutex_);
  closed_ = true;
  wake_ = nullptr;
  writable_.notify_all();
}

bool PushQueue::empty() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return rows_ == 0;
}

void PushQueue::set_wake(std::function<void()> wake) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!closed_) wake_ = std::move(wake);
}

std::optional<PullResult::Record> PushQueue::take() {
  std::optional<PullResult::Record> out;
  bool tell = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (ready_.empty()) finish_open();  // the batch being filled goes as it is
    if (ready_.empty()) return out;
    out = std::move(ready_.front());
    ready_.pop_front();
    rows_ -= out->rows;
    if (rows_ <= spec_.source.queue_rows / 2) {
      tell = refused_ && !closed_;
      refused_ = false;
      writable_.notify_all();
    }
  }
  if (tell && on_writable_) on_writable_(spec_.name);
  return out;
}

PullResult HostSource::pull(schemas::RowBatchWriter&, size_t) {
  PullResult result;
  if (auto batch = queue_->take())
    result.records.push_back(std::move(*batch));
  else
    result.state = PullResult::State::parked;  // the next push wakes the query
  return result;
}

}  // namespace outpost
