#pragma once
// What outpost-collector's commands read of the rows an agent sent: the
// JSON lines of a folder (an artifact's rows, `tail`), and the flows'
// status records the agents send on the control lane (`flows`, `collect
// --wait`). A jsonl collector's are files in its datadir (Follower); a
// jetstream collector's are in its stream (StreamFolders).
//
// Threads: one; files are read as the running collector appends to them,
// taking only complete lines (a line being written has no '\n' yet); the
// stream is read through NATS (blocking, each wait bounded).

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "net/collector/jetstream_lines.hpp"

namespace outpost::admin {

// One folder's JSON lines, oldest first.
class LineSource {
 public:
  virtual ~LineSource() = default;
  // Appends every complete line past what was read before. Throws
  // persistence::StoreError when the stream cannot be read.
  virtual void read_new(std::vector<std::string>& lines) = 0;
};

// A folder's <date>.jsonl files.
class Follower final : public LineSource {
 public:
  explicit Follower(std::filesystem::path dir) : dir_(std::move(dir)) {}
  void read_new(std::vector<std::string>& lines) override;

 private:
  std::filesystem::path dir_;
  std::map<std::filesystem::path, uint64_t> offsets_;
};

// A collection as its agent reported it: started, then finished, failed or cancelled.
struct Flow {
  uint64_t id = 0;
  std::string artifact;
  std::string state = "running";  // running, finished, failed, cancelled
  uint64_t rows = 0, bytes = 0;   // when it ended
  int64_t duration_ns = 0;
  std::string error;
  std::string started, ended;  // RFC 3339; empty when no record said
};

// An agent's records in a jetstream collector's stream, read once for
// every folder asked for (net::StreamLines), from `since_ns` (0: the first).
// Throws persistence::StoreError when NATS or the stream cannot be reached.
class StreamFolders {
 public:
  StreamFolders(const net::StreamAccess& access, const std::string& agent, const std::string& only_folder,
                int64_t since_ns);
  // The lines of `folder` (the one given, if any), as a LineSource; valid
  // while this object lives.
  std::unique_ptr<LineSource> folder(const std::string& folder);

 private:
  class Folder;
  void take(const std::string& folder, std::vector<std::string>& lines);
  net::StreamLines stream_;
  std::map<std::string, std::vector<std::string>> waiting_;  // read, not yet taken
};

// Reads the flows' status records of an agent as they come.
class FlowReader {
 public:
  FlowReader(const std::filesystem::path& datadir, const std::string& agent);  // the datadir's files
  explicit FlowReader(std::unique_ptr<LineSource> status_lines);
  // Takes what was stored since the last call.
  void update();
  const std::map<uint64_t, Flow>& flows() const { return flows_; }

 private:
  std::unique_ptr<LineSource> lines_;
  std::map<uint64_t, Flow> flows_;
};

// A row line's query id (a flow's rows carry the flow id), or nullopt when
// the line is not a row.
std::optional<uint64_t> row_flow(const std::string& line);

}  // namespace outpost::admin
