#pragma once
// Files whose content a request carries: `--param-file name=FILE` of
// outpost-agent and outpost-collector (an upload or upload_file
// parameter's value), and the collector's `--artifact-file`.

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace outpost::tools {

inline constexpr size_t kMaxParameterFileBytes = 16 << 20;

// A file sent with a request, whole; throws std::invalid_argument naming
// it when it cannot be read, is no regular file, or is larger than `max`
// (what `taker` takes). Reads at most max + 1 bytes (a file may grow).
inline std::string read_sent_file(const std::string& path, size_t max, const std::string& taker) {
  auto too_big = [&](uint64_t size) {
    return std::invalid_argument(path + ": " + std::to_string(size) + " bytes, more than " + taker + " takes (" +
                                 std::to_string(max) + ")");
  };
  std::error_code ec;
  auto status = std::filesystem::status(path, ec);
  if (ec) throw std::invalid_argument(path + ": cannot read: " + ec.message());
  if (!std::filesystem::is_regular_file(status)) throw std::invalid_argument(path + ": cannot read: not a regular file");
  if (auto size = std::filesystem::file_size(path, ec); !ec && size > max) throw too_big(size);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument(path + ": cannot read: " + std::strerror(errno));
  std::string text(max + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > max) throw too_big(text.size());
  return text;
}

// {name, content}; throws std::invalid_argument naming the file and what is wrong.
inline std::pair<std::string, std::string> file_parameter(const std::string& given) {
  size_t eq = given.find('=');
  if (eq == std::string::npos || eq == 0)
    throw std::invalid_argument("--param-file \"" + given + "\": expected name=FILE");
  std::string content = read_sent_file(given.substr(eq + 1), kMaxParameterFileBytes, "a parameter");
  // A request carries parameters as text: a NUL would cut it short on the way.
  if (auto nul = content.find('\0'); nul != std::string::npos)
    throw std::invalid_argument(given.substr(eq + 1) + ": a NUL byte at offset " + std::to_string(nul) +
                                " (a parameter is text; binary files cannot be sent as one yet)");
  return {given.substr(0, eq), std::move(content)};
}

}  // namespace outpost::tools
