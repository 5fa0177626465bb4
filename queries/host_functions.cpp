// Functions about the host and its network: ip(), host(), url(), tempfile().

#include <arpa/inet.h>
#include <netdb.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "queries/engine.hpp"
#include "queries/linux_util.hpp"

namespace outpost::vql {

TempFiles::~TempFiles() {
  std::error_code ignored;  // what cannot be removed stays
  for (auto& path : paths_) std::filesystem::remove_all(path, ignored);  // links are not followed
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

}  // namespace

std::string temp_file_with(Env& env, const std::vector<std::string>& pieces, const std::string& extension,
                           const std::string& who) {
  std::string dir = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
  std::string path = dir + "/outpost-tmp-XXXXXX" + extension;
  kj::AutoCloseFd fd(::mkstemps(path.data(), static_cast<int>(extension.size())));
  if (fd == nullptr) throw QueryError(who + ": cannot create a file in " + dir + ": " + std::strerror(errno));
  env.temp_files.add(path);
  int error = 0;
  for (auto& piece : pieces)
    if (!error) error = write_all(fd.get(), piece.data(), piece.size());
  // A failed close is a failed write: NFS and FUSE report write errors there.
  if (int closed = close_file(fd); !error) error = closed;
  if (error) throw QueryError(who + ": writing " + path + ": " + std::strerror(error));
  return path;
}

namespace {

Value tempfile(const Args& a, Env& env) {
  std::string extension = a.string("extension").value_or("");
  if (extension.find('/') != std::string::npos) a.fail("extension", "must not hold '/'");
  std::string path = temp_file_with(env, a.strings("data"), extension, "tempfile()");
  if (auto mode = a.string("permissions")) {
    if (*mode == "x") ::chmod(path.c_str(), 0700);
    else if (!mode->empty()) a.fail("permissions", "expected \"x\" (executable) or nothing");
  }
  return path;
}

// Go's url.URL of `text`: Scheme, User, Host (with the port), Path, RawQuery, Fragment.
Value parse_url(const std::string& text) {
  Dict out;
  std::string rest = text, scheme, user, host, path, query, fragment;
  if (auto at = rest.find('#'); at != std::string::npos) fragment = rest.substr(at + 1), rest.resize(at);
  if (auto at = rest.find('?'); at != std::string::npos) query = rest.substr(at + 1), rest.resize(at);
  auto colon = rest.find(':');
  if (colon != std::string::npos && colon > 0 && std::isalpha(static_cast<unsigned char>(rest[0])) &&
      rest.find('/') > colon) {
    scheme = rest.substr(0, colon);
    std::transform(scheme.begin(), scheme.end(), scheme.begin(), [](unsigned char c) { return std::tolower(c); });
    rest = rest.substr(colon + 1);
  }
  if (rest.rfind("//", 0) == 0) {
    rest = rest.substr(2);
    auto slash = rest.find('/');
    host = rest.substr(0, slash);
    path = slash == std::string::npos ? "" : rest.substr(slash);
    if (auto at = host.rfind('@'); at != std::string::npos) user = host.substr(0, at), host = host.substr(at + 1);
  } else {
    path = rest;
  }
  out.set("Scheme", scheme);
  out.set("User", user);
  out.set("Host", host);
  out.set("Path", path);
  out.set("RawQuery", query);
  out.set("Fragment", fragment);
  return out;
}

// The addresses `name` resolves to (the resolver's answers, in order); an
// address is itself.
Value host(const Args& a, Env&) {
  std::string name = a.string("name").value_or("");
  if (name.empty()) return List{};
  addrinfo hints{}, *found = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  if (::getaddrinfo(name.c_str(), nullptr, &hints, &found) != 0) return List{};
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> own(found, freeaddrinfo);
  List out;
  for (auto* i = found; i; i = i->ai_next) {
    char buf[INET6_ADDRSTRLEN] = "";
    if (i->ai_family == AF_INET)
      ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ai_addr)->sin_addr, buf, sizeof buf);
    else if (i->ai_family == AF_INET6)
      ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(i->ai_addr)->sin6_addr, buf, sizeof buf);
    Value v(std::string{buf});
    if (*buf && std::none_of(out.begin(), out.end(), [&](auto& x) { return equal(x, v); })) out.push_back(v);
  }
  return out;
}

}  // namespace

void add_host_functions(Registry& r) {
  r.add(FunctionSpec{"host", "The IP addresses a host name resolves to, as a list ([] when it does not).",
                     {{"name", "string", true, ""}, {"server", "string", false, "ignored: the system's resolver"},
                      {"type", "string", false, "ignored"}, {"prefer_go", "bool", false, "ignored"}},
                     host});
  r.add(FunctionSpec{"url",
                     "A URL's parts as Go's url.URL gives them (Scheme, User, Host, Path, RawQuery, Fragment) with "
                     "parse=; else a URL built from scheme, host, path, query and fragment.",
                     {{"parse", "string", false, ""}, {"scheme", "string", false, ""}, {"host", "string", false, ""},
                      {"path", "string", false, ""}, {"query", "dict", false, ""}, {"fragment", "string", false, ""}},
                     [](const Args& a, Env&) -> Value {
                       if (auto text = a.string("parse")) return parse_url(*text);
                       std::string out = a.string("scheme").value_or("http") + "://" + a.string("host").value_or("") +
                                         a.string("path").value_or("");
                       if (auto q = a.find("query"); q && q->as_dict()) {
                         std::string query;
                         for (auto& [k, v] : q->as_dict()->items()) query += (query.empty() ? "" : "&") + k + "=" + to_string(v);
                         if (!query.empty()) out += "?" + query;
                       }
                       if (auto f = a.string("fragment"); f && !f->empty()) out += "#" + *f;
                       return out;
                     }});
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
