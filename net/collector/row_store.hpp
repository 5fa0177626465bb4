#pragma once
// Where the collector keeps uploaded rows and the per-lane marks that make
// them exactly-once: the storage backend. Two implement it: CollectorStore
// (`jsonl`, row files on this machine's disk, the default) and
// JetStreamStore (`jetstream`, a replicated NATS JetStream stream, so that
// several collectors can serve one fleet). StorageWorker drives one.
//
// The contract, for both: store() answers an upload `stored` only once
// every record of it is durable in the backend, and moves its lane's mark
// to its last seq; a record at or below its mark is acknowledged again and
// not stored twice; an upload that leaves a gap after the mark is refused.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "net/collector/upload.hpp"

namespace outpost::net {

// What a backend knows of one agent's uploads.
struct AgentProgress {
  LaneMarks marks{};
  int64_t last_upload_ns = 0;  // 0: none stored through this backend
};

// Why an upload cannot follow `mark` (a gap, or seqs that do not ascend), or
// "" (pure: any thread).
std::string check_sequence(const Upload& up, uint64_t mark);

// Where a backend's rows can be read from outside the collector (the admin
// `storage` call tells the commands that read rows): jetstream's stream,
// with the collector's own NATS settings (files named as it was given them).
struct StreamAccess {
  std::vector<std::string> servers;
  std::string stream, subject_prefix;
  std::string ca, cert, key, creds;
};

class RowStore {
 public:
  // As kj::AutoCloseFd's (which CollectorStore holds): may throw a close error.
  virtual ~RowStore() noexcept(false) = default;

  virtual const char* backend() const = 0;  // "jsonl" or "jetstream"
  // Any thread. Empty for a backend whose rows are files under the datadir.
  virtual std::optional<StreamAccess> stream_access() const { return std::nullopt; }

  // Any thread. Blocks on a read of the backend: an LMDB read transaction,
  // or a round trip to NATS (bounded by its request timeout). Throws
  // StoreError when the backend cannot answer.
  virtual AgentProgress progress(const std::string& agent) const = 0;
  // progress() of each of `agents`, in their order, read at once where the
  // backend can (JetStreamStore: one pass over its bucket for many instead
  // of a round trip each). Any thread; blocks and throws as progress().
  virtual std::vector<AgentProgress> progress_each(const std::vector<std::string>& agents) const {
    std::vector<AgentProgress> out;
    out.reserve(agents.size());
    for (auto& agent : agents) out.push_back(progress(agent));
    return out;
  }
  LaneMarks marks(const std::string& agent) const { return progress(agent).marks; }
  // The marks a connecting agent resumes from: marks(), unless the backend
  // holds records above them that nothing marked (JetStreamStore: a
  // collector stopped between storing a group and moving its marks); those
  // are marked first. Any thread; blocks and throws as progress().
  virtual LaneMarks resume_marks(const std::string& agent) { return marks(agent); }

  // Storage thread only. Stores a group of uploads; results in their order
  // (stored, refused: a gap, failed: this upload only, sent again). Throws
  // StoreError when nothing of the group could be stored. Blocks on I/O.
  virtual std::vector<UploadResult> store(const std::vector<Upload>& uploads, StoreReport* report = nullptr) = 0;

  // Storage thread only: work a backend does while uploads pause, and how
  // much of it is waiting (0: none). CollectorStore checkpoints its journal
  // (see collector_store.hpp); JetStreamStore has none. checkpoint() throws
  // StoreError when it fails (nothing is lost).
  virtual uint64_t journal_bytes() const { return 0; }
  virtual void checkpoint() {}

  // Storage thread only, hourly: drops state kept for silent agents and old
  // files (collector_store.hpp's Pruning).
  virtual PruneReport prune(int64_t now_ns) = 0;
};

}  // namespace outpost::net
