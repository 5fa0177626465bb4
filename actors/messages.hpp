#pragma once
// Payloads that travel between actors. Cap'n Proto data is encoded once by
// its producer and shared read-only from there on: CAF copies a message when
// two receivers hold it, so it travels behind a shared_ptr.

#include <caf/allowed_unsafe_message_type.hpp>

#include <memory>
#include <vector>

#include "persistence/buffered_record.hpp"
#include "schemas/codec.hpp"

namespace outpost {

using schemas::Lane;

// One encoded record on its way into the buffer.
struct RecordRef {
  std::shared_ptr<const schemas::Encoded> encoded;
  uint64_t query_id = 0;
  int64_t created_ns = 0;
};

// Records read from the buffer, or a small commit's records sent with its
// notification, for the link, in seq order.
using BufferedRecords = std::shared_ptr<const std::vector<persistence::BufferedRecord>>;

// A subscriber's queue of events (queries/sensors.hpp): the query's side
// owns it, the sensor fills it while it lives.
namespace vql {
class Subscription;
}
using SubscriptionPtr = std::shared_ptr<vql::Subscription>;

}  // namespace outpost

// Local only: these never cross a process boundary through CAF.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(outpost::RecordRef)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(outpost::BufferedRecords)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(outpost::Lane)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(outpost::SubscriptionPtr)
