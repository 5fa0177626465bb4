#include "net/agent/net_link.hpp"

#include <spdlog/spdlog.h>

#include "actors/status.hpp"
#include "schemas/protocol.capnp.h"

namespace outpost::net {
namespace {

using Self = instrumented<net_link_self_actor, net_link_state>;

bool waiting(const net_link_state::LaneState& l) { return l.unread || l.committed > l.sent; }
// Has records to send and no slot to send them in (a lane whose read waits
// for its retry could not use one).
bool starved(const net_link_state::LaneState& l) {
  return waiting(l) && l.in_flight == 0 && l.reserved == 0 && !l.read_retry.pending();
}

// The bulk lanes (results, uploads) never hold the last slot: a fresh
// control or event row always finds one free, whatever the backlog.
unsigned slot_limit(size_t lane) {
  bool bulk = static_cast<Lane>(lane) == Lane::RESULTS || static_cast<Lane>(lane) == Lane::UPLOADS;
  return bulk ? kUploadWindow - 1 : kUploadWindow;
}

// The upload slots `lane` may fill now (0: none): within its limit, and
// leaving one for another lane that waits without any.
unsigned free_slots(Self self, size_t lane) {
  auto& st = self->state;
  unsigned busy = st.in_flight + st.reserved, limit = slot_limit(lane);
  if (!st.enabled || st.session == 0 || busy >= limit) return 0;
  unsigned free = limit - busy;
  for (size_t other = 0; other < st.lanes.size(); ++other)
    if (other != lane && starved(st.lanes[other])) return free - 1;
  return free;
}

void pump(Self self);

// Hands records[begin, ...) to the network as uploads of at most
// MAX_RECORDS_PER_UPLOAD records and kUploadBytes bytes each.
void send_uploads(Self self, size_t lane, uint64_t after, const BufferedRecords& records) {
  auto& st = self->state;
  auto& l = st.lanes[lane];
  for (size_t begin = 0; begin < records->size();) {
    size_t end = begin;
    uint64_t bytes = 0;
    while (end < records->size() && end - begin < protocol::MAX_RECORDS_PER_UPLOAD &&
           (end == begin || bytes + (*records)[end].size <= kUploadBytes))
      bytes += (*records)[end++].size;
    ++l.in_flight;
    ++st.in_flight;
    ++st.uploads;
    st.records_sent += end - begin;
    st.bytes_sent += bytes;
    if (auto* m = self->metrics()) m->add_out(rows_of(*records, begin, end), bytes);
    st.transport->upload(st.session, static_cast<Lane>(lane), after, records, begin, end);
    after = (*records)[end - 1].seq;
    begin = end;
  }
}

// One read fills every slot the lane may use: reads wait behind the
// buffer's commits, so one read per upload would cap a lane at one upload
// per commit.
void read_and_send(Self self, size_t lane) {
  auto& st = self->state;
  auto& l = st.lanes[lane];
  l.reading = true;
  ++st.reads;
  uint64_t session = st.session, after = l.sent;
  unsigned slots = free_slots(self, lane);
  l.reserved = slots;
  st.reserved += slots;
  self->request(st.reader, caf::infinite, read_atom::value, static_cast<Lane>(lane), after,
                uint64_t{slots * protocol::MAX_RECORDS_PER_UPLOAD}, slots * kUploadBytes)
      .then(
          [=](BufferedRecords records) {
            auto& st = self->state;
            auto& l = st.lanes[lane];
            l.reading = false;
            st.reserved -= l.reserved;
            l.reserved = 0;
            l.read_retry.succeeded();
            if (session != st.session) return pump(self);  // that session ended meanwhile
            // Read until the buffer has nothing more; then commits tell.
            l.unread = !records->empty();
            if (records->empty()) return pump(self);
            l.sent = records->back().seq;
            l.committed = std::max(l.committed, l.sent);
            send_uploads(self, lane, after, records);
            pump(self);
          },
          [=](caf::error& err) {
            auto& st = self->state;
            auto& l = st.lanes[lane];
            l.reading = false;
            st.reserved -= l.reserved;
            l.reserved = 0;
            l.unread = true;  // what it was to read is still there
            ++st.read_failures;
            st.last_error = std::string("buffer read of lane ") +
                            schemas::lane_name(static_cast<Lane>(lane)) +
                            " failed: " + self->system().render(err);
            // Not again before the delay, whatever commits come meanwhile.
            if (auto delay = l.read_retry.failed()) {
              spdlog::error("link: {}; retrying in {} ms", st.last_error, delay->count());
              self->delayed_send(self, *delay, internal_atom::value, retry_atom::value, read_atom::value,
                                 static_cast<Lane>(lane));
            }
            pump(self);  // other lanes may take the slots it held
          });
}

// `now` from the actor system's clock (which tests drive).
bool held(const net_link_state::LaneState& l, caf::actor_clock::time_point now) {
  return l.hold_until && now < *l.hold_until;
}

// Starts what the window allows, lanes in priority order.
void pump(Self self) {
  auto& st = self->state;
  auto now = self->clock().now();
  for (size_t lane = 0; lane < st.lanes.size(); ++lane) {
    auto& l = st.lanes[lane];
    if (!l.reading && !l.read_retry.pending() && waiting(l) && !held(l, now) && free_slots(self, lane) > 0) {
      l.hold_until.reset();
      read_and_send(self, lane);
    }
  }
}

// With a max_delay, a commit's records on a lane that had sent everything
// wait for the next ones: until max_delay after the first, or an upload's
// worth. Control records never wait. Whether they are held.
bool hold(Self self, size_t lane, const BufferedRecords& fresh, bool caught_up) {
  auto& st = self->state;
  auto& l = st.lanes[lane];
  if (st.max_delay.count() <= 0 || static_cast<Lane>(lane) == Lane::CONTROL || !(caught_up || l.hold_until))
    return false;
  if (!l.hold_until) {
    l.hold_until = self->clock().now() + st.max_delay;
    l.held_records = l.held_bytes = 0;
    self->delayed_send(self, st.max_delay, internal_atom::value, batch_due_atom::value, static_cast<Lane>(lane));
  }
  if (fresh)
    for (auto& r : *fresh) {
      ++l.held_records;
      l.held_bytes += r.size;
    }
  if (l.held_records >= protocol::MAX_RECORDS_PER_UPLOAD || l.held_bytes >= kUploadBytes) l.hold_until.reset();
  return true;
}

// Asks the buffer to delete what the collector stored and it still holds;
// `acked` moves only when the buffer confirms. A failed ack is asked again
// (for everything stored by then) after a backoff.
void send_ack(Self self, size_t lane) {
  auto& l = self->state.lanes[lane];
  if (l.ack_retry.pending() || l.stored <= std::max(l.acked, l.acking)) return;
  uint64_t through = l.acking = l.stored;
  self->request(self->state.buffer, caf::infinite, ack_atom::value, static_cast<Lane>(lane), through)
      .then(
          [=](uint64_t) {
            auto& l = self->state.lanes[lane];
            l.acked = std::max(l.acked, through);
            l.ack_retry.succeeded();
          },
          [=](caf::error& err) {
            auto& st = self->state;
            auto& l = st.lanes[lane];
            ++st.ack_failures;
            if (through <= l.acked) return;  // a later ack covered it
            l.acking = l.acked;
            st.last_error = std::string("buffer ack of lane ") +
                            schemas::lane_name(static_cast<Lane>(lane)) + " through " +
                            std::to_string(through) + " failed: " + self->system().render(err);
            if (auto delay = l.ack_retry.failed()) {
              spdlog::error("link: {}; retrying in {} ms", st.last_error, delay->count());
              self->delayed_send(self, *delay, internal_atom::value, retry_atom::value, ack_atom::value,
                                 static_cast<Lane>(lane));
            }
          });
}

// The collector stored `lane` through `through`.
void ack(Self self, size_t lane, uint64_t through) {
  auto& l = self->state.lanes[lane];
  l.stored = std::max(l.stored, through);
  send_ack(self, lane);
}

// The summary of failed connection attempts that were not logged one by one.
void log_failed_attempts(Self self, uint64_t more) {
  auto& st = self->state;
  spdlog::warn("link: {} more failed attempts to reach {} in the last {} s; the latest: {}", more,
               st.target, std::chrono::duration_cast<std::chrono::seconds>(st.attempt_log.window()).count(),
               st.last_attempt_error);
}

caf::settings status_of(Self self) {
  auto& st = self->state;
  caf::settings s;
  caf::put(s, "kind", std::string("collector"));
  caf::put(s, "target", st.target);
  put_count(s, "max_delay_ms", static_cast<uint64_t>(st.max_delay.count()));
  caf::put(s, "state", std::string(!st.enabled ? "disabled" : st.session ? "online" : "offline"));
  put_count(s, "session", st.session);
  put_count(s, "in_flight", st.in_flight);
  put_count(s, "uploads", st.uploads);
  put_count(s, "reads", st.reads);
  put_count(s, "fresh_sends", st.fresh_sends);
  put_count(s, "records_sent", st.records_sent);
  put_count(s, "bytes_sent", st.bytes_sent);
  put_count(s, "connects", st.connects);
  put_count(s, "disconnects", st.disconnects);
  put_count(s, "read_failures", st.read_failures);
  put_count(s, "ack_failures", st.ack_failures);
  if (!st.session) {
    caf::put(s, "retry_in_ms", st.retry_in_ms);
    put_count(s, "failed_attempts", st.failed_attempts);
  }
  if (!st.last_error.empty()) caf::put(s, "last_error", st.last_error);
  for (size_t i = 0; i < st.lanes.size(); ++i) {
    std::string key = std::string("lanes.") + schemas::lane_name(static_cast<Lane>(i)) + ".";
    put_count(s, key + "stored", st.lanes[i].stored);
    put_count(s, key + "acked", st.lanes[i].acked);
    put_count(s, key + "sent", st.lanes[i].sent);
    put_count(s, key + "in_flight", st.lanes[i].in_flight);
  }
  return s;
}

}  // namespace

net_link_self_actor::behavior_type net_link(instrumented<net_link_self_actor, net_link_state> self,
                                            buffer_actor buffer, buffer_reader_actor reader,
                                            ClientConfig config) {
  std::string target = config.host + ":" + std::to_string(config.port);
  for (auto& [host, port] : config.alternates) target += "," + host + ":" + std::to_string(port);
  self->state.max_delay = config.max_delay;
  return net_link_over(self, std::move(buffer), std::move(reader), std::move(target),
                       [config = std::move(config)](ClientEvents events) mutable {
                         return std::make_unique<NetClient>(std::move(config), std::move(events));
                       });
}

net_link_self_actor::behavior_type net_link_over(instrumented<net_link_self_actor, net_link_state> self,
                                                 buffer_actor buffer, buffer_reader_actor reader,
                                                 std::string target, TransportFactory make) {
  auto& st = self->state;
  st.buffer = std::move(buffer);
  st.reader = std::move(reader);
  st.target = std::move(target);
  // The transport's thread only posts: anon_send never blocks it.
  net_link_actor handle = self;
  ClientEvents events;
  events.connected = [handle](uint64_t s, std::vector<uint64_t> marks) {
    caf::anon_send(handle, connected_atom::value, s, std::move(marks));
  };
  events.disconnected = [handle](uint64_t s, std::string why, std::chrono::milliseconds retry) {
    caf::anon_send(handle, disconnected_atom::value, s, std::move(why), int64_t{retry.count()});
  };
  events.stored = [handle](uint64_t s, Lane lane, uint64_t through) {
    caf::anon_send(handle, stored_atom::value, s, lane, through);
  };
  events.control = [handle](ControlCall call) {
    caf::anon_send(handle, control_atom::value, std::move(call));
  };
  events.failed = [handle](std::string why) {
    caf::anon_send(handle, fatal_atom::value, std::move(why));
  };
  st.transport = make(std::move(events));
  return {
      [=](committed_atom, Lane lane, uint64_t seq, const BufferedRecords& fresh) {
        auto& l = self->state.lanes[static_cast<size_t>(lane)];
        // Everything committed before these was sent: they follow without a read.
        bool caught_up = !l.unread && !l.reading && l.sent == l.committed;
        l.committed = std::max(l.committed, seq);
        size_t i = static_cast<size_t>(lane);
        if (hold(self, i, fresh, caught_up)) return pump(self);
        if (fresh && !fresh->empty() && fresh->size() <= protocol::MAX_RECORDS_PER_UPLOAD &&
            caught_up && fresh->front().seq > l.sent && free_slots(self, i) > 0) {
          uint64_t after = l.sent;
          l.sent = fresh->back().seq;
          ++self->state.fresh_sends;
          send_uploads(self, i, after, fresh);
        }
        pump(self);
      },
      [=](online_atom, bool on) {
        self->state.enabled = on;
        pump(self);
      },
      [=](connected_atom, uint64_t session, std::vector<uint64_t> marks) {
        auto& st = self->state;
        if (auto more = st.attempt_log.close()) log_failed_attempts(self, more);
        st.failed_attempts = 0;
        st.session = session;
        st.in_flight = 0;
        ++st.connects;
        for (size_t i = 0; i < st.lanes.size() && i < marks.size(); ++i) {
          auto& l = st.lanes[i];
          l.in_flight = 0;
          l.hold_until.reset();  // a new session sends all it has
          if (marks[i] < l.stored)
            spdlog::warn("link: the collector has lane {} only through {}, but stored through {} "
                         "before: its state was reset; what it lost cannot be sent again",
                         schemas::lane_name(static_cast<Lane>(i)), marks[i], l.stored);
          l.sent = marks[i];  // uploads follow what it has, or it would see a gap forever
          // What the collector already has is deleted here, not sent again;
          // and every lane is read, as the buffer may hold older records.
          ack(self, i, marks[i]);
          l.unread = true;
        }
        pump(self);
      },
      [=](disconnected_atom, uint64_t session, std::string why, int64_t retry_ms) {
        auto& st = self->state;
        if (session != 0 && session != st.session) return;  // about an older session
        if (auto* m = self->metrics()) m->set_error(why);
        if (session != 0) {
          ++st.disconnects;
          spdlog::warn("link: {} offline: {}; retrying in {} ms", st.target, why, retry_ms);
        } else {
          // A failed attempt: each is logged, but while the collector stays
          // unreachable only one a minute as a warning.
          auto now = std::chrono::steady_clock::now();
          ++st.failed_attempts;
          if (auto more = st.attempt_log.close_if_over(now)) log_failed_attempts(self, more);
          auto level = st.attempt_log.allow(now) ? spdlog::level::warn : spdlog::level::debug;
          spdlog::log(level, "link: {} offline: attempt {} failed: {}; retrying in {} ms", st.target,
                      st.failed_attempts, why, retry_ms);
          st.last_attempt_error = why;
        }
        st.session = 0;
        st.in_flight = 0;
        for (auto& l : st.lanes) {
          l.in_flight = 0;
          l.sent = l.stored;
        }
        st.last_error = why;
        st.retry_in_ms = retry_ms;
      },
      [=](stored_atom, uint64_t session, Lane lane, uint64_t through) {
        auto& st = self->state;
        if (session != st.session) return;
        auto& l = st.lanes[static_cast<size_t>(lane)];
        if (l.in_flight) --l.in_flight;
        if (st.in_flight) --st.in_flight;
        ack(self, static_cast<size_t>(lane), through);
        pump(self);
      },
      [=](control_atom, ControlCall& call) {
        auto& sup = self->state.supervisor;
        if (!sup) return call.answer->answer({"the agent is still starting", 0, {}});
        self->send(sup, control_atom::value, std::move(call));
      },
      [=](reconnect_atom) {
        auto& st = self->state;
        spdlog::info("link: a new connection to {} asked for by the operator", st.target);
        st.transport->reconnect();
        return std::string(st.session ? "reconnecting to " : "connecting to ") + st.target +
               (st.session ? " (the session that was up ends)" : " now (no more waiting for the next attempt)");
      },
      [=](set_supervisor_atom, supervisor_actor sup) { self->state.supervisor = std::move(sup); },
      [=](fatal_atom, std::string& why) {
        // The transport survives every failure of a connection on its own; its
        // thread ends only on a bug or exhausted resources (no event loop,
        // bad_alloc). Restarting it here would hide that and could loop
        // unseen: the link fails instead, the supervisor shuts the agent down
        // in order (the buffer keeps all that was not acked) and it exits
        // non-zero, for the service manager to restart it with its own backoff.
        self->state.last_error = "the network thread failed: " + why;
        spdlog::critical("link: {}; stopping the agent", self->state.last_error);
        self->quit(caf::make_error(caf::sec::runtime_error, self->state.last_error));
      },
      [=](internal_atom, retry_atom, read_atom, Lane lane) {
        self->state.lanes[static_cast<size_t>(lane)].read_retry.due();
        pump(self);
      },
      [=](internal_atom, batch_due_atom, Lane lane) {
        // A later hold (the earlier one was released by its size) has its own timer.
        auto& l = self->state.lanes[static_cast<size_t>(lane)];
        if (!held(l, self->clock().now())) l.hold_until.reset();
        pump(self);
      },
      [=](internal_atom, retry_atom, ack_atom, Lane lane) {
        self->state.lanes[static_cast<size_t>(lane)].ack_retry.due();
        send_ack(self, static_cast<size_t>(lane));
      },
      [=](status_atom) { return status_of(self); },
  };
}

}  // namespace outpost::net
