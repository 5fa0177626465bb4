#pragma once
// Files that upload() asked for, streamed as UploadChunk records of at most
// kChunkBytes each, one chunk per call, in the order asked. Each chunk
// carries its offset (a collector writes it there, so a chunk sent twice
// lands on itself); the last one says eof with the size and SHA-256 of what
// was read.

#include <openssl/evp.h>

#include <vector>
#include <memory>
#include <optional>
#include <string>

#include "schemas/codec.hpp"

namespace outpost::vql {

class FileUploader {
 public:
  static constexpr size_t kChunkBytes = 1 << 20;

  void add(std::string path) { queue_.push_back(std::move(path)); }
  bool idle() const { return queue_.empty() && fd_ < 0; }
  // The next chunk, or nothing when no file is waiting.
  std::optional<schemas::Encoded> next_chunk(uint64_t query_id);
  ~FileUploader();

 private:
  schemas::Encoded chunk(uint64_t query_id, const std::string& data, bool eof);
  void close_file();

  std::vector<std::string> queue_;  // not a deque: an empty one costs ~600 bytes per query
  std::string path_;
  int fd_ = -1;
  uint64_t offset_ = 0;
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> sha256_{nullptr, EVP_MD_CTX_free};
};

}  // namespace outpost::vql
