#pragma once
// Where a query's rows come from. The built-in test sources implement it now;
// the VQL engine does later, through the same interface.

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "schemas/codec.hpp"

namespace outpost {

struct PullResult {
  enum class State {
    more,  // call again as soon as the query may
    wait,  // nothing now: call again after `wait`
    done,  // the source is finished
  };
  State state = State::more;
  std::chrono::nanoseconds wait{0};
};

// Called from the query actor's thread, one pull per message: a pull must do
// bounded work and never block, so that a CAF worker thread is never held.
class Source {
 public:
  virtual ~Source() = default;
  virtual std::vector<std::string> columns() const = 0;
  // Adds at most `max_rows` rows to `batch`. May throw: the query then fails
  // and its supervisor restarts it.
  virtual PullResult pull(schemas::RowBatchWriter& batch, size_t max_rows) = 0;
};

}  // namespace outpost
