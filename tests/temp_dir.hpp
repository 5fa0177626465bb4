#pragma once
#include <stdlib.h>

#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>

namespace outpost::testing {

// A fresh directory under the system temp dir, removed with its siblings
// (set-aside buffers are created next to the buffer) when the test ends.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "outpost-test-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    root_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
  const std::filesystem::path& root() const { return root_; }
  std::filesystem::path path(const std::string& name) const { return root_ / name; }

 private:
  std::filesystem::path root_;
};

// $TMPDIR set to `dir` for a scope (where tempfile(), tempdir() and
// sqlite()'s private copies go, and where a TempDir made meanwhile would).
class TmpdirSet {
 public:
  explicit TmpdirSet(const std::filesystem::path& dir) {
    if (const char* old = std::getenv("TMPDIR")) old_ = old;
    ::setenv("TMPDIR", dir.c_str(), 1);
  }
  ~TmpdirSet() {
    if (old_)
      ::setenv("TMPDIR", old_->c_str(), 1);
    else
      ::unsetenv("TMPDIR");
  }
  TmpdirSet(const TmpdirSet&) = delete;
  TmpdirSet& operator=(const TmpdirSet&) = delete;

 private:
  std::optional<std::string> old_;
};

}  // namespace outpost::testing
