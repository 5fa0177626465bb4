// Functions about the host: ip() and tempfile().

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "queries/engine.hpp"

namespace outpost::vql {

TempFiles::~TempFiles() {
  for (auto& path : paths_) ::unlink(path.c_str());
}

namespace {

std::string ip4(uint32_t network_order) {
  char buf[INET_ADDRSTRLEN];
  in_addr a{network_order};
  return ::inet_ntop(AF_INET, &a, buf, sizeof buf);
}

// An address in its canonical text ("::1", "10.0.0.1"); NULL when it is none.
Value ip(const Args& a, Env&) {
  if (auto le = a.integer("netaddr4_le")) return ip4(htonl(__builtin_bswap32(static_cast<uint32_t>(*le))));
  if (auto be = a.integer("netaddr4_be")) return ip4(htonl(static_cast<uint32_t>(*be)));
  auto text = a.string("parse");
  if (!text) return Value();
  char buf[INET6_ADDRSTRLEN];
  in_addr v4;
  in6_addr v6;
  if (::inet_pton(AF_INET, text->c_str(), &v4) == 1) return std::string(::inet_ntop(AF_INET, &v4, buf, sizeof buf));
  if (::inet_pton(AF_INET6, text->c_str(), &v6) == 1) return std::string(::inet_ntop(AF_INET6, &v6, buf, sizeof buf));
  return Value();
}

// A new file in $TMPDIR (or /tmp) holding `data`, removed when the query ends.
Value tempfile(const Args& a, Env& env) {
  std::string dir = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
  std::string extension = a.string("extension").value_or("");
  if (extension.find('/') != std::string::npos) a.fail("extension", "must not hold '/'");
  std::string path = dir + "/outpost-tmp-XXXXXX" + extension;
  int fd = ::mkstemps(path.data(), static_cast<int>(extension.size()));
  if (fd < 0) throw QueryError("tempfile(): cannot create in " + dir + ": " + std::strerror(errno));
  env.temp_files.add(path);
  bool ok = true;
  for (auto& piece : a.strings("data")) {
    for (size_t done = 0; ok && done < piece.size();) {
      ssize_t n = ::write(fd, piece.data() + done, piece.size() - done);
      if (n < 0 && errno == EINTR) continue;
      ok = n > 0;
      done += n > 0 ? static_cast<size_t>(n) : 0;
    }
  }
  int error = errno;
  ::close(fd);
  if (!ok) throw QueryError("tempfile(): writing " + path + ": " + std::strerror(error));
  if (auto mode = a.string("permissions")) {
    if (*mode == "x") ::chmod(path.c_str(), 0700);
    else if (!mode->empty()) a.fail("permissions", "expected \"x\" (executable) or nothing");
  }
  return path;
}

}  // namespace

void add_host_functions(Registry& r) {
  r.add(FunctionSpec{"ip",
                     "An IP address as text (\"10.0.0.1\", \"::1\"): parsed from `parse`, or from an IPv4 address "
                     "as an integer (netaddr4_le little endian, netaddr4_be big endian); NULL when not an address.",
                     {{"parse", "string", false, ""}, {"netaddr4_le", "int", false, ""}, {"netaddr4_be", "int", false, ""}},
                     ip});
  r.add(FunctionSpec{"tempfile",
                     "The path of a new file in $TMPDIR (or /tmp) holding `data`; removed when the query ends.",
                     {{"data", "string or list of strings", false, "its content"},
                      {"extension", "string", false, "the name's ending (\".pcap\")"},
                      {"permissions", "string", false, "\"x\": executable (0700); default 0600"},
                      {"remove_last", "bool", false, "accepted; files are always removed at the query's end"}},
                     tempfile});
}

}  // namespace outpost::vql
