// outpost-faulty-fs MOUNTPOINT: a FUSE filesystem, held in memory, whose every
// close(2) fails with EIO (its flush does), as a network or hostile
// filesystem's close may. It starts with /lines.txt ("one\ntwo\nthree\n");
// files and directories can be created, written and removed. Runs in the
// foreground, single-threaded, until SIGTERM (it then unmounts), which it also
// gets when the process that started it ends, a test that crashed included.
// Tests mount it with tests/faulty_fs.hpp.

#define FUSE_USE_VERSION 31
#include <fuse.h>

#include <sys/prctl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>

namespace {

std::map<std::string, std::string> files = {{"/lines.txt", "one\ntwo\nthree\n"}};
std::set<std::string> directories = {"/"};

// The names directly in `dir` ("/" or "/a").
std::set<std::string> entries(const std::string& dir) {
  std::string prefix = dir == "/" ? dir : dir + "/";
  std::set<std::string> names;
  auto add = [&](const std::string& path) {
    if (path.size() > prefix.size() && path.compare(0, prefix.size(), prefix) == 0 &&
        path.find('/', prefix.size()) == std::string::npos)
      names.insert(path.substr(prefix.size()));
  };
  for (auto& [path, data] : files) add(path);
  for (auto& path : directories) add(path);
  return names;
}

std::string* file(const char* path) {
  auto it = files.find(path);
  return it == files.end() ? nullptr : &it->second;
}

int get_attributes(const char* path, struct stat* st, fuse_file_info*) {
  std::memset(st, 0, sizeof *st);
  if (directories.count(path)) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    return 0;
  }
  std::string* f = file(path);
  if (!f) return -ENOENT;
  st->st_mode = S_IFREG | 0644;
  st->st_nlink = 1;
  st->st_size = static_cast<off_t>(f->size());
  return 0;
}

int read_directory(const char* path, void* buf, fuse_fill_dir_t fill, off_t, fuse_file_info*, fuse_readdir_flags) {
  if (!directories.count(path)) return -ENOTDIR;
  fill(buf, ".", nullptr, 0, fuse_fill_dir_flags{});
  fill(buf, "..", nullptr, 0, fuse_fill_dir_flags{});
  for (auto& name : entries(path)) fill(buf, name.c_str(), nullptr, 0, fuse_fill_dir_flags{});
  return 0;
}

int open_file(const char* path, fuse_file_info*) { return file(path) ? 0 : -ENOENT; }

int create_file(const char* path, mode_t, fuse_file_info*) {
  files[path];
  return 0;
}

int read_file(const char* path, char* buf, size_t size, off_t offset, fuse_file_info*) {
  std::string* f = file(path);
  if (!f) return -ENOENT;
  if (offset < 0 || static_cast<size_t>(offset) >= f->size()) return 0;
  size_t n = std::min(size, f->size() - static_cast<size_t>(offset));
  std::memcpy(buf, f->data() + offset, n);
  return static_cast<int>(n);
}

int write_file(const char* path, const char* buf, size_t size, off_t offset, fuse_file_info*) {
  std::string* f = file(path);
  if (!f) return -ENOENT;
  if (f->size() < static_cast<size_t>(offset) + size) f->resize(static_cast<size_t>(offset) + size);
  std::memcpy(f->data() + offset, buf, size);
  return static_cast<int>(size);
}

int truncate_file(const char* path, off_t size, fuse_file_info*) {
  std::string* f = file(path);
  if (!f) return -ENOENT;
  f->resize(static_cast<size_t>(size));
  return 0;
}

int change_mode(const char* path, mode_t, fuse_file_info*) { return file(path) ? 0 : -ENOENT; }
int change_times(const char* path, const timespec*, fuse_file_info*) { return file(path) ? 0 : -ENOENT; }

int remove_file(const char* path) { return files.erase(path) ? 0 : -ENOENT; }

int make_directory(const char* path, mode_t) { return directories.insert(path).second ? 0 : -EEXIST; }

int remove_directory(const char* path) {
  if (!directories.count(path)) return -ENOENT;
  if (!entries(path).empty()) return -ENOTEMPTY;
  directories.erase(path);
  return 0;
}

// Called at each close(2) of a descriptor; close() returns its error.
int flush_file(const char*, fuse_file_info*) { return -EIO; }

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MOUNTPOINT\n", argv[0]);
    return 2;
  }
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  fuse_operations ops{};
  ops.getattr = get_attributes;
  ops.readdir = read_directory;
  ops.open = open_file;
  ops.create = create_file;
  ops.read = read_file;
  ops.write = write_file;
  ops.truncate = truncate_file;
  ops.chmod = change_mode;
  ops.utimens = change_times;
  ops.unlink = remove_file;
  ops.mkdir = make_directory;
  ops.rmdir = remove_directory;
  ops.flush = flush_file;
  char foreground[] = "-f", single_threaded[] = "-s";
  char* args[] = {argv[0], foreground, single_threaded, argv[1], nullptr};
  return fuse_main(4, args, &ops, nullptr);
}
