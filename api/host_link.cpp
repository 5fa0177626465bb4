#include "api/host_link.hpp"

#include <caf/actor_system.hpp>
#include <spdlog/spdlog.h>

#include "actors/file_link.hpp"
#include "actors/status.hpp"

namespace outpost {

void AckChannel::open(host_link_actor link) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!closed_) link_ = std::move(link);
}

void AckChannel::send(Lane lane, uint64_t batch) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (link_) caf::anon_send(link_, ack_atom::value, lane, batch);
}

void AckChannel::close() {
  std::lock_guard<std::mutex> lock(mutex_);
  closed_ = true;
  link_ = nullptr;
}

SinkAck::SinkAck(std::shared_ptr<State> state) : state_(std::move(state)) {}

void SinkAck::operator()() const {
  if (!state_) return;
  auto& s = *state_;
  std::call_once(s.sent, [&] { s.channel->send(s.lane, s.batch); });
}

namespace {

using Self = instrumented<host_link_self_actor, host_link_state>;
constexpr auto kRetryDelay = std::chrono::seconds(1);

void pump(Self self, Lane lane);

void failed(Self self, Lane lane, std::string why) {
  auto& st = self->state;
  auto& l = st.lanes[static_cast<size_t>(lane)];
  ++st.errors;
  st.last_error = std::move(why);
  spdlog::error("link: {}; trying again in {} s", st.last_error, kRetryDelay.count());
  if (l.retrying) return;
  l.retrying = true;
  self->delayed_send(self, kRetryDelay, internal_atom::value, retry_atom::value, lane);
}

// Asks the buffer to delete through the last seq of the acknowledged batches
// at the front of the lane's queue: a batch acknowledged before an earlier
// one waits for it.
void release(Self self, Lane lane) {
  auto& st = self->state;
  auto& l = st.lanes[static_cast<size_t>(lane)];
  while (!l.out.empty() && l.out.front().acked) {
    l.acked_through = l.out.front().last_seq;
    st.records_acked += l.out.front().records;
    l.out.pop_front();
  }
  if (l.acked_through == l.sent_through) return;
  uint64_t through = l.sent_through = l.acked_through;
  self->request(st.buffer, std::chrono::seconds(60), ack_atom::value, lane, through)
      .then([=](uint64_t) {
              auto& l = self->state.lanes[static_cast<size_t>(lane)];
              l.deleted_through = std::max(l.deleted_through, through);
            },
            [=](caf::error& err) {
              // Kept in the buffer: the retry asks again (they come again at the next start otherwise).
              self->state.lanes[static_cast<size_t>(lane)].sent_through = 0;
              failed(self, lane, "buffer ack through " + std::to_string(through) + ": " + self->system().render(err));
            });
}

void hand_over(Self self, Lane lane, const BufferedRecords& records) {
  auto& st = self->state;
  auto& l = st.lanes[static_cast<size_t>(lane)];
  SinkBatch batch;
  batch.lane = schemas::lane_name(lane);
  batch.records.reserve(records->size());
  for (auto& r : *records) batch.records.push_back({r.seq, r.query_id, r.rows, json_lines(r)});
  uint64_t id = st.next_batch++;
  auto state = std::make_shared<SinkAck::State>();
  state->channel = st.channel;
  state->lane = lane;
  state->batch = id;
  l.out.push_back({id, records->back().seq, records->size(), false});
  try {
    st.sink(batch, SinkAck(std::move(state)));
  } catch (const std::exception& e) {
    l.out.pop_back();  // not handed over: it comes again (an ack it sent meanwhile finds no batch)
    return failed(self, lane, std::string("the host's sink threw: ") + e.what());
  } catch (...) {
    l.out.pop_back();
    return failed(self, lane, "the host's sink threw something that is not a std::exception");
  }
  l.handed_through = records->back().seq;
  ++st.batches_handed;
  st.records_handed += records->size();
  if (auto* m = self->metrics()) m->add_out(rows_of(*records), persistence::payload_bytes(*records));
  pump(self, lane);
}

// Reads what the lane holds past what was handed over, while the host holds
// fewer than max_unacked of its batches.
void pump(Self self, Lane lane) {
  auto& st = self->state;
  auto& l = st.lanes[static_cast<size_t>(lane)];
  if (!st.online || l.reading || l.retrying || l.out.size() >= st.max_unacked) return;
  l.reading = true;
  self->request(st.buffer, std::chrono::seconds(60), read_atom::value, lane, l.handed_through, kLinkReadBatch,
                uint64_t{8} << 20)
      .then(
          [=](BufferedRecords records) {
            self->state.lanes[static_cast<size_t>(lane)].reading = false;
            if (!records->empty()) hand_over(self, lane, records);
          },
          [=](caf::error& err) {
            self->state.lanes[static_cast<size_t>(lane)].reading = false;
            failed(self, lane, "read: " + self->system().render(err));
          });
}

void pump_all(Self self) {
  for (size_t i = 0; i < schemas::kLaneCount; ++i) pump(self, static_cast<Lane>(i));
}

caf::settings status_of(const host_link_state& st) {
  caf::settings s;
  caf::put(s, "kind", std::string("host"));
  caf::put(s, "online", st.online);
  put_count(s, "batches_handed", st.batches_handed);
  put_count(s, "records_handed", st.records_handed);
  put_count(s, "records_acked", st.records_acked);
  put_count(s, "acks_received", st.acks_received);
  put_count(s, "max_unacked", st.max_unacked);
  put_count(s, "errors", st.errors);
  for (size_t i = 0; i < schemas::kLaneCount; ++i) {
    std::string lane = std::string("lanes.") + schemas::lane_name(static_cast<Lane>(i)) + ".";
    auto& l = st.lanes[i];
    put_count(s, lane + "handed_through", l.handed_through);
    put_count(s, lane + "acked_through", l.acked_through);
    put_count(s, lane + "deleted_through", l.deleted_through);
    put_count(s, lane + "unacked_batches", l.out.size());
  }
  if (!st.last_error.empty()) caf::put(s, "last_error", st.last_error);
  return s;
}

}  // namespace

