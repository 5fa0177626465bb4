#include "queries/uploads.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstring>

namespace outpost::vql {

FileUploader::~FileUploader() { close_file(); }

void FileUploader::close_file() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  sha256_.reset();
}

std::optional<schemas::Encoded> FileUploader::next_chunk(uint64_t query_id) {
  if (fd_ < 0) {
    if (queue_.empty()) return std::nullopt;
    path_ = std::move(queue_.front());
    queue_.erase(queue_.begin());
    offset_ = 0;
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    sha256_.reset(EVP_MD_CTX_new());
    if (!sha256_ || EVP_DigestInit_ex(sha256_.get(), EVP_sha256(), nullptr) != 1)
      throw std::runtime_error("upload(): cannot start SHA-256");
    if (fd_ < 0) {  // gone since upload() looked: an empty, final chunk says so
      spdlog::warn("upload(): cannot open {}: {}", path_, std::strerror(errno));
      return chunk(query_id, {}, true);
    }
  }
  std::string data(kChunkBytes, '\0');
  ssize_t n;
  do n = ::pread(fd_, data.data(), data.size(), static_cast<off_t>(offset_));
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    spdlog::warn("upload(): cannot read {} at {}: {}", path_, offset_, std::strerror(errno));
    n = 0;
  }
  data.resize(static_cast<size_t>(n));
  EVP_DigestUpdate(sha256_.get(), data.data(), data.size());
  return chunk(query_id, data, data.size() < kChunkBytes);
}

schemas::Encoded FileUploader::chunk(uint64_t query_id, const std::string& data, bool eof) {
  schemas::RecordWriter writer(query_id, schemas::now_ns(), static_cast<unsigned>(data.size() / 8 + 64));
  auto c = writer.record().initUploadChunk();
  c.setPath(path_);
  c.setOffset(offset_);
  c.setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(data.data()), data.size()));
  offset_ += data.size();
  c.setEof(eof);
  if (eof) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_DigestFinal_ex(sha256_.get(), digest, &length);
    c.setTotalSize(offset_);
    c.setSha256(kj::arrayPtr(digest, length));
    close_file();
  }
  return writer.finish();
}

}  // namespace outpost::vql
