#pragma once
// Where a query's rows come from: the test sources (actors/test_sources.hpp)
// and VQL (queries/vql_source.hpp) implement it.

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "schemas/codec.hpp"

namespace outpost {

struct PullResult {
  enum class State {
    more,     // call again as soon as the query may
    wait,     // nothing now: call again after `wait`
    parked,  // nothing now: the source calls its wake function when rows come
    done,     // the source is finished
  };
  State state = State::more;
  std::chrono::nanoseconds wait{0};
  // The next row has other columns than the batch: send the batch (or drop
  // it if empty) and start one with columns() again.
  bool cut = false;
  uint64_t dropped = 0;  // events the source missed since the last pull (reported, never hidden)
  // Records the source encoded itself, appended after the batch so far: of
  // another kind (file chunks), or row batches (the host's pushed rows, then
  // with their row count, appended as the query's own batches are).
  struct Record {
    schemas::Lane lane;
    schemas::Encoded encoded;
    uint64_t rows = 0;
    int64_t created_ns = 0;  // 0: when appended
  };
  std::vector<Record> records{};
};

// Called from the query actor's thread, one pull per message: a pull must do
// bounded work and never block, so that a CAF worker thread is never held.
class Source {
 public:
  virtual ~Source() = default;
  // The columns of the next batch; asked each time a batch starts.
  virtual std::vector<std::string> columns() const = 0;
  // Given once, before the first pull: what a `parked` source calls (from
  // any thread) when it has rows again.
  virtual void set_wake(std::function<void()>) {}
  // Adds at most `max_rows` rows to `batch`. May throw: the query then fails
  // and its supervisor restarts it.
  virtual PullResult pull(schemas::RowBatchWriter& batch, size_t max_rows) = 0;
  // Rows the source accepted from someone else and holds (the host's pushed
  // rows): at its hand-over the query pulls them into its last batches,
  // whatever the budget. False by default: other sources' rows are made on
  // demand.
  virtual bool holds_accepted_rows() const { return false; }
};

}  // namespace outpost
