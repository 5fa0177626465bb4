#include "net/collector/group_journal.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstring>

#include "net/collector/collector_store.hpp"
#include "persistence/errors.hpp"
#include "persistence/files.hpp"

namespace outpost::net {
namespace {

constexpr uint32_t kMagic = 0x314A504F;  // "OPJ1"
constexpr size_t kHeader = 24;           // magic, 0, body length, checksum

[[noreturn]] void fail(const char* what, const std::filesystem::path& path) {
  int err = disk_full_as_enospc(errno, path.parent_path());
  throw persistence::StoreError(std::string(what) + " " + path.string() + ": " + std::strerror(err), err);
}

template <class T>
void put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof value);
}

template <class T>
bool take(std::string_view& in, T* value) {
  if (in.size() < sizeof *value) return false;
  std::memcpy(value, in.data(), sizeof *value);
  in.remove_prefix(sizeof *value);
  return true;
}

bool read_exactly(int fd, char* out, size_t n, uint64_t at) {
  for (size_t done = 0; done < n;) {
    ssize_t got = ::pread(fd, out + done, n - done, static_cast<off_t>(at + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    done += static_cast<size_t>(got);
  }
  return true;
}

}  // namespace

GroupJournal::GroupJournal(std::filesystem::path path) : path_(std::move(path)) {
  bool made = !std::filesystem::exists(path_);
  fd_ = kj::AutoCloseFd(::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640));
  if (fd_.get() < 0) fail("cannot open the journal", path_);
  if (made) persistence::fsync_path(path_.parent_path());  // a journal that vanished would lose its groups
}

void GroupJournal::add(Kind kind, std::string_view path, uint64_t offset, std::string_view data) {
  if (group_.empty()) group_.assign(kHeader, '\0');  // filled in by write_group()
  put(group_, static_cast<uint8_t>(kind));
  put(group_, static_cast<uint32_t>(path.size()));
  group_.append(path);
  put(group_, offset);
  put(group_, static_cast<uint64_t>(data.size()));
  group_.append(data);
}

void GroupJournal::write_group() {
  if (group_.size() <= kHeader) {
    group_.clear();
    return;
  }
  uint64_t length = group_.size() - kHeader, sum = XXH3_64bits(group_.data() + kHeader, length);
  std::memcpy(group_.data(), &kMagic, 4);
  std::memset(group_.data() + 4, 0, 4);
  std::memcpy(group_.data() + 8, &length, 8);
  std::memcpy(group_.data() + 16, &sum, 8);
  for (size_t done = 0; done < group_.size();) {
    ssize_t n = ::pwrite(fd_.get(), group_.data() + done, group_.size() - done, static_cast<off_t>(end_ + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("cannot write the journal", path_);
    done += static_cast<size_t>(n);
  }
  if (::fdatasync(fd_.get()) != 0) fail("cannot fdatasync the journal", path_);
  end_ += group_.size();
  group_.clear();
}

uint64_t GroupJournal::replay(uint64_t end, const std::function<void(const Item&)>& apply) {
  uint64_t at = 0;
  std::string body;
  while (at < end) {
    char header[kHeader];
    uint32_t magic = 0;
    uint64_t length = 0, sum = 0;
    if (end - at < kHeader || !read_exactly(fd_.get(), header, kHeader, at)) break;
    std::memcpy(&magic, header, 4);
    std::memcpy(&length, header + 8, 8);
    std::memcpy(&sum, header + 16, 8);
    if (magic != kMagic || length > end - at - kHeader) break;
    body.resize(length);
    if (!read_exactly(fd_.get(), body.data(), length, at + kHeader)) break;
    if (XXH3_64bits(body.data(), body.size()) != sum) break;
    std::string_view in(body);
    while (!in.empty()) {
      uint8_t kind;
      uint32_t path_length;
      Item item{};
      uint64_t data_length;
      if (!take(in, &kind) || kind > 1 || !take(in, &path_length) || in.size() < path_length) break;
      item.kind = static_cast<Kind>(kind);
      item.path = in.substr(0, path_length);
      in.remove_prefix(path_length);
      if (!take(in, &item.offset) || !take(in, &data_length) || in.size() < data_length) break;
      item.data = in.substr(0, data_length);
      in.remove_prefix(data_length);
      apply(item);
    }
    at += kHeader + length;
  }
  end_ = at;
  return at;
}

void GroupJournal::reset() {
  end_ = 0;
  group_.clear();
  if (::ftruncate(fd_.get(), 0) != 0) fail("cannot cut the journal", path_);
}

}  // namespace outpost::net
