#pragma once
// An admin connection to a collector's socket holding one agent's
// inspector, as `outpost-collector inspect` holds it (Control and FleetAdmin
// tests of watches through the collector).

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <filesystem>
#include <string>

#include "schemas/inspector.capnp.h"
#include "schemas/protocol.capnp.h"

namespace outpost::testing {

struct InspectClient {
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> rpc;
  inspector::Inspector::Client inspector = nullptr;

  InspectClient(kj::AsyncIoContext& io, const std::filesystem::path& socket, const std::string& agent) {
    stream = io.provider->getNetwork().parseAddress("unix:" + socket.string()).wait(io.waitScope)->connect().wait(
        io.waitScope);
    rpc = kj::heap<capnp::TwoPartyClient>(*stream);
    auto req = rpc->bootstrap().castAs<protocol::Admin>().inspectRequest();
    req.setAgent(agent);
    inspector = req.send().getInspector();
  }

  // Starts a watch (histograms on) for an hour.
  void watch(kj::WaitScope& ws) {
    auto req = inspector.watchRequest();
    req.setSeconds(3600);
    req.send().wait(ws);
  }

  // Whether any of the agent's actors reports a handling histogram: a watch is on.
  bool watched(kj::WaitScope& ws) {
    auto got = inspector.actorsRequest().send().wait(ws);
    for (auto a : got.getActors())
      if (a.getHandlingHistogram().size() > 0) return true;
    return false;
  }
};

}  // namespace outpost::testing
