#pragma once
// What an upload is on the collector's side, before any backend stores it:
// the records an agent sent for one lane, checked (take_upload) and
// rendered as JSON lines (render_record), and what storing it answered.

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "schemas/codec.hpp"
#include "schemas/protocol.capnp.h"

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
  // <agent>/_uploads/<query id>/<path, %-escaped>; points into the record,
  // or into `copy` when the record had to be copied to be read.
  std::string blob_file;
  uint64_t blob_offset = 0;
  kj::ArrayPtr<const kj::byte> blob;
  // The record as whole, aligned words, when its bytes were not (shared by
  // copies of this, whose blob points into it too).
  std::shared_ptr<const kj::Array<capnp::word>> copy;
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

// Session.upload's params from `agent`, checked (a known lane, at most
// MAX_RECORDS_PER_UPLOAD records and MAX_UPLOAD_BYTES bytes) into `up`,
// whose records point into the params. Answers what breaks the protocol, or
// "" (any thread).
std::string take_upload(protocol::Session::UploadParams::Reader params, const std::string& agent, Upload& up);

enum class UploadStatus {
  stored,   // its records are stored (or were already)
  refused,  // a gap or seqs out of order: the agent must resume from `mark`
  failed,   // storage failed for this upload only (a file could not be opened
            // or written); nothing of it was stored, the agent sends it again
};

struct UploadResult {
  UploadStatus status = UploadStatus::stored;
  uint64_t mark = 0;  // the lane's mark afterwards: the agent may delete through it
  std::string error;  // why, unless stored
};

struct StoreReport {
  uint64_t stored = 0;      // records written
  uint64_t duplicates = 0;  // records at or below their mark, acked again only
  uint64_t malformed = 0;   // kept in <agent>/_malformed/, never rendered
};

struct PruneReport {
  uint64_t files = 0;   // `files` entries removed (their files are complete and stay)
  uint64_t agents = 0;  // `agents` entries removed
};

// Agent ids name directories: 1-128 of [A-Za-z0-9_.@-], not starting with '.'.
bool valid_agent_id(const std::string& id);

// The folder an artifact's rows go to under <datadir>/<agent>/: the name with
// every byte outside [A-Za-z0-9_.-] (and a leading '.' or '_') %XX-encoded.
std::string artifact_folder(kj::StringPtr artifact);
// The folder of a stored file's name "<agent>/<folder>/<name>"; "" if it is none (pure).
std::string folder_of_file(const std::string& rel);
// The folder the agents' status records (flows' starts and ends) go to.
inline constexpr const char* kStatusFolder = "_status";

// Appends `c` as `marker` and two hex digits (pure).
void append_escaped(std::string& out, unsigned char c, char marker);

}  // namespace outpost::net
