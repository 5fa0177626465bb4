#include <fcntl.h>
#include <fmt/format.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "tools/bench.hpp"

extern char** environ;

namespace outpost::bench {

namespace fs = std::filesystem;

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string log_tail(const fs::path& path, size_t n) {
  std::string text = read_text(path);
  while (!text.empty() && text.back() == '\n') text.pop_back();
  size_t from = text.size();
  for (size_t lines = 0; lines < n && from > 0; ++lines) {
    size_t nl = text.rfind('\n', from - 1);
    from = nl == std::string::npos ? 0 : nl;
  }
  text = text.substr(from);
  if (!text.empty() && text.front() == '\n') text.erase(0, 1);
  return text.empty() ? "(empty)" : text;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exit code {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return fmt::format("status {}", status);
}

pid_t spawn_process(const std::vector<std::string>& args, const fs::path& cwd, const fs::path& out, bool with_stderr) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (with_stderr)
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  else
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addchdir_np(&actions, cwd.c_str());
  pid_t pid = 0;
  int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0)
    throw std::runtime_error(fmt::format("cannot start {} in {}: {}", args[0], cwd.string(), strerror(rc)));
  return pid;
}

int run_to_end(const std::vector<std::string>& args, const fs::path& cwd, const fs::path& out) {
  pid_t pid = spawn_process(args, cwd, out, false);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

WorkDir::WorkDir(const std::filesystem::path& given) : path_(given) {
  if (!path_.empty()) return;
  std::string tmpl = (std::filesystem::temp_directory_path() / "outpost-bench-XXXXXX").string();
  if (!mkdtemp(tmpl.data()))
    throw std::runtime_error("cannot create a temp dir for the benchmark in " +
                                  std::filesystem::temp_directory_path().string());
  path_ = tmpl;
  owned_ = true;
}

uint64_t status_field(const std::string& status, const std::string& key) {
  size_t at = ("\n" + status).find("\n" + key + ":");
  if (at == std::string::npos) return 0;
  return std::strtoull(status.c_str() + at + key.size() + 1, nullptr, 10);
}

long proc_status_bytes(const std::string& key, const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/status");
  std::stringstream text;
  text << in.rdbuf();
  std::string status = text.str();
  if (("\n" + status).find("\n" + key + ":") == std::string::npos)
    throw std::runtime_error("no " + key + " in /proc/" + pid + "/status");
  return static_cast<long>(status_field(status, key)) * 1024;
}

std::map<pid_t, ThreadStat> thread_stats(const std::string& pid) {
  std::map<pid_t, ThreadStat> threads;
  std::error_code ec;
  for (auto& task : fs::directory_iterator(fs::path("/proc") / pid / "task", ec)) {
    std::string status = read_text(task.path() / "status");
    std::string schedstat = read_text(task.path() / "schedstat");
    if (status.empty() || schedstat.empty()) continue;  // ended meanwhile
    ThreadStat t;
    t.name = read_text(task.path() / "comm");
    while (!t.name.empty() && t.name.back() == '\n') t.name.pop_back();
    t.run_ns = std::strtoull(schedstat.c_str(), nullptr, 10);
    t.switches = status_field(status, "voluntary_ctxt_switches") + status_field(status, "nonvoluntary_ctxt_switches");
    threads[static_cast<pid_t>(std::stol(task.path().filename().string()))] = std::move(t);
  }
  return threads;
}

WorkDir::~WorkDir() {
  std::error_code ignored;
  if (owned_) std::filesystem::remove_all(path_, ignored);
}

}  // namespace outpost::bench
