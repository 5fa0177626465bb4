#include "queries/uploads.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "queries/linux_util.hpp"

namespace outpost::vql {

FileUploader::~FileUploader() noexcept { end_file(); }

void FileUploader::end_file() {
  close_file(fd_);  // a file the query named; read to its end or failed
  sha256_.reset();
}

std::optional<schemas::Encoded> FileUploader::next_chunk(uint64_t query_id) {
  if (fd_ == nullptr) {
    if (queue_.empty()) return std::nullopt;
    current_ = std::move(queue_.front());
    queue_.erase(queue_.begin());
    offset_ = 0;
    range_ = 0;
    range_at_ = 0;
    fd_ = kj::AutoCloseFd(::open(current_.source.c_str(), O_RDONLY | O_CLOEXEC));
    int open_error = errno;  // before OpenSSL's calls
    sha256_.reset(EVP_MD_CTX_new());
    if (!sha256_ || EVP_DigestInit_ex(sha256_.get(), EVP_sha256(), nullptr) != 1)
      throw std::runtime_error("upload(): cannot start SHA-256");
    if (fd_ == nullptr) {  // gone since upload() looked: an empty, final chunk says so
      spdlog::warn("upload(): cannot open {}: {}", current_.source, std::strerror(open_error));
      return chunk(query_id, {}, true);
    }
  }
  if (!current_.ranges.empty()) {
    std::string data = read_ranges();
    EVP_DigestUpdate(sha256_.get(), data.data(), data.size());
    return chunk(query_id, data, range_ == current_.ranges.size());
  }
  std::string data(kChunkBytes, '\0');
  ssize_t n;
  do n = ::pread(fd_.get(), data.data(), data.size(), static_cast<off_t>(offset_));
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    spdlog::warn("upload(): cannot read {} at {}: {}", current_.source, offset_, std::strerror(errno));
    n = 0;
  }
  data.resize(static_cast<size_t>(n));
  EVP_DigestUpdate(sha256_.get(), data.data(), data.size());
  return chunk(query_id, data, data.size() < kChunkBytes);
}

// Up to kChunkBytes of the ranges, from where the last chunk ended. What
// cannot be read (a mapping gone since upload() listed it) is zeros, so that
// every range keeps the place upload() said it has.
std::string FileUploader::read_ranges() {
  std::string data;
  while (data.size() < kChunkBytes && range_ < current_.ranges.size()) {
    const MemoryRange& r = current_.ranges[range_];
    size_t want = static_cast<size_t>(std::min<uint64_t>(r.length - range_at_, kChunkBytes - data.size()));
    size_t at = data.size();
    data.resize(at + want, '\0');
    size_t got = 0;
    while (got < want) {
      ssize_t n = ::pread(fd_.get(), data.data() + at + got, want - got, static_cast<off_t>(r.start + range_at_ + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    if (got < want)
      spdlog::warn("upload(): cannot read {} at {:#x}: zeros instead", current_.source, r.start + range_at_ + got);
    range_at_ += want;
    if (range_at_ == r.length) {
      ++range_;
      range_at_ = 0;
    }
  }
  return data;
}

schemas::Encoded FileUploader::chunk(uint64_t query_id, const std::string& data, bool eof) {
  schemas::RecordWriter writer(query_id, schemas::now_ns(), static_cast<unsigned>(data.size() / 8 + 64));
  auto c = writer.record().initUploadChunk();
  c.setPath(current_.path);
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
    end_file();
  }
  return writer.finish();
}

}  // namespace outpost::vql
