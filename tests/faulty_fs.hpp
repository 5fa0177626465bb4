#pragma once
// outpost-faulty-fs (tests/faulty_fs.cpp: every close(2) on it fails with
// EIO) mounted for a test; OUTPOST_FAULTY_FS is its path.

#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>

#include "tests/temp_dir.hpp"

extern char** environ;

namespace outpost::testing {

// outpost-faulty-fs mounted on a fresh directory, unmounted at the end.
// skip_reason() says why it could not be (no root, no /dev/fuse).
class FaultyFs {
 public:
  FaultyFs() {
    if (::geteuid() != 0) {
      skip_ = "mounting a FUSE filesystem needs root";
      return;
    }
    if (::access("/dev/fuse", R_OK | W_OK) != 0) {
      skip_ = std::string("no /dev/fuse: ") + std::strerror(errno);
      return;
    }
    std::string mount = dir_.path("mnt").string();
    std::filesystem::create_directory(mount);
    struct stat parent;
    ::stat(dir_.root().c_str(), &parent);
    const char* argv[] = {OUTPOST_FAULTY_FS, mount.c_str(), nullptr};
    if (int rc = ::posix_spawn(&pid_, OUTPOST_FAULTY_FS, nullptr, nullptr, const_cast<char**>(argv), environ); rc != 0)
      throw std::runtime_error(std::string("cannot start " OUTPOST_FAULTY_FS ": ") + std::strerror(rc));
    // Mounted once the directory is on another device than its parent.
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < end) {
      struct stat st;
      if (::stat(mount.c_str(), &st) == 0 && st.st_dev != parent.st_dev) {
        mount_ = mount;
        return;
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = 0;
        skip_ = "outpost-faulty-fs could not mount (exit status " + std::to_string(status) + "; its stderr is above)";
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    throw std::runtime_error("outpost-faulty-fs did not mount " + mount + " within 10 s");
  }
  ~FaultyFs() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);  // it unmounts and exits
      ::waitpid(pid_, nullptr, 0);
    }
    if (!mount_.empty()) ::umount2(mount_.c_str(), MNT_DETACH);  // if it could not
  }
  const std::string& skip_reason() const { return skip_; }
  const std::string& dir() const { return mount_; }
  std::string path(const std::string& name) const { return mount_ + "/" + name; }

 private:
  TempDir dir_;
  pid_t pid_ = 0;
  std::string mount_, skip_;
};

}  // namespace outpost::testing
