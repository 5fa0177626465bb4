#include "tools/collector_files.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>

#include "net/collector/collector_store.hpp"
#include "schemas/json_reader.hpp"

namespace outpost::admin {
namespace fs = std::filesystem;

void Follower::read_new(std::vector<std::string>& lines) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir_, ec))
    if (e.path().extension() == ".jsonl") files.push_back(e.path());
  std::sort(files.begin(), files.end());  // <date>.jsonl: oldest first
  for (auto& f : files) {
    auto& offset = offsets_[f];
    std::ifstream in(f, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(offset));
    std::string line;
    while (std::getline(in, line) && !in.eof()) {
      offset += line.size() + 1;
      lines.push_back(std::move(line));
    }
  }
}

class StreamFolders::Folder final : public LineSource {
 public:
  Folder(StreamFolders& owner, std::string name) : owner_(owner), name_(std::move(name)) {}
  void read_new(std::vector<std::string>& lines) override { owner_.take(name_, lines); }

 private:
  StreamFolders& owner_;
  std::string name_;
};

StreamFolders::StreamFolders(const net::StreamAccess& access, const std::string& agent,
                             const std::string& only_folder, int64_t since_ns)
    : stream_(access, agent, only_folder, since_ns) {}

std::unique_ptr<LineSource> StreamFolders::folder(const std::string& folder) {
  return std::make_unique<Folder>(*this, folder);
}

void StreamFolders::take(const std::string& folder, std::vector<std::string>& lines) {
  stream_.read_new(waiting_, std::chrono::milliseconds(200));
  auto it = waiting_.find(folder);
  if (it == waiting_.end()) return;
  for (auto& l : it->second) lines.push_back(std::move(l));
  it->second.clear();
}

FlowReader::FlowReader(const fs::path& datadir, const std::string& agent)
    : lines_(std::make_unique<Follower>(datadir / agent / net::kStatusFolder)) {}

FlowReader::FlowReader(std::unique_ptr<LineSource> status_lines) : lines_(std::move(status_lines)) {}

void FlowReader::update() {
  std::vector<std::string> lines;
  lines_->read_new(lines);
  for (auto& line : lines) {
    schemas::Json j;
    try {
      j = schemas::Json::parse(line);
    } catch (const std::exception&) {
      continue;  // not ours to judge: the collector wrote it
    }
    if (!j.has("status")) continue;
    auto& s = j["status"];
    uint64_t id = static_cast<uint64_t>(s.number_or("flow_id", 0));
    if (id == 0) continue;  // a query's own status (events dropped), not a flow's
    auto& flow = flows_[id];
    flow.id = id;
    flow.artifact = s.string_or("artifact", flow.artifact);
    if (s.has("started")) {
      flow.started = s.string_or("time", "");
    } else if (s.has("finished")) {
      auto& f = s["finished"];
      flow.state = f.string_or("outcome", "finished");
      flow.rows = static_cast<uint64_t>(f.number_or("rows", 0));
      flow.bytes = static_cast<uint64_t>(f.number_or("bytes", 0));
      flow.duration_ns = static_cast<int64_t>(f.number_or("duration_ns", 0));
      flow.error = f.string_or("error", "");
      flow.ended = s.string_or("time", "");
    }
  }
}

std::optional<uint64_t> row_flow(const std::string& line) {
  // {"seq":S,"lane":"L","query_id":Q,"artifact":... — a row line's start (schemas/json.cpp).
  static const std::string key = "\"query_id\":";
  size_t at = line.find(key);
  if (at == std::string::npos || line.find(",\"row\":{") == std::string::npos) return std::nullopt;
  return std::strtoull(line.c_str() + at + key.size(), nullptr, 10);
}

}  // namespace outpost::admin
