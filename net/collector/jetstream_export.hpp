#pragma once
// `outpost-collector export --from jetstream --to jsonl DIR`: writes the
// jsonl backend's file layout (<agent>/<artifact>/<date>.jsonl, upload
// chunks under <agent>/_uploads/) from the stream the jetstream backend
// fills (jetstream_store.hpp), so that tools that read the files keep
// working. Each line once, across a crash of the export at any point: the
// position is kept with the files, not in NATS (each run reads the stream
// from the sequence after it, through an ephemeral pull consumer):
//
//   DIR/.export/state  "v1 <stream sequence written through>" and, while a
//                      batch is being written, "cut <length> <file>" for
//                      every file it appends to (its length before)
//
// A batch: the state with its cuts (written to a new file, synced,
// renamed), the messages appended (chunks written at their offsets), every
// file touched fdatasynced, then the state with the batch's last sequence
// and no cuts. At start, files named by cuts are cut back to their length.
//
// Threads: one export per DIR at a time, from one thread; it blocks on
// NATS (each request bounded by request_timeout) and file I/O.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "net/collector/nats_link.hpp"

namespace outpost::net {

struct ExportOptions {
  NatsLink nats;  // the servers and the credentials
  std::string stream = "OUTPOST";
  std::string subject_prefix = "outpost";
  bool follow = false;                       // keep waiting for new messages (until *stop)
  std::chrono::milliseconds idle{1000};      // without follow: done once nothing came this long
  std::chrono::milliseconds request_timeout{5000};
  size_t batch = 256;  // messages written and synced at once (at most 4096)
  // Tests: called after a batch's data is synced, before the state moves.
  std::function<void()> after_data_sync;
};

struct ExportReport {
  uint64_t messages = 0;  // written now
  uint64_t skipped = 0;   // written by an earlier run (the stream gave them again): not written
  uint64_t refused = 0;   // a file name that is absolute, has "..", or none: logged, not written
  uint64_t files_cut = 0; // cut back at start (an export that died mid-batch)
  uint64_t written_through = 0;  // the stream sequence the files now hold everything through
};

// Throws persistence::StoreError naming NATS, the stream or the file that failed.
ExportReport export_jsonl(const ExportOptions& options, const std::filesystem::path& dir,
                          const std::atomic<bool>* stop = nullptr);

}  // namespace outpost::net
