#pragma once
// What outpost-collector's commands read from the data directory itself: row
// files followed as they grow (`tail`), and the flows' status records the
// agents send on the control lane (`flows`, `collect --wait`).
//
// Threads: one; each reads files the running collector appends to, and
// takes only complete lines (a line being written has no '\n' yet).

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace outpost::admin {

// The JSON lines of a folder's <date>.jsonl files, oldest first.
class Follower {
 public:
  explicit Follower(std::filesystem::path dir) : dir_(std::move(dir)) {}
  // Appends every complete line past what was read before.
  void read_new(std::vector<std::string>& lines);

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

// Reads the flows' status records of an agent as they come.
class FlowReader {
 public:
  FlowReader(const std::filesystem::path& datadir, const std::string& agent);
  // Takes what was stored since the last call.
  void update();
  const std::map<uint64_t, Flow>& flows() const { return flows_; }

 private:
  Follower follower_;
  std::map<uint64_t, Flow> flows_;
};

// A row line's query id (a flow's rows carry the flow id), or nullopt when
// the line is not a row.
std::optional<uint64_t> row_flow(const std::string& line);

}  // namespace outpost::admin
