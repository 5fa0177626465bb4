#pragma once
// A collector's requests (protocol.capnp's AgentController) as the agent's
// supervisor takes them (actors/control.hpp): copied out of the message,
// and bounded before anything is built from them, since every entry and
// parameter becomes memory of the agent's. Any thread; nothing blocks.

#include <cstddef>
#include <vector>

#include "actors/control.hpp"
#include "schemas/protocol.capnp.h"

namespace outpost::net {

// Event-table entries and parameters in one request, at most (a message
// within capnp's traversal limit could hold 8 million of them).
inline constexpr size_t kMaxRequestItems = 100'000;

// The request of collect(); throws kj::Exception (FAILED) naming the count
// when it holds more than kMaxRequestItems parameters.
CollectSpec collect_spec(protocol::CollectRequest::Reader request);

// The entries of setEventTable(); throws as collect_spec() when they hold
// more than kMaxRequestItems entries and parameters in all.
std::vector<CollectSpec> event_table_specs(capnp::List<protocol::CollectRequest>::Reader entries);

}  // namespace outpost::net
