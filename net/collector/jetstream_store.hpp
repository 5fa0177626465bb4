#pragma once
// The `jetstream` storage backend (row_store.hpp): every record an agent
// uploads becomes one message of a NATS JetStream stream, replicated by the
// NATS cluster, on the subject
//   <prefix>.<agent>.<lane>.<artifact folder>
// (each token's bytes outside [A-Za-z0-9_-] written =XX, subject_token())
// with the message id <agent>/<lane>/<seq>, so that JetStream drops a record
// published twice within its deduplication window. The message's data is
// the record's JSON lines, its header Outpost-File the file (relative to a
// datadir) the jsonl backend would append them to; an upload chunk's bytes
// go in a second message, id <agent>/<lane>/<seq>/blob, headers Outpost-File
// and Outpost-Offset.
//
// Records stay in order in the stream per subject (per query): a record's
// message goes out only once JetStream acknowledged the one before it on
// its subject (in the group, or below the mark). Publishing them all at
// once, a record refused while a leader was being elected and sent again
// landed after the later ones stored meanwhile. Subjects go in parallel.
//
// Marks live in a JetStream key-value bucket, a key per agent (its token),
// the value "v1 <mark per lane> <last upload ns>", so that any collector
// can resume any agent: store() moves them with compare-and-set, after
// every record of the upload was acknowledged by JetStream, taking the
// highest of its own and another collector's. A collector that dies after
// the records were acknowledged but before the mark moved costs nothing:
// sent again within the deduplication window, JetStream drops them; when
// the agent connects after it, resume_marks() finds its last record in the
// stream above its marks and marks the records stored there in an unbroken
// run above each lane's mark (a record whose chunk is not there too breaks
// the run), so the agent does not send them again.
//
// Threads: progress() and resume_marks() from any thread; store() and
// prune() from the storage thread only. Every call blocks on NATS round
// trips, each bounded by request_timeout; libnats' own threads read
// acknowledgements.

#include <array>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "net/collector/nats_link.hpp"
#include "net/collector/row_store.hpp"

namespace outpost::net {

class CollectorStore;

struct JetStreamOptions {
  NatsLink nats;  // the servers and the credentials
  std::string stream = "OUTPOST";
  std::string subject_prefix = "outpost";  // the stream takes <prefix>.>
  std::string marks_bucket = "outpost-marks";
  int replicas = 1;  // of the stream and the bucket, when this collector creates them (3 in a cluster)
  std::chrono::milliseconds duplicate_window{120000};
  // A group's acks, a key-value read or write. Within it, what found no
  // responder or had no answer after retry_after (a stream electing a
  // leader after a node was lost) is asked again: JetStream drops a record
  // that arrives twice, a mark is compare-and-set.
  std::chrono::milliseconds request_timeout{5000};
  std::chrono::milliseconds retry_after{1000};
  std::chrono::milliseconds connect_timeout{30000};  // at start, how long NATS may be unreachable
  // Tests: called in store() once JetStream acknowledged the group, before the marks move.
  std::function<void()> before_marks;
  // Tests: called before each record's message is published (the first
  // time, and each time again); true fails that publication as a lost
  // leader would (no responder), to be sent again after a pause.
  std::function<bool(const std::string& id)> lose_publication;
};

class JetStreamStore final : public RowStore {
 public:
  // Connects (retrying while NATS is unreachable, up to connect_timeout),
  // creates the stream and the bucket if they do not exist; throws
  // StoreError naming the server and what failed. `state` is the
  // collector's own store, whose `agents` entries prune() prunes. Any
  // thread, before the others start.
  JetStreamStore(JetStreamOptions options, CollectorStore& state);
  ~JetStreamStore() noexcept(false) override;
  JetStreamStore(const JetStreamStore&) = delete;
  JetStreamStore& operator=(const JetStreamStore&) = delete;

  const char* backend() const override { return "jetstream"; }
  std::optional<StreamAccess> stream_access() const override {
    auto& n = options_.nats;
    return StreamAccess{n.servers, options_.stream, options_.subject_prefix, n.ca, n.cert, n.key, n.creds};
  }
  AgentProgress progress(const std::string& agent) const override;
  // Up to kReadEachUpTo agents: a read each; more: the whole bucket in one
  // pass (a watcher of every key's last value).
  std::vector<AgentProgress> progress_each(const std::vector<std::string>& agents) const override;
  static constexpr size_t kReadEachUpTo = 16;
  // Nothing more than marks() while the deduplication window (less a
  // quarter, 30 s at most) still covers what was stored since the marks
  // were written; after it, one request (the last message of the agent's
  // subjects) when nothing is unmarked, else a read of its messages stored
  // since then (an ordered consumer), at most kMaxUnmarkedScan of them.
  // Throws StoreError only when the marks cannot be read: when the stream
  // does not answer within retry_after, the marks as they are.
  LaneMarks resume_marks(const std::string& agent) override;
  static constexpr size_t kMaxUnmarkedScan = 1000000;
  // On a record's message whose upload chunk is the message <id>/blob.
  static constexpr const char* kChunkHeader = "Outpost-Chunk";
  std::vector<UploadResult> store(const std::vector<Upload>& uploads, StoreReport* report = nullptr) override;
  PruneReport prune(int64_t now_ns) override;

  const JetStreamOptions& options() const { return options_; }

