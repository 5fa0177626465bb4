#include <stdlib.h>

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

WorkDir::~WorkDir() {
  std::error_code ignored;
  if (owned_) std::filesystem::remove_all(path_, ignored);
}

}  // namespace outpost::bench
