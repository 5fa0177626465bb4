#include "actors/test_sources.hpp"

#include <stdexcept>

namespace outpost {
namespace {

using Clock = std::chrono::steady_clock;

// Rows of (Seq, Time, Data) at a steady rate, or as fast as they are taken.
class SyntheticSource : public Source {
 public:
  explicit SyntheticSource(const SourceSpec& spec) : spec_(spec), data_(spec.row_size, 'x') {}

  std::vector<std::string> columns() const override { return {"Seq", "Time", "Data"}; }

  PullResult pull(schemas::RowBatchWriter& batch, size_t max_rows) override {
    if (spec_.max_rows && produced_ >= spec_.max_rows) return {PullResult::State::done, {}};
    size_t n = max_rows;
    if (spec_.max_rows) n = std::min<uint64_t>(n, spec_.max_rows - produced_);
    if (spec_.rate > 0) {
      double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
      double allowed = elapsed * spec_.rate - static_cast<double>(produced_);
      if (allowed < 1)
        return {PullResult::State::wait,
                std::chrono::nanoseconds(static_cast<int64_t>((1 - allowed) / spec_.rate * 1e9))};
      n = std::min<size_t>(n, static_cast<size_t>(allowed));
    }
    int64_t now = schemas::now_ns();
    for (size_t i = 0; i < n; ++i) {
      if (spec_.fail_after && produced_ >= spec_.fail_after)
        throw std::runtime_error("synthetic source failed on purpose after " +
                                 std::to_string(produced_) + " rows (fail_after)");
      auto row = batch.add_row();
      row[0].setUint64(++produced_);
      row[1].setTimestamp(now);
      row[2].setText(kj::StringPtr(data_.c_str(), data_.size()));
    }
    return {PullResult::State::more, {}};
  }

 private:
  SourceSpec spec_;
  std::string data_;
  uint64_t produced_ = 0;
  Clock::time_point start_ = Clock::now();
};

// One row per period: (Time, Tick).
class ClockSource : public Source {
 public:
  explicit ClockSource(const SourceSpec& spec) : period_(spec.period) {}

  std::vector<std::string> columns() const override { return {"Time", "Tick"}; }

  PullResult pull(schemas::RowBatchWriter& batch, size_t max_rows) override {
    auto now = Clock::now();
    if (now < next_ || max_rows == 0) return {PullResult::State::wait, next_ - now};
    auto row = batch.add_row();
    row[0].setTimestamp(schemas::now_ns());
    row[1].setUint64(++ticks_);
    next_ += period_;
    if (next_ < now) next_ = now + period_;  // we were paused: do not catch up in a burst
    return {PullResult::State::wait, next_ - now};
  }

 private:
  std::chrono::nanoseconds period_;
  Clock::time_point next_ = Clock::now();
  uint64_t ticks_ = 0;
};

}  // namespace

std::unique_ptr<Source> make_test_source(const SourceSpec& spec) {
  switch (spec.kind) {
    case SourceSpec::Kind::synthetic: return std::make_unique<SyntheticSource>(spec);
    case SourceSpec::Kind::clock: return std::make_unique<ClockSource>(spec);
    case SourceSpec::Kind::vql:
    case SourceSpec::Kind::artifact: throw std::invalid_argument("not a test source: VQL and artifacts need the query engine");
    case SourceSpec::Kind::host: break;
  }
  throw std::invalid_argument("not a test source: a host source is fed by the program embedding Outpost");
}

}  // namespace outpost