 private:
  struct Entry {
    AgentProgress progress;
    uint64_t revision = 0;  // of its key-value entry; 0: none yet
    int64_t written_ns = 0;  // when NATS stored that entry (its clock)
  };
  struct Message {
    size_t upload;
    uint64_t StoreReport::*counted;  // where it was counted (stored, malformed), or null: a blob
    std::string subject, id, file;
    std::optional<uint64_t> offset;  // a blob's, in its file
    const void* data;                // the upload's or its rendering's, alive through store()
    size_t size;
    std::optional<uint64_t> expect_revision = {};  // a mark's: compare-and-set on its key
    // held: not sent yet, behind the record before it on its subject (its chain).
    enum { held, waiting, stored, duplicate, failed } state = waiting;
    size_t next = SIZE_MAX;  // the record after it on its subject, held until this one is stored
    bool retry = false;  // no responder or no answer (a leader being elected): worth sending again
    uint64_t sequence = 0;  // in its stream, once acknowledged (a mark's new revision)
    int error_code = 0;     // JetStream's, when it refused it (10071: not the expected revision)
    std::string error = {};
    bool has_chunk = false;  // a record whose upload chunk is a message of its own (header Outpost-Chunk)
  };
  // One store() call's uploads: their results, what each counted, and the
  // renderings made here (a deque: they stay in place while their messages wait).
  struct Group {
    std::vector<UploadResult> results;
    std::vector<StoreReport> counted;
    std::deque<RenderedRecord> rendered_here;
  };
  // Checks each upload against its lane's mark as the group moves it, and
  // publishes every record above the mark without waiting.
  void publish(const std::vector<Upload>& uploads, Group& group);
  // Waits for the acknowledgements: an upload with a record not acknowledged failed.
  void take_acks(Group& group);
  // The marks the stored uploads move to, per agent (an upload of a lane
  // after one that failed fails too: it would follow a gap).
  std::map<std::string, Entry> marks_wanted(const std::vector<Upload>& uploads, Group& group);
  void clear_messages();  // this round's messages_ and ids_, under the mutex
  static void on_ack(jsCtx* js, natsMsg* msg, jsPubAck* ack, jsPubAckErr* err, void* self);
  void setup();  // the stream and the bucket, made if missing; throws StoreError
  Entry read_entry(const std::string& agent) const;  // throws StoreError
  Entry entry_of(kvEntry* raw, const std::string& agent) const;  // decoded; throws StoreError
  const Entry& seen(const std::string& agent, const Entry& fresh) const;  // into the cache if newer; `fresh`
  Entry cached(const std::string& agent);            // storage thread; throws StoreError
  size_t queue(Message m);  // into messages_: its index
  void send(size_t index);  // publishes messages_[index] (async); a failure is its state
  // Queues a record's message behind `previous` on its subject (SIZE_MAX:
  // none in this group), sending it at once if nothing holds it back: its index.
  size_t chain(Message m, size_t previous);
  // Waits for every acknowledgement (request_timeout at most), sending each
  // chain's next record as the one before it is stored, and again what
  // found no responder or had no answer within retry_after; what still
  // waits then has failed, and so has what its chain held back.
  void await_acks();
  // Moves the agents' marks in the bucket, each a compare-and-set published
  // at once; a conflict with another collector is merged (write_marks).
  // Answers why an agent's could not be written, by agent.
  std::map<std::string, std::string> move_marks(const std::map<std::string, Entry>& wanted);
  // One agent's marks, merged with another collector's on a conflict; throws StoreError.
  void write_marks(const std::string& agent, const Entry& wanted);
  std::string where() const;  // the servers, for errors
  std::string agent_subjects(const std::string& agent) const;  // "<prefix>.<agent token>.": its subjects begin so
  // The records of `agent` stored in the stream since `since_ns` (NATS'
  // clock), by lane: their seqs, and the seqs whose chunk message is there.
  struct Unmarked {
    std::array<std::set<uint64_t>, schemas::kLaneCount> records, chunks;
    std::array<std::set<uint64_t>, schemas::kLaneCount> needs_chunk;
  };
  Unmarked stored_since(const std::string& agent, int64_t since_ns) const;  // throws StoreError
  // resume_marks' repair: the marks moved through the unmarked run, or
  // nothing to move. Each request waits retry_after at most; throws StoreError.
  std::optional<LaneMarks> unmarked_run(const std::string& agent, const Entry& e);

  JetStreamOptions options_;
  CollectorStore& state_;
  std::string instance_;  // random: this collector's marks messages' ids never meet another's
  NatsConnection nc_;
  jsCtx* js_ = nullptr;
  kvStore* kv_ = nullptr;  // through kv_js_, whose requests wait retry_after
  jsCtx* kv_js_ = nullptr;
  mutable std::mutex mutex_;                      // the cache and the acks
  std::condition_variable acked_;                 // an ack came that releases a record, or the last one came
  std::vector<size_t> released_;                  // records whose chain moved on: to send
  size_t in_flight_ = 0;                          // messages sent, not answered
  mutable std::map<std::string, Entry> cache_;    // the highest marks seen, per agent
  std::unordered_map<std::string, size_t> ids_;   // message id -> index in messages_, this group
  std::vector<Message> messages_;                 // this group's
};

}  // namespace outpost::net
