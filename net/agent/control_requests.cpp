#include "net/agent/control_requests.hpp"

#include <kj/debug.h>

namespace outpost::net {
namespace {

kj::Exception too_many(const char* call, size_t items) {
  return KJ_EXCEPTION(FAILED, kj::str(call, ": ", items, " entries and parameters; an agent takes at most ",
                                      kMaxRequestItems));
}

CollectSpec copy(protocol::CollectRequest::Reader r) {
  CollectSpec spec;
  spec.flow_id = r.getFlowId();
  spec.artifact = r.getArtifact();
  spec.vql = r.getVql();
  spec.definition = r.getDefinition();
  for (auto p : r.getParameters()) spec.parameters.emplace_back(p.getName(), p.getValue());
  auto id = r.getRequestId();
  spec.request_id.assign(reinterpret_cast<const char*>(id.begin()), id.size());
  return spec;
}

}  // namespace

CollectSpec collect_spec(protocol::CollectRequest::Reader request) {
  if (request.getParameters().size() > kMaxRequestItems) throw too_many("collect", request.getParameters().size());
  return copy(request);
}

std::vector<CollectSpec> event_table_specs(capnp::List<protocol::CollectRequest>::Reader entries) {
  size_t items = 0;
  for (auto entry : entries) items += 1 + entry.getParameters().size();
  if (items > kMaxRequestItems) throw too_many("setEventTable", items);
  std::vector<CollectSpec> specs;
  specs.reserve(entries.size());
  for (auto entry : entries) specs.push_back(copy(entry));
  return specs;
}

}  // namespace outpost::net
