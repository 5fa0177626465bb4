// Files whose close(2) fails, on a real FUSE filesystem (outpost-faulty-fs,
// every flush EIO): a query that reads one gets its data and the agent goes
// on (kj::AutoCloseFd's destructor would throw the error, and from a stream's
// destructor end the process); a copy() written to one is a failed copy.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "queries/engine.hpp"
#include "queries/linux_util.hpp"
#include "tests/log_capture.hpp"
#include "tests/temp_dir.hpp"
#include "tests/vql_test_util.hpp"

extern char** environ;

namespace outpost::vql {
namespace {

using namespace std::chrono_literals;

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
      skip_ = "no /dev/fuse: " + errno_message(errno);
      return;
    }
    std::string mount = dir_.path("mnt").string();
    std::filesystem::create_directory(mount);
    struct stat parent;
    ::stat(dir_.root().c_str(), &parent);
    const char* argv[] = {OUTPOST_FAULTY_FS, mount.c_str(), nullptr};
    if (int rc = ::posix_spawn(&pid_, OUTPOST_FAULTY_FS, nullptr, nullptr, const_cast<char**>(argv), environ); rc != 0)
      throw std::runtime_error(std::string("cannot start " OUTPOST_FAULTY_FS ": ") + errno_message(rc));
    // Mounted once the directory is on another device than its parent.
    for (auto end = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < end;) {
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
      std::this_thread::sleep_for(10ms);
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
  std::string path(const std::string& name) const { return mount_ + "/" + name; }

 private:
  testing::TempDir dir_;
  pid_t pid_ = 0;
  std::string mount_, skip_;
};

// Run with vql.allow_execve, which copy() needs; the streams, and their files, are closed by the end.
std::vector<std::string> run(const std::string& vql) { return json_lines(run_rows_allowed(default_registry(), vql)); }

TEST(CloseErrors, AFileWhoseCloseFailsIsReadWholeAndTheQueryGoesOn) {
  FaultyFs fs;
  if (!fs.skip_reason().empty()) GTEST_SKIP() << fs.skip_reason();
  std::string file = fs.path("lines.txt");
  {  // the fault is real
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << errno_message(errno);
    errno = 0;
    EXPECT_EQ(::close(fd), -1);
    EXPECT_EQ(errno, EIO);
  }
  EXPECT_EQ(run("SELECT Line FROM parse_lines(filename='" + file + "')"),
            (std::vector<std::string>{R"({"Line":"one"})", R"({"Line":"two"})", R"({"Line":"three"})"}));
  // Ended before the file's end: the stream closes it as it goes.
  EXPECT_EQ(run("SELECT Line FROM parse_lines(filename='" + file + "') LIMIT 1"),
            (std::vector<std::string>{R"({"Line":"one"})"}));
  EXPECT_EQ(run("SELECT Data, Error FROM read_file(filenames='" + file + "')"),
            (std::vector<std::string>{R"({"Data":"one\u000atwo\u000athree\u000a","Error":""})"}));
  EXPECT_EQ(run("SELECT read_file(filename='" + file + "') AS Data FROM scope()"),
            (std::vector<std::string>{R"({"Data":"one\u000atwo\u000athree\u000a"})"}));
  EXPECT_EQ(run("SELECT hash(path='" + file + "').SHA256 AS SHA256 FROM scope()"),
            (std::vector<std::string>{R"({"SHA256":"b6285c57e8797db5d4c51c80d6f11938afda9b11c6a003549709189e9b4b92a2"})"}));
}

TEST(CloseErrors, ACopyWhoseCloseFailsIsAFailedCopy) {
  FaultyFs fs;
  if (!fs.skip_reason().empty()) GTEST_SKIP() << fs.skip_reason();
  std::string dest = fs.path("copy.txt");
  testing::LogCapture log;
  EXPECT_EQ(run("SELECT copy(filename='abc', accessor='data', dest='" + dest + "') AS X FROM scope()"),
            (std::vector<std::string>{R"({"X":null})"}));
  EXPECT_NE(log.text().find("copy(): dest: writing " + dest + ": Input/output error"), std::string::npos)
      << log.text();
}

}  // namespace
}  // namespace outpost::vql
