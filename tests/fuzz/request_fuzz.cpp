// libFuzzer target for a request from the collector as the agent takes it
// (protocol.capnp's AgentController): the first byte picks the call
// (collect, cancel, setEventTable), the rest is its params as a flat message,
// read with the agent's RPC limits (capnp's default ReaderOptions, which
// NetClient's TwoPartyVatNetwork uses). Each CollectRequest becomes a
// CollectSpec as NetClient takes it (control_requests.hpp: a request of
// more than kMaxRequestItems is refused), then goes through the supervisor's checks that
// run nothing: the flow id, and collected_query() (agent_config.cpp), which
// makes the QuerySpec. Not here: the engine's check of VQL and artifact
// definitions (SourceFactory::check), and the supervisor acting on the call.
// Never a crash, a hang or a leak; a malformed or too large message is a kj::Exception,
// a refused request a ConfigError (no other exception may escape, as the
// supervisor catches no other). Also checked: a QuerySpec made is the request's.
// Run by scripts/fuzz.sh (seeds: corpus/request/).

#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "actors/agent_config.hpp"
#include "actors/control.hpp"
#include "net/agent/control_requests.hpp"
#include "schemas/protocol.capnp.h"

namespace {

using namespace outpost;
using Kind = SourceSpec::Kind;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "request_fuzz: %s\n", what.c_str());
  std::abort();
}

// The supervisor's checks of one request (supervisor.cpp's collect() and
// set_event_table()), without a make_source.check.
void check(const CollectSpec& spec, schemas::Lane lane) {
  if (lane == schemas::Lane::RESULTS && spec.flow_id < kFirstFlowId) return;  // refused
  QuerySpec q;
  try {
    q = collected_query(spec, lane);
  } catch (const ConfigError&) {
    return;
  }
  if (q.id != spec.flow_id || q.name != "F." + std::to_string(spec.flow_id) || q.lane != lane)
    fail("the query's id, name or lane is not the request's");
  if (q.artifact != (spec.artifact.empty() ? "VQL" : spec.artifact))
    fail("the query's artifact is not the request's");
  if (!spec.vql.empty() && !spec.definition.empty()) fail("a query and a definition were both taken");
  if (!spec.vql.empty() && (q.source.kind != Kind::vql || q.source.query != spec.vql))
    fail("a VQL request made another source");
  if (!spec.definition.empty() && (q.source.kind != Kind::artifact || q.source.definition != spec.definition))
    fail("a definition was not kept");
  if ((q.source.kind == Kind::vql || q.source.kind == Kind::artifact) && q.source.parameters != spec.parameters)
    fail("the parameters were not kept");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t call = data[0] % 3;
  ++data, --size;
  auto words = kj::heapArray<capnp::word>((size + sizeof(capnp::word) - 1) / sizeof(capnp::word));
  std::memset(words.begin(), 0, words.size() * sizeof(capnp::word));
  if (size) std::memcpy(words.begin(), data, size);

  std::vector<CollectSpec> specs;
  try {
    capnp::FlatArrayMessageReader message(words, capnp::ReaderOptions());
    switch (call) {
      case 0:
        specs.push_back(net::collect_spec(message.getRoot<protocol::AgentController::CollectParams>().getRequest()));
        break;
      case 1:  // the flow id is all there is; cancelling acts on the supervisor's state at once
        (void)message.getRoot<protocol::AgentController::CancelParams>().getFlowId();
        return 0;
      default:
        specs = net::event_table_specs(message.getRoot<protocol::AgentController::SetEventTableParams>().getArtifacts());
    }
  } catch (const kj::Exception&) {
    return 0;  // a malformed message: the RPC system refuses it
  }
  for (auto& spec : specs) check(spec, call == 0 ? schemas::Lane::RESULTS : schemas::Lane::EVENTS);
  return 0;
}
