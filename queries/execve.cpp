// execve(): runs a program (no shell) and gives its output as rows, the
// way Velociraptor's does. Only when the agent's configuration allows it.

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "queries/engine.hpp"
#include "queries/linux_util.hpp"

extern char** environ;

namespace outpost::vql {
namespace {

using Clock = std::chrono::steady_clock;

kj::AutoCloseFd nonblocking(int fd) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  return kj::AutoCloseFd(fd);
}

// The child, in a process group of its own: killed with all it started when
// the query ends first (cancelled, timed out), and reaped in every case.
class Child {
 public:
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid_ <= 0) return;
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);  // SIGKILL cannot be ignored: this ends at once
  }

  // Starts argv[0] (looked up in PATH when it has no '/'); an error message
  // when it could not be started.
  std::string start(const std::vector<std::string>& argv, const std::vector<std::string>* env, const std::string& cwd) {
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0) return std::strerror(errno);
    stdout_ = nonblocking(out[0]);
    kj::AutoCloseFd out_write(out[1]);
    if (::pipe2(err, O_CLOEXEC) != 0) return std::strerror(errno);
    stderr_ = nonblocking(err[0]);
    kj::AutoCloseFd err_write(err[1]);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, err[1], 2);
    posix_spawn_file_actions_addclosefrom_np(&actions, 3);  // nothing of the agent's leaks into it
    if (!cwd.empty()) posix_spawn_file_actions_addchdir_np(&actions, cwd.c_str());
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    posix_spawnattr_setpgroup(&attributes, 0);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attributes, &none);  // the agent blocks some; the program should not inherit that
    posix_spawnattr_setsigdefault(&attributes, &all);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

    auto pointers = [](const std::vector<std::string>& v) {
      std::vector<char*> p;
      for (auto& s : v) p.push_back(const_cast<char*>(s.c_str()));
      p.push_back(nullptr);
      return p;
    };
    auto args = pointers(argv);
    std::vector<char*> envp = env ? pointers(*env) : std::vector<char*>{};
    int error = ::posix_spawnp(&pid_, argv[0].c_str(), &actions, &attributes, args.data(), env ? envp.data() : environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    if (error != 0) {
      pid_ = 0;
      return argv[0] + ": " + std::strerror(error);
    }
    return "";
  }

  // Appends what is there to read; false once both pipes are at their end.
  bool read(std::string& out, std::string& err, size_t max) {
    bool open = false;
    for (auto [fd, to] : {std::pair{&stdout_, &out}, std::pair{&stderr_, &err}}) {
      if (*fd == nullptr) continue;
      char buffer[65536];
      ssize_t n = ::read(fd->get(), buffer, std::min(sizeof buffer, max));
      if (n > 0) to->append(buffer, static_cast<size_t>(n));
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
        *fd = nullptr;
      else
        open = true;
    }
    return open;
  }

  // The exit status once it has ended (a signal as 128 + its number), else
  // nullopt; reaps it.
  std::optional<int> exited() {
    int status = 0;
    if (pid_ <= 0 || ::waitpid(pid_, &status, WNOHANG) != pid_) return std::nullopt;
    pid_ = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  void kill() {
    if (pid_ > 0) ::kill(-pid_, SIGKILL);
  }

 private:
  pid_t pid_ = 0;
  kj::AutoCloseFd stdout_, stderr_;
};

Row row(std::string out, std::string err, int64_t code, bool complete) {
  Row r;
  r.set("Stdout", std::move(out));
  r.set("Stderr", std::move(err));
  r.set("ReturnCode", code);
  r.set("Complete", complete);
  return r;
}

class ExecveStream : public RowStream {
 public:
  ExecveStream(std::string sep, size_t length, std::chrono::seconds timeout)
      : sep_(std::move(sep)), length_(length), deadline_(Clock::now() + timeout), timeout_(timeout) {}

  Child& child() { return child_; }
  void failed_to_start(std::string error) { start_error_ = std::move(error); }

