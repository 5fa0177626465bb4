// JetStreamStore::resume_marks (jetstream_store.hpp): records a collector
// stored but never marked, found at the agent's next hello and marked
// through their unbroken run per lane.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>

#include "net/collector/jetstream_store.hpp"
#include "persistence/errors.hpp"
#include "schemas/wall_clock.hpp"

namespace outpost::net {

using persistence::StoreError;

namespace {

// A record message's lane and seq, from its id <agent>/<lane>/<seq>[/blob]
// (agent ids hold no '/'); whether it is a chunk's. Nothing: not one of ours.
struct RecordId {
  size_t lane;
  uint64_t seq;
  bool chunk;
};
std::optional<RecordId> record_id(natsMsg* msg) {
  const char* raw = nullptr;
  if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &raw) != NATS_OK || !raw) return std::nullopt;
  std::string id = raw;
  RecordId out{0, 0, false};
  if (id.size() > 5 && id.compare(id.size() - 5, 5, "/blob") == 0) {
    out.chunk = true;
    id.resize(id.size() - 5);
  }
  size_t seq_at = id.rfind('/');
  if (seq_at == std::string::npos || seq_at == 0) return std::nullopt;
  size_t lane_at = id.rfind('/', seq_at - 1);
  if (lane_at == std::string::npos) return std::nullopt;
  std::string lane = id.substr(lane_at + 1, seq_at - lane_at - 1);
  bool known = false;
  for (size_t l = 0; l < schemas::kLaneCount; ++l)
    if (lane == schemas::lane_name(static_cast<Lane>(l))) out.lane = l, known = true;
  if (!known) return std::nullopt;
  try {
    size_t used = 0;
    out.seq = std::stoull(id.substr(seq_at + 1), &used);
    if (used != id.size() - seq_at - 1) return std::nullopt;
  } catch (const std::exception&) {
    return std::nullopt;
  }
  return out;
}

}  // namespace

LaneMarks JetStreamStore::resume_marks(const std::string& agent) {
  Entry e = read_entry(agent);
  // Records stored after the marks were written, sent again now, are
  // dropped by JetStream while the deduplication window still covers them:
  // then there is nothing to repair (an agent reconnecting within seconds,
  // a reconnect storm, a leader being elected). A quarter of the window (30 s
  // at most) is left for the agent to send them and for the clocks.
  auto window = std::chrono::duration_cast<std::chrono::nanoseconds>(options_.duplicate_window).count();
  int64_t margin = std::min<int64_t>(window / 4, int64_t{30} * 1000 * 1000 * 1000);
  if (e.revision != 0 && schemas::now_ns() - e.written_ns < window - margin) return seen(agent, e).progress.marks;
  // The repair only saves sending records again: when the stream cannot
  // answer quickly, the agent resumes from the marks as they are.
  try {
    if (auto marks = unmarked_run(agent, e)) return *marks;
  } catch (const StoreError& error) {
    spdlog::warn("collector: agent {} resumes from its marks as they are: {}", agent, error.what());
  }
  return seen(agent, e).progress.marks;
}

std::optional<LaneMarks> JetStreamStore::unmarked_run(const std::string& agent, const Entry& e) {
  std::string filter = agent_subjects(agent) + ">";
  natsMsg* raw = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  jsOptions quick;
  jsOptions_Init(&quick);
  quick.Wait = options_.retry_after.count();
  natsStatus s = js_GetLastMsg(&raw, js_, options_.stream.c_str(), filter.c_str(), &quick, &jerr);
  NatsOwned<natsMsg> last(raw);
  if (s == NATS_NOT_FOUND) return std::nullopt;
  if (s != NATS_OK)
    throw StoreError("cannot read its last record in stream " + options_.stream + " on " + where() + ": " +
                     nats_status_text(s));
  auto id = record_id(raw);
  // Groups are marked in the order they were stored: the last record at or
  // below its lane's mark means every record is marked.
  if (!id || id->seq <= e.progress.marks[id->lane]) return std::nullopt;

  Unmarked found = stored_since(agent, e.written_ns);
  Entry wanted = e;
  std::string moved;
  for (size_t l = 0; l < schemas::kLaneCount; ++l) {
    uint64_t& mark = wanted.progress.marks[l];
    uint64_t from = mark;
    while (found.records[l].count(mark + 1) && (!found.needs_chunk[l].count(mark + 1) || found.chunks[l].count(mark + 1)))
      ++mark;
    if (mark > from)
      moved += fmt::format("{}{} {} to {}", moved.empty() ? "" : ", ", schemas::lane_name(static_cast<Lane>(l)), from, mark);
  }
  if (moved.empty()) return std::nullopt;
  spdlog::warn("collector: agent {} has records in stream {} that no mark covers (a collector stopped, or an upload "
               "failed, after JetStream stored them): marked now ({})",
               agent, options_.stream, moved);
  write_marks(agent, wanted);
  std::lock_guard<std::mutex> lock(mutex_);
  return cache_[agent].progress.marks;
}

JetStreamStore::Unmarked JetStreamStore::stored_since(const std::string& agent, int64_t since_ns) const {
  std::string filter = agent_subjects(agent) + ">";
  // The margin is for the clocks of the nodes leading the bucket and the stream.
  jsSubOptions so = ordered_since(options_.stream, since_ns);
  natsSubscription* sub = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_SubscribeSync(&sub, js_, filter.c_str(), nullptr, &so, &jerr);
  auto fail = [&](const std::string& what) {
    return StoreError("cannot read its unmarked records in stream " + options_.stream + " on " + where() + ": " + what);
  };
  if (s != NATS_OK) throw fail(nats_status_text(s) + " (JetStream error " + std::to_string(jerr) + ")");
  std::unique_ptr<natsSubscription, void (*)(natsSubscription*)> owned(sub, [](natsSubscription* p) {
    natsSubscription_Unsubscribe(p);
    natsSubscription_Destroy(p);
  });
  Unmarked out;
  for (size_t read = 0; read < kMaxUnmarkedScan; ++read) {
    natsMsg* raw = nullptr;
    s = natsSubscription_NextMsg(&raw, sub, static_cast<int64_t>(options_.retry_after.count()));
    if (s == NATS_TIMEOUT && read == 0) return out;  // none since (an empty consumer delivers nothing)
    if (s != NATS_OK) throw fail(nats_status_text(s) + " after " + std::to_string(read) + " messages");
    NatsOwned<natsMsg> msg(raw);
    uint64_t pending = 0;
    jsMsgMetaData* meta = nullptr;
    if (natsMsg_GetMetaData(&meta, raw) == NATS_OK) {
      pending = meta->NumPending;
      jsMsgMetaData_Destroy(meta);
    }
    if (auto id = record_id(raw)) {
      (id->chunk ? out.chunks : out.records)[id->lane].insert(id->seq);
      const char* chunk = nullptr;
      if (!id->chunk && natsMsgHeader_Get(raw, kChunkHeader, &chunk) == NATS_OK) out.needs_chunk[id->lane].insert(id->seq);
    }
    if (pending == 0) return out;
  }
  return out;  // the rest stays unmarked: the agent sends it again
}

}  // namespace outpost::net
