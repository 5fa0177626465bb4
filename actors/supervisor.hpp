#pragma once
#include <caf/typed_event_based_actor.hpp>

#include <chrono>
#include <deque>
#include <vector>

#include "actors/instrumented.hpp"
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

// How many ended collections and event queries the supervisor remembers
// (for `status`, to recognise a request sent again, and to say "already
// finished" to a cancel).
inline constexpr size_t kRecentFlows = 256;

struct supervisor_state {
  static inline const char* name = "supervisor";
  using Clock = std::chrono::steady_clock;

  // Where a query came from: configured queries and the collector's event
  // table restart when they fail; a collection ends with its first failure.
  enum class Origin { config, event_table, collection };

  // A query this agent runs or will restart. Configured queries stay here
  // when they finish (the configuration bounds them); a collection or event
  // query leaves when it ends, for `recent`.
  struct Query {
    Origin origin = Origin::config;
    std::shared_ptr<const QuerySpec> spec;
    std::string request_id;  // the collector's (CollectSpec::request_id); empty for configured queries
    query_actor actor;  // null while waiting to restart or after finishing
    unsigned restarts = 0;
    std::chrono::milliseconds backoff{0};
    Clock::time_point started;
    // Configured queries only: why one without an actor is not started again
    // (none: it waits out its backoff). Only the operator's restart starts it.
    enum class Halt { none, finished, cancelled } halt = Halt::none;
    bool retired = false;  // being cancelled, or dropped from the event table: never started again
    bool restart_now = false;  // the operator restarts it: start again as soon as it has ended
    std::string last_error;
    // A collection's: its current run's counters, and what the runs before it
    // (an operator's restarts) handed over; its end reports the sum.
    std::shared_ptr<const ActorMetrics> metrics;
    uint64_t rows_before = 0, bytes_before = 0;
    bool flow_reported = false;  // its started record was sent: a restart continues the flow
  };

  // A collection or event query that ended.
  struct Ended {
    enum class How { finished, failed, cancelled, removed } how = How::finished;
    uint64_t id = 0;  // its flow id
    std::string request_id;
    std::string name, artifact;
    Origin origin = Origin::collection;
    std::string error;  // failed: why
  };

  buffer_actor buffer;
  link_actor link;
  waker_actor waker;
  SourceFactory make_source;
  RestartPolicy policy;
  std::vector<Query> queries;
  std::deque<Ended> recent;  // oldest first, at most kRecentFlows
  bool stopping = false;
  size_t handovers_pending = 0;  // queries yet to hand their last batch to the buffer
  bool buffer_close_sent = false;
  bool link_stop_sent = false;
  bool failed = false;  // the buffer or the link died: the agent exits non-zero
};

supervisor_self_actor::behavior_type supervisor(instrumented<supervisor_self_actor, supervisor_state> self,
                                                buffer_actor buffer, link_actor link,
                                                std::vector<QuerySpec> queries,
                                                SourceFactory make_source, RestartPolicy policy);

}  // namespace outpost
