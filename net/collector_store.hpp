#pragma once
// The collector's durable store: rows as JSON lines under
//   <datadir>/<agent>/<artifact>/<YYYY-MM-DD>.jsonl
// (what people grep and load), and an LMDB environment in
// <datadir>/.collector/ that holds what makes them exactly-once:
//
//   marks: <agent> '\0' <lane byte>  -> u64  highest seq stored for that lane
//   files: <path relative to datadir> -> u64  committed length of the file
//   agents: <agent>                   -> u64  last time it uploaded (ns); 0: met, never uploaded
//   tables: <agent>                   -> EventTable (protocol.capnp), encoded
//   requests: <agent> '\0' <u64 BE>   -> PendingRequest, encoded: for when it connects
//   meta: "next_flow"                 -> u64  every flow id given out is below it
//
// A store first appends the lines and fdatasyncs every file it touched, then
// commits the new marks and lengths in one LMDB transaction. Bytes past a
// file's committed length belong to a store that never committed: they are
// cut off when the collector starts and before the file is written again,
// and the agent sends those records again. So a record is in the files iff
// its lane's mark covers it, across a crash at any point.

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "persistence/files.hpp"
#include "persistence/lmdb.hpp"
#include "schemas/codec.hpp"

namespace outpost::net {

using Lane = schemas::Lane;
using LaneMarks = std::array<uint64_t, schemas::kLaneCount>;

struct IncomingRecord {
  uint64_t seq = 0;
  kj::ArrayPtr<const kj::byte> data;  // an encoded Record, as the agent buffered it
};

// A record's lines and the file (relative to the datadir) they go to.
struct RenderedRecord {
  std::string file;
  std::string lines;
  bool malformed = false;  // kept as base64 under <agent>/_malformed/
  // An upload chunk's data, written at its offset into
  // <agent>/_uploads/<query id>/<path, %-escaped>; points into the record.
  std::string blob_file;
  uint64_t blob_offset = 0;
  kj::ArrayPtr<const kj::byte> blob;
};

struct Upload {
  std::string agent;  // a valid agent id (see valid_agent_id)
  Lane lane = Lane::EVENTS;
  // The lane's mark as the agent knows it: resumeFrom, or the last seq of its
  // previous upload. Seqs are not contiguous, so this is how a gap (an
  // earlier upload that failed) is seen: such an upload is refused.
  uint64_t after = 0;
  std::vector<IncomingRecord> records;  // ascending seqs, all above `after`
  // The records rendered ahead (StorageWorker does it on another thread),
  // or empty: store() renders them.
  std::vector<RenderedRecord> rendered;
};

// Renders one record as JSON lines (pure: any thread). One that does not
// decode, or would render to far more than its size, comes back malformed.
RenderedRecord render_record(const std::string& agent, Lane lane, const IncomingRecord& record);

struct UploadResult {
  uint64_t mark = 0;  // the lane's mark afterwards: the agent may delete through it
  std::string error;  // set when the upload was refused; nothing of it was stored
};

struct StoreReport {
  uint64_t stored = 0;      // records written
  uint64_t duplicates = 0;  // records at or below their mark, acked again only
  uint64_t malformed = 0;   // kept in <agent>/_malformed/, never rendered
};

struct RepairReport {
  uint64_t files_cut = 0;      // files that had uncommitted bytes at the end
  uint64_t bytes_cut = 0;
  uint64_t files_short = 0;    // files shorter than committed: damaged outside Outpost
};

// Agent ids name directories: 1-128 of [A-Za-z0-9_.@-], not starting with '.'.
bool valid_agent_id(const std::string& id);

// The folder an artifact's rows go to under <datadir>/<agent>/: the name with
// every byte outside [A-Za-z0-9_.-] (and a leading '.') %XX-encoded.
std::string artifact_folder(kj::StringPtr artifact);

class CollectorStore {
 public:
  explicit CollectorStore(const std::filesystem::path& datadir);  // throws StoreLocked, StoreError
  ~CollectorStore();
  CollectorStore(const CollectorStore&) = delete;
  CollectorStore& operator=(const CollectorStore&) = delete;

  LaneMarks marks(const std::string& agent) const;

  // Stores a group of uploads with one fdatasync per file touched and one
  // commit. Refuses (in its result) an upload that leaves a gap after the
  // mark or whose seqs do not ascend. Throws StoreError (nothing committed)
  // on I/O errors.
  std::vector<UploadResult> store(const std::vector<Upload>& uploads, StoreReport* report = nullptr);

  const RepairReport& repair_report() const { return repair_; }

  struct AgentEntry {
    std::string id;
    int64_t last_upload_ns = 0;
    LaneMarks marks{};
  };
  std::vector<AgentEntry> agents() const;

  // The admin side (requests are small and rare: the writes commit at once).
  // Threads: the writes (next_flow_ids, set_event_table, queue_request,
  // remove_request, remember_agent) may wait for a storage group's commit,
  // so the collector runs them on its admin writer thread, never on the kj
  // loop; the const reads may be called from any thread and wait for nothing
  // (an LMDB read transaction of their own).

  // `count` consecutive flow ids never given out before (protocol.capnp's
  // CollectRequest.flowId): the first is at least kFirstFlowId plus the
  // wall clock in microseconds, so that a reset datadir does not reuse ids.
  uint64_t next_flow_ids(uint64_t count = 1);
  uint64_t flows_given_below() const;  // 0: none given out since the datadir was made
  // An agent this collector has met: connected, uploaded, or has a table or
  // queued requests.
  bool known_agent(const std::string& agent) const;
  void remember_agent(const std::string& agent);  // on its first connection
  void set_event_table(const std::string& agent, const std::string& encoded);  // "" removes it
  std::string event_table(const std::string& agent) const;                     // "" if none
  void queue_request(const std::string& agent, const std::string& encoded);
  struct Queued {
    uint64_t key;
    std::string encoded;
  };
  std::vector<Queued> queued_requests(const std::string& agent) const;  // oldest first
  void remove_request(const std::string& agent, uint64_t key);
  std::vector<std::string> agents_with_requests() const;  // an event table or queued requests

 private:
  class Files;
  void repair();

  std::filesystem::path datadir_;
  persistence::DirLock lock_;
  std::unique_ptr<persistence::lmdb::Env> env_;
  MDB_dbi marks_ = 0, files_ = 0, agents_ = 0, tables_ = 0, requests_ = 0, meta_ = 0;
  RepairReport repair_;
};

}  // namespace outpost::net
