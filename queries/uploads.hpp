#pragma once
// Files that upload() asked for, streamed as UploadChunk records of at most
// kChunkBytes each, one chunk per call, in the order asked. A request with
// ranges (a process's memory) is those ranges of its source, one after another. Each chunk
// carries its offset (a collector writes it there, so a chunk sent twice
// lands on itself); the last one says eof with the size and SHA-256 of what
// was read.

#include <kj/io.h>
#include <openssl/evp.h>

#include <vector>
#include <memory>
#include <optional>
#include <string>

#include "queries/plugin.hpp"
#include "schemas/codec.hpp"

namespace outpost::vql {

class FileUploader {
 public:
  static constexpr size_t kChunkBytes = 1 << 20;

  void add(UploadRequest request) { queue_.push_back(std::move(request)); }
  bool idle() const { return queue_.empty() && fd_.get() < 0; }
  // The next chunk, or nothing when no file is waiting.
  std::optional<schemas::Encoded> next_chunk(uint64_t query_id);
  ~FileUploader() noexcept;  // closes its file with close_file

 private:
  schemas::Encoded chunk(uint64_t query_id, const std::string& data, bool eof);
  void end_file();

  std::string read_ranges();

  std::vector<UploadRequest> queue_;  // not a deque: an empty one costs ~600 bytes per query
  UploadRequest current_;
  kj::AutoCloseFd fd_;
  uint64_t offset_ = 0;  // in what is uploaded
  size_t range_ = 0;     // with ranges: the one being read, and how far
  uint64_t range_at_ = 0;
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> sha256_{nullptr, EVP_MD_CTX_free};
};

}  // namespace outpost::vql
