#pragma once
// Real processes for tests: start one with its output in a file, wait for
// it to exit (with a deadline, so that a hang fails instead of hanging).

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/actor_test_util.hpp"

namespace outpost::testing {

inline std::string slurp(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs argv[0] with stdout appended to `out` and stderr to `err` (when
// given; they may be the same file), as user `uid` when it is not -1.
inline pid_t spawn_to(const std::vector<std::string>& args, const std::filesystem::path& out,
                      const std::filesystem::path& err, int uid = -1) {
  pid_t pid = fork();
  if (pid == 0) {
    if (!out.empty()) dup2(::open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644), 1);
    if (!err.empty()) dup2(err == out ? 1 : ::open(err.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644), 2);
    if (uid >= 0 && (setgid(uid) != 0 || setuid(uid) != 0)) _exit(126);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// Runs argv[0] with stdout and stderr appended to `output` (when given).
inline pid_t spawn(const std::vector<std::string>& args, const std::filesystem::path& output = {}) {
  return spawn_to(args, output, output);
}

// The exit code (128 + signal when killed), or -1 if it is still running
// after `limit`.
inline int wait_exit(pid_t pid, std::chrono::seconds limit = std::chrono::seconds(60)) {
  int status = 0;
  bool exited = eventually([&] { return waitpid(pid, &status, WNOHANG) == pid; }, limit);
  if (!exited) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Kills what a test started, so that a failed test leaves nothing behind.
struct Processes {
  std::vector<pid_t> pids;
  pid_t add(pid_t pid) {
    pids.push_back(pid);
    return pid;
  }
  ~Processes() {
    for (pid_t pid : pids)
      if (kill(pid, SIGKILL) == 0) waitpid(pid, nullptr, 0);
  }
};

}  // namespace outpost::testing
