#pragma once
// An agent's rows and status records read from the jetstream backend's
// stream as they are stored, for the commands that read a jsonl
// collector's files (`collect --wait`, `flows`): each message carries the
// lines the jsonl backend would append to a file, and that file's name
// (<agent>/<folder>/<date>.jsonl) in its Outpost-File header.
//
// Threads: one object, one thread (not an event loop); it blocks on NATS.

#include <nats/nats.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "net/collector/nats_link.hpp"
#include "net/collector/row_store.hpp"

namespace outpost::net {

class StreamLines {
 public:
  // Reads `agent`'s records in `access`'s stream, those under folder
  // `folder` only ("" for every folder), from the stream's first (since_ns
  // 0) or from those stored since since_ns (wall clock, less a margin for
  // the clocks of the nodes). Throws persistence::StoreError naming NATS
  // and the stream when it cannot connect or subscribe.
  StreamLines(const StreamAccess& access, const std::string& agent, const std::string& folder, int64_t since_ns,
              std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));
  ~StreamLines();

  // Appends, per folder, the lines stored since the last call: at least
  // all of those stored when this object was made; after them, waits up to
  // `wait` for one more message when none is there. Throws StoreError.
  void read_new(std::map<std::string, std::vector<std::string>>& by_folder, std::chrono::milliseconds wait);

 private:
  static void read_lines(natsMsg* msg, std::map<std::string, std::vector<std::string>>& by_folder);
  std::string where_;
  std::chrono::milliseconds timeout_;
  bool caught_up_ = false;  // has read every message stored when it was made
  NatsConnection nc_;
  jsCtx* js_ = nullptr;
  natsSubscription* sub_ = nullptr;
};

}  // namespace outpost::net
