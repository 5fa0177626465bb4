// libFuzzer target for the parsers of files an attacker may write: the
// input's first byte picks one, the rest is the file (or the text given as
// data). /proc, passwd and mountinfo are read from a fixture tree (Env's
// Paths) holding the input where the real file would be. Each query runs
// to its end and its rows are rendered as JSON; what may end a query is
// any error the agent's query actor reports; a crash, a hang, a leak, UB or
// a std::logic_error is a bug (fuzz_util.hpp).

#include <cstdint>
#include <string>

#include "queries/engine.hpp"
#include "tests/fuzz/fuzz_util.hpp"

namespace {

using namespace outpost;
using vql::Value;

constexpr const char* kPid = "4242";
constexpr const char* kStat = "4242 (bash) S 1 4242 4242 0 -1 4194560 1 0 0 0 3 1 0 0 20 0 1 0 120 9000000 900 0";

struct Case {
  const char* vql;
  const char* file;  // where the input goes below the fixture root; null: only as D
};

// D: the input as text; F: the input's file; the fixture's files otherwise.
const Case kCases[] = {
    {"SELECT * FROM parse_lines(filename=D, accessor='data')", nullptr},
    {"SELECT * FROM parse_lines(filename=F)", "input"},
    {"SELECT * FROM split_records(filenames=D, accessor='data', regex=',', first_row_is_headers=true)", nullptr},
    {"SELECT * FROM split_records(filenames=F)", "input"},
    {"SELECT parse_json(data=D) AS J, parse_json_array(data=D) AS A FROM scope()", nullptr},
    {"SELECT * FROM parse_json_array(data=D)", nullptr},
    {"SELECT * FROM parse_csv(filename=D, accessor='data')", nullptr},
    {"SELECT * FROM parse_csv(filename=F, auto_headers=true, separator=';', comment='#')", "input"},
    {"SELECT grok(grok='%{SYSLOGLINE}', data=D) AS G FROM scope()", nullptr},
    {"SELECT * FROM parse_records_with_regex(file=D, accessor='data', regex='(?P<Key>\\\\w+)=(?P<Value>\\\\S*)')",
     nullptr},
    {"SELECT parse_xml(file=D, accessor='data') AS X FROM scope()", nullptr},
    {"SELECT * FROM mounts()", "mountinfo"},
    {"SELECT * FROM users()", "passwd"},
    {"SELECT * FROM pslist()", "proc/4242/stat"},
    {"SELECT * FROM pslist()", "proc/4242/status"},
    {"SELECT * FROM pslist()", "proc/4242/cmdline"},
    {"SELECT * FROM pslist()", "proc/stat"},
    {"SELECT * FROM netstat()", "proc/net/tcp"},
    {"SELECT * FROM netstat()", "proc/net/udp6"},
    {"SELECT * FROM info()", "proc/uptime"},
};

// The fixture as a healthy host has it; each run then puts its input in one place.
void write_fixture(const std::filesystem::path& root) {
  fuzz::write_file(root / "proc" / kPid / "stat", kStat);
  fuzz::write_file(root / "proc" / kPid / "status", "Name:\tbash\nUid:\t0\t0\t0\t0\n");
  fuzz::write_file(root / "proc" / kPid / "cmdline", std::string("bash\0-c\0true", 12));
  fuzz::write_file(root / "proc/stat", "cpu 1 2 3\nbtime 1700000000\n");
  fuzz::write_file(root / "proc/uptime", "100.5 90.1\n");
  fuzz::write_file(root / "proc/net/tcp",
                   "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
                   "   0: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234\n");
  fuzz::write_file(root / "proc/net/udp6", "  sl  local_address rem_address st\n");
  fuzz::write_file(root / "passwd", "root:x:0:0:root:/root:/bin/bash\n");
  fuzz::write_file(root / "mountinfo", "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n");
  fuzz::write_file(root / "input", "");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path root = fuzz::temp_dir() / "fixture";
  static vql::Engine engine(vql::default_registry());
  static const auto paths = [] {
    auto p = std::make_shared<vql::Paths>();
    p->proc = root / "proc";
    p->sys = root / "sys";
    p->passwd = root / "passwd";
    p->mountinfo = root / "mountinfo";
    p->os_release = {root / "os-release"};
    return p;
  }();
  if (size == 0) return 0;
  const Case& c = kCases[data[0] % (sizeof kCases / sizeof kCases[0])];
  std::string input(reinterpret_cast<const char*>(data) + 1, size - 1);
  write_fixture(root);
  if (c.file) fuzz::write_file(root / c.file, input);
  vql::Env env;
  env.paths = paths;
  fuzz::run_query(engine, c.vql, {{"D", Value(input), nullptr}, {"F", Value((root / "input").string()), nullptr}},
                  env);
  return 0;
}