host_link_self_actor::behavior_type host_link(Self self, buffer_actor buffer, Sink sink, unsigned max_unacked,
                                              std::shared_ptr<AckChannel> channel) {
  auto& st = self->state;
  st.buffer = std::move(buffer);
  st.sink = std::move(sink);
  st.max_unacked = std::max(1u, max_unacked);
  st.channel = std::move(channel);
  st.channel->open(caf::actor_cast<host_link_actor>(self));  // before any batch, so any ack finds it
  pump_all(self);  // a backlog from before a restart is handed over right away
  return {
      [=](committed_atom, Lane lane, uint64_t, const BufferedRecords&) { pump(self, lane); },
      [=](online_atom, bool on) {
        self->state.online = on;
        pump_all(self);
      },
      [=](reconnect_atom) -> caf::result<std::string> {
        return caf::make_error(caf::sec::runtime_error,
                               std::string("this agent's link is its host program's sink: it has no connection"));
      },
      [=](ack_atom, Lane lane, uint64_t id) {
        ++self->state.acks_received;
        auto& l = self->state.lanes[static_cast<size_t>(lane)];
        for (auto& h : l.out)
          if (h.id == id) h.acked = true;
        release(self, lane);
        pump(self, lane);  // room for another batch
      },
      [=](internal_atom, retry_atom, Lane lane) {
        self->state.lanes[static_cast<size_t>(lane)].retrying = false;
        release(self, lane);
        pump(self, lane);
      },
      [=](status_atom) { return status_of(self->state); },
  };
}

std::pair<host_link_actor, std::shared_ptr<AckChannel>> spawn_host_link(caf::actor_system& sys, buffer_actor buffer,
                                                                       Sink sink, unsigned max_unacked) {
  auto channel = std::make_shared<AckChannel>();
  auto link = sys.spawn<caf::detached>(host_link, std::move(buffer), std::move(sink), max_unacked, channel);
  return {link, channel};
}

}  // namespace outpost