  Step next(std::vector<Row>& out, size_t budget) override {
    if (ended_) return Step::done();
    if (!start_error_.empty()) {
      ended_ = true;
      out.push_back(row("", start_error_, 1, true));
      return Step::done();
    }
    if (Clock::now() >= deadline_ && !timed_out_) {  // also a program that never stops writing
      timed_out_ = true;
      child_.kill();
      stderr_ += "execve(): killed after its timeout of " + std::to_string(timeout_.count()) + " s";
    }
    size_t held = stdout_.size() + stderr_.size();
    bool open = child_.read(stdout_, stderr_, length_ + 1);
    if (stdout_.size() + stderr_.size() > held) idle_ = std::chrono::milliseconds(1);  // output: look again soon
    size_t before = out.size();
    emit(out, budget, false);
    if (out.size() > before) return Step::more();
    auto code = open ? std::nullopt : child_.exited();
    if (!code) {
      idle_ = std::min(idle_ * 2, std::chrono::milliseconds(100));
      return Step::after(idle_);
    }
    emit(out, budget, true);
    if (!sep_.empty()) out.push_back(row("", "", *code, true));
    else out.push_back(row(std::move(stdout_), std::move(stderr_), *code, true));
    ended_ = true;
    return Step::done();
  }

 private:
  // With sep: each complete piece of stdout or stderr (all, at the end) in
  // Stdout. Without: a row each time the output held passes `length`.
  void emit(std::vector<Row>& out, size_t budget, bool end) {
    if (sep_.empty()) {
      while (!end && out.size() < budget && (stdout_.size() > length_ || stderr_.size() > length_)) {
        size_t o = std::min(stdout_.size(), length_), e = std::min(stderr_.size(), length_);
        out.push_back(row(stdout_.substr(0, o), stderr_.substr(0, e), 0, false));
        stdout_.erase(0, o);
        stderr_.erase(0, e);
      }
      return;
    }
    for (std::string* text : {&stdout_, &stderr_}) {
      for (size_t at; out.size() < budget && (at = text->find(sep_)) != std::string::npos;) {
        if (at > 0) out.push_back(row(text->substr(0, at), "", 0, false));
        text->erase(0, at + sep_.size());
      }
      if (end && !text->empty()) out.push_back(row(std::exchange(*text, ""), "", 0, false));
      if (!end && text->size() > length_) {  // a piece longer than length: cut
        out.push_back(row(text->substr(0, length_), "", 0, false));
        text->erase(0, length_);
      }
    }
  }

  std::string sep_;
  size_t length_;
  Clock::time_point deadline_;
  std::chrono::seconds timeout_;
  Child child_;
  std::string start_error_;
  std::string stdout_, stderr_;
  std::chrono::milliseconds idle_{1};
  bool timed_out_ = false;
  bool ended_ = false;
};

std::unique_ptr<RowStream> make_execve(const Args& args, Env& env) {
  if (!env.permissions.execve)
    throw QueryError("execve(): refused: this agent's configuration does not let queries run programs "
                     "(vql.allow_execve: true allows it)");
  auto argv = args.strings("argv");
  if (argv.empty() || argv[0].empty()) args.fail("argv", "expected the program and its arguments, got none");
  int64_t length = args.integer("length").value_or(10240);
  if (length <= 0 || length > (int64_t{64} << 20)) args.fail("length", "expected 1 to 64 MiB");
  int64_t timeout = args.integer("timeout").value_or(600);
  if (timeout <= 0) args.fail("timeout", "expected seconds > 0");
  auto stream = std::make_unique<ExecveStream>(args.string("sep").value_or(""), static_cast<size_t>(length),
                                               std::chrono::seconds(timeout));
  std::vector<std::string> environment;
  const Value* given = args.find("env");
  if (given && !given->as_dict()) args.fail("env", "expected a dict, got " + std::string(type_name(*given)));
  if (given)
    for (auto& [name, value] : given->as_dict()->items()) environment.push_back(name + "=" + to_string(value));
  std::string error = stream->child().start(argv, given ? &environment : nullptr, args.string("cwd").value_or(""));
  if (!error.empty()) stream->failed_to_start("execve(): " + error);
  return stream;
}

}  // namespace

void add_execve_plugin(Registry& r) {
  r.add(PluginSpec{"execve",
                   "Runs a program, no shell: rows of Stdout, Stderr, ReturnCode, Complete (the last row). Only "
                   "when the configuration allows it (vql.allow_execve).",
                   {{"argv", "list of strings", true, "the program (looked up in PATH) and its arguments"},
                    {"sep", "string", false, "a row per piece of output between these"},
                    {"length", "int", false, "bytes of output per row, at most (default 10240)"},
                    {"env", "dict", false, "the whole environment (default: the agent's)"},
                    {"cwd", "string", false, "its working directory"},
                    {"timeout", "int", false, "seconds before it is killed (default 600)"}},
                   false, make_execve});
}

}  // namespace outpost::vql
