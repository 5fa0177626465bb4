#pragma once
// The local link: "delivers" records as JSON lines appended to a file, fsyncs,
// then acks them in the buffer. Without a file it is the offline link, which
// delivers nothing. The network link (net/net_link.hpp) implements the same
// interface.
//
// Threads: write and fdatasync block (a slow disk, a full pipe), so the link
// runs on a thread of its own (spawn_file_link): it never holds a CAF worker.

#include <caf/typed_event_based_actor.hpp>
#include <kj/io.h>

#include <array>
#include <string>

#include "actors/instrumented.hpp"
#include "actors/interfaces.hpp"

namespace outpost {

struct file_link_state {
  static inline const char* name = "link";

  buffer_actor buffer;
  std::string path;  // empty: offline for good
  kj::AutoCloseFd fd;  // closed by ~file_link_state, which must not throw into CAF
  bool online = false;
  std::array<uint64_t, schemas::kLaneCount> delivered_through{};
  std::array<bool, schemas::kLaneCount> reading{};
  uint64_t records_delivered = 0;
  uint64_t bytes_written = 0;
  uint64_t errors = 0;
  std::string last_error;

  ActorState shown_state() const { return online ? ActorState::running : ActorState::offline; }
  ~file_link_state() noexcept;
};

// A record as JSON lines, as the file link writes it; one that passed its
// checksum but does not decode becomes a line that says so (and is logged).
std::string json_lines(const persistence::BufferedRecord& r);

// Reads at most this many records per lane per round trip to the buffer.
inline constexpr uint64_t kLinkReadBatch = 1000;

link_actor::behavior_type file_link(instrumented<link_actor, file_link_state> self,
                                    buffer_actor buffer, std::string path, bool online);

// The link on its own thread (detached), as the agent runs it. Any thread.
link_actor spawn_file_link(caf::actor_system& sys, buffer_actor buffer, std::string path, bool online);

}  // namespace outpost
