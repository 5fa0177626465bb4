#pragma once
// Files whose content a request carries: `--param-file name=FILE` of
// outpost-agent and outpost-collector (an upload or upload_file
// parameter's value), and the collector's `--artifact-file`.

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace outpost::tools {

inline constexpr size_t kMaxParameterFileBytes = 16 << 20;

// A file sent with a request, whole; throws std::invalid_argument naming
// it when it cannot be read or is larger than `max` (what `taker` takes).
inline std::string read_sent_file(const std::string& path, size_t max, const std::string& taker) {
  std::ifstream in(path, std::ios::binary);
  if (!in || std::filesystem::is_directory(path))
    throw std::invalid_argument(path + ": cannot read: " + (in ? "is a directory" : std::strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().size() > max)
    throw std::invalid_argument(path + ": " + std::to_string(text.str().size()) + " bytes, more than " + taker +
                                " takes (" + std::to_string(max) + ")");
  return text.str();
}

// {name, content}; throws std::invalid_argument naming the file and what is wrong.
inline std::pair<std::string, std::string> file_parameter(const std::string& given) {
  size_t eq = given.find('=');
  if (eq == std::string::npos || eq == 0)
    throw std::invalid_argument("--param-file \"" + given + "\": expected name=FILE");
  return {given.substr(0, eq), read_sent_file(given.substr(eq + 1), kMaxParameterFileBytes, "a parameter")};
}

}  // namespace outpost::tools
