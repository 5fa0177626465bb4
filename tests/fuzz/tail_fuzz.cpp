// libFuzzer target for tail(): the input is a script of writes to a file
// (append a chunk of the input, truncate, rotate) between the sensor's
// scans. Besides no crash, hang, leak or UB: while the file is never
// truncated, every complete line appended is read exactly once, in order
// (a rotation drops only the old file's unfinished last line).

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "queries/event_plugins.hpp"
#include "tests/fuzz/fuzz_util.hpp"

using namespace outpost;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = (fuzz::temp_dir() / "tailed.log").string();
  fuzz::write_file(path, "before the tail started\npartial");
  auto scanner = vql::tail_scanner(path);
  std::vector<vql::Row> events;
  scanner->scan(events);  // starts at the end
  std::string appended;   // since the start, in the file(s) the scanner reads
  bool truncated = false;
  for (size_t at = 0; at < size;) {
    uint8_t op = data[at++];
    if (op % 8 < 5) {  // append up to 255 bytes of the input
      size_t n = std::min<size_t>(op / 8 + 1, size - at);
      int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0600);
      if (fd < 0 || ::write(fd, data + at, n) != static_cast<ssize_t>(n)) fuzz::fail("appending to " + path);
      ::close(fd);
      appended.append(reinterpret_cast<const char*>(data) + at, n);
      at += n;
    } else if (op % 8 == 5) {
      if (::truncate(path.c_str(), 0) != 0) fuzz::fail("truncating " + path);
      truncated = true;
    } else if (op % 8 == 6) {  // rotate, then scan: the old file's rest is read first
      if (::rename(path.c_str(), (path + ".1").c_str()) != 0) fuzz::fail("rotating " + path);
      fuzz::write_file(path, "");
      scanner->scan(events);
      appended.erase(appended.rfind('\n') == std::string::npos ? 0 : appended.rfind('\n') + 1);
    } else {
      scanner->scan(events);
    }
  }
  scanner->scan(events);
  if (truncated) return 0;
  std::string read;
  for (auto& e : events) read += *e.find("Line")->as_string() + "\n";
  std::string complete = appended.substr(0, appended.rfind('\n') == std::string::npos ? 0 : appended.rfind('\n') + 1);
  // What was there before the start is not read, not even its unfinished line.
  if (read != complete)
    fuzz::fail("tail read\n[" + read + "]\nof\n[" + complete + "]");
  return 0;
}
