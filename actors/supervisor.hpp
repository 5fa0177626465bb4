#pragma once
#include <caf/typed_event_based_actor.hpp>

#include <chrono>
#include <vector>

#include "actors/interfaces.hpp"
#include "actors/query_actor.hpp"

namespace outpost {

// Restart delays for a failing query: doubling from initial up to cap; a
// query that ran for `healthy` before failing starts again from initial.
struct RestartPolicy {
  std::chrono::milliseconds initial{100};
  std::chrono::milliseconds cap{30000};
  std::chrono::milliseconds healthy{60000};
};

struct supervisor_state {
  static inline const char* name = "supervisor";
  using Clock = std::chrono::steady_clock;

  struct Query {
    // Where it came from: configured queries and the collector's event table
    // restart when they fail; a collection ends with its first failure.
    enum class Origin { config, event_table, collection } origin = Origin::config;
    std::shared_ptr<const QuerySpec> spec;
    query_actor actor;  // null while waiting to restart or after finishing
    unsigned restarts = 0;
    std::chrono::milliseconds backoff{0};
    Clock::time_point started;
    bool finished = false;
    bool retired = false;  // cancelled, or dropped from the event table: never started again
    std::string last_error;
  };

  buffer_actor buffer;
  link_actor link;
  waker_actor waker;
  SourceFactory make_source;
  RestartPolicy policy;
  std::vector<Query> queries;
  bool stopping = false;
  size_t handovers_pending = 0;  // queries yet to hand their last batch to the buffer
  bool buffer_stop_sent = false;
  bool link_stop_sent = false;
  bool failed = false;  // the buffer or the link died: the agent exits non-zero
};

supervisor_actor::behavior_type supervisor(supervisor_actor::stateful_pointer<supervisor_state> self,
                                           buffer_actor buffer, link_actor link,
                                           std::vector<QuerySpec> queries,
                                           SourceFactory make_source, RestartPolicy policy);

}  // namespace outpost
