#pragma once
// Rows for the collector store's tests: agent a1's records, and the seqs
// its files hold.

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "net/collector/collector_store.hpp"
#include "schemas/codec.hpp"

namespace outpost::net {
// An encoded row batch of `artifact` with one row whose N column is `seq`.
inline std::vector<kj::byte> batch_bytes(uint64_t seq, const std::string& artifact = "Test.Art") {
  schemas::RowBatchWriter w(1, artifact.c_str(), "q", Lane::EVENTS, {"N"});
  w.add_row()[0].setUint64(seq);
  auto encoded = w.finish();
  auto bytes = encoded.bytes();
  return {bytes.begin(), bytes.end()};
}

struct Batch {
  std::vector<std::vector<kj::byte>> payloads;
  Upload upload;
};

// Records first..last of agent a1's events lane, following first - 1.
inline Batch make_batch(uint64_t first, uint64_t last, const std::string& artifact = "Test.Art") {
  Batch b;
  b.upload.agent = "a1";
  b.upload.lane = Lane::EVENTS;
  b.upload.after = first - 1;
  for (uint64_t s = first; s <= last; ++s) b.payloads.push_back(batch_bytes(s, artifact));
  for (uint64_t s = first; s <= last; ++s)
    b.upload.records.push_back({s, kj::arrayPtr(b.payloads[s - first].data(), b.payloads[s - first].size())});
  return b;
}

// Every "seq" in the agent's files for the artifact, in file order.
inline std::vector<uint64_t> stored_seqs(const std::filesystem::path& datadir, const std::string& artifact = "Test.Art") {
  std::vector<uint64_t> seqs;
  std::filesystem::path dir = datadir / "a1" / artifact;
  if (!std::filesystem::exists(dir)) return seqs;
  std::vector<std::filesystem::path> files;
  for (auto& e : std::filesystem::directory_iterator(dir)) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  std::regex seq_re("^\\{\"seq\":(\\d+),");
  for (auto& f : files) {
    std::ifstream in(f);
    for (std::string line; std::getline(in, line);) {
      std::smatch m;
      EXPECT_TRUE(std::regex_search(line, m, seq_re)) << "a torn or foreign line: " << line;
      if (!m.empty()) seqs.push_back(std::stoull(m[1]));
    }
  }
  return seqs;
}

inline std::vector<uint64_t> marks_of(const std::vector<UploadResult>& results) {
  std::vector<uint64_t> marks;
  for (auto& r : results) {
    EXPECT_EQ(r.error, "");
    marks.push_back(r.mark);
  }
  return marks;
}

inline std::vector<uint64_t> range(uint64_t first, uint64_t last) {
  std::vector<uint64_t> v;
  for (uint64_t s = first; s <= last; ++s) v.push_back(s);
  return v;
}

}  // namespace outpost::net
