#pragma once
// Shared pieces of the store tests: recognisable batches, whole-lane reads,
// and raw access to the files a test damages on purpose.

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "persistence/buffer_store.hpp"
#include "persistence/record_format.hpp"

namespace outpost::persistence::testing {

// Payloads that tests can recognise again: `tag` repeated to `size` bytes.
struct Batch {
  std::vector<std::string> payloads;
  std::vector<RecordIn> records;
  Batch(size_t n, size_t size, uint64_t query_id, const std::string& tag = "row", int64_t t = 1) {
    for (size_t i = 0; i < n; ++i) {
      std::string p;
      while (p.size() < size) p += tag + std::to_string(i) + ";";
      p.resize(size);
      payloads.push_back(std::move(p));
    }
    for (auto& p : payloads)
      records.push_back({query_id, t, kj::ArrayPtr<const kj::byte>(
                                          reinterpret_cast<const kj::byte*>(p.data()), p.size())});
  }
  kj::ArrayPtr<const RecordIn> ptr() const { return {records.data(), records.size()}; }
  uint64_t bytes() const {
    uint64_t sum = 0;
    for (auto& p : payloads) sum += record_format::accounted_bytes(p.size());
    return sum;
  }
};

inline std::vector<BufferedRecord> read_all(BufferStore& store, Lane lane, uint64_t* quarantined = nullptr) {
  std::vector<BufferedRecord> all;
  uint64_t after = 0;
  for (;;) {
    auto got = store.read(lane, after, 100, 1 << 20);
    if (quarantined) *quarantined += got.quarantined;
    if (got.records.empty()) return all;
    after = got.records.back().seq;
    for (auto& r : got.records) all.push_back(kj::mv(r));
  }
}

inline StoreOptions options_for(const std::filesystem::path& dir) {
  StoreOptions o;
  o.dir = dir;
  return o;
}

inline std::string slurp(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

inline void spit(const std::filesystem::path& file, const std::string& data) {
  std::ofstream(file, std::ios::binary | std::ios::trunc).write(data.data(), data.size());
}

}  // namespace outpost::persistence::testing
