#pragma once
// The collector's write-ahead journal (<datadir>/.collector/journal). A
// group of uploads may write to thousands of row files (one per agent,
// artifact and day); syncing each would make a group's cost grow with the
// number of agents in it. Instead the group's writes (file, offset, bytes)
// are appended here as one checksummed entry and made durable with a single
// fdatasync; the row files are written too, but synced only at a checkpoint
// (CollectorStore::checkpoint: one syncfs, then the files' lengths and a
// journal end of 0 committed to LMDB, then the journal starts over). The
// LMDB commit of each group records how far the journal is committed
// (`journal_end`); at start, and after a failed group, the entries below it
// are written again at their offsets, which is idempotent.
//
// Entry: u32 magic, u32 0, u64 body length, u64 XXH3-64 of the body, body.
// Body: items of u8 kind (0: lines appended to a row file, 1: upload data
// written in place), u32 path length, path (relative to the datadir), u64
// offset, u64 data length, data.
//
// Threads: one thread only (the collector's storage thread), which may block
// on its file I/O and fdatasync.

#include <kj/io.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

namespace outpost::net {

class GroupJournal {
 public:
  enum class Kind : uint8_t { lines = 0, blob = 1 };
  struct Item {
    Kind kind;
    std::string_view path;
    uint64_t offset;
    std::string_view data;
  };

  // Opens or creates the journal; throws StoreError naming it.
  explicit GroupJournal(std::filesystem::path path);
  GroupJournal(const GroupJournal&) = delete;
  GroupJournal& operator=(const GroupJournal&) = delete;

  // The group being built, in memory until write_group().
  void add(Kind kind, std::string_view path, uint64_t offset, std::string_view data);
  size_t group_mark() const { return group_.size(); }
  void roll_back(size_t mark) { group_.resize(mark); }  // drops what was added after group_mark() was `mark`
  void discard_group() { group_.clear(); }

  // Appends the group as one entry at end() and fdatasyncs it (nothing when
  // the group is empty); end() then covers it. Throws StoreError (ENOSPC on
  // a full disk): end() is unchanged.
  void write_group();
  uint64_t end() const { return end_; }

  // The entries in [0, end) in order; stops at the first entry that is torn
  // or fails its checksum and returns where that is (== end when all are
  // whole). Afterwards the journal continues at the returned offset.
  uint64_t replay(uint64_t end, const std::function<void(const Item&)>& apply);

  // After a checkpoint: everything before is in the row files; the next
  // group goes to offset 0 (the file is cut, not synced: a journal end of 0
  // committed in LMDB already makes its content void).
  void reset();

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  kj::AutoCloseFd fd_;
  uint64_t end_ = 0;
  std::string group_;  // the entry being built: room for its header, then its items
};

}  // namespace outpost::net
