#pragma once
// What the collector asks of an agent (protocol.capnp's AgentController),
// as it travels from the network thread through the link to the supervisor.

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/settings.hpp>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "schemas/protocol.capnp.h"

namespace outpost {

// One collection or event query the collector wants run. `flow_id` is the
// collector's (never given out twice, >= kFirstFlowId), and becomes the
// query's id. `request_id` (16 random bytes, or empty from an older
// collector) is how a request sent again is recognised: see
// protocol.capnp's CollectRequest.
struct CollectSpec {
  uint64_t flow_id = 0;
  std::string artifact;
  std::string vql;  // empty: the artifact's own query
  std::vector<std::pair<std::string, std::string>> parameters;
  std::string request_id;
  std::string definition = {};  // YAML of `artifact` sent with the request; empty: the agent's own
};

// Flow ids start above every id a configuration may give its queries.
inline constexpr uint64_t kFirstFlowId = protocol::FIRST_FLOW_ID;

// What a cancel found (protocol.capnp's CancelOutcome).
enum class CancelOutcome { stopped, already_finished, not_running };

struct ControlReply {
  std::string error;    // empty: done
  uint64_t value = 0;   // collect: the flow id; cancel: records purged
  std::string json;     // status
  CancelOutcome cancelled = CancelOutcome::stopped;  // cancel
};

// Answered exactly once, from any thread: by `answer`, or, when the call is
// dropped unanswered (the agent is shutting down), with an error.
class ControlAnswer {
 public:
  using Fn = std::function<void(ControlReply)>;
  explicit ControlAnswer(Fn fn) : fn_(std::move(fn)) {}
  ~ControlAnswer() {
    if (fn_) fn_({"the agent dropped the request (shutting down)", 0, {}});
  }
  ControlAnswer(const ControlAnswer&) = delete;
  ControlAnswer& operator=(const ControlAnswer&) = delete;
  void answer(ControlReply reply) {
    if (auto fn = std::exchange(fn_, nullptr)) fn(std::move(reply));
  }

 private:
  Fn fn_;
};

struct ControlCall {
  enum class Kind { collect, cancel, set_event_table, status } kind = Kind::status;
  std::vector<CollectSpec> specs;  // collect: one; set_event_table: the whole table
  uint64_t flow_id = 0;            // cancel
  std::shared_ptr<ControlAnswer> answer;
};

// caf::settings as JSON (status replies).
std::string settings_json(const caf::settings& s);

}  // namespace outpost

// Local only: it never crosses a process boundary through CAF.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(outpost::ControlCall)
