#include <stdlib.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include "tools/bench.hpp"

namespace outpost::bench {

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

WorkDir::~WorkDir() {
  std::error_code ignored;
  if (owned_) std::filesystem::remove_all(path_, ignored);
}

}  // namespace outpost::bench
