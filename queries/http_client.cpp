// http_client(): an HTTP/1.1 request over TCP or a Unix socket (Docker's and
// snapd's APIs: url "/var/run/docker.sock:unix/info"), done in slices on a
// non-blocking socket so that no query holds its thread while it waits.
// Plain http only: https is refused with that message.

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <strings.h>
#include <sys/un.h>

#include <chrono>
#include <cstring>

#include "queries/engine.hpp"
#include "queries/linux_util.hpp"

namespace outpost::vql {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxResponseBytes = size_t{64} << 20;
constexpr int64_t kDefaultChunk = int64_t{4} << 20;

struct Target {
  std::string unix_path;  // set: a Unix socket
  std::string host, port = "80", path = "/";
};

// "http://host[:port]/path" or "/socket/path:unix/path"; error text when neither.
std::optional<Target> parse_url(const std::string& url, std::string& error) {
  Target t;
  if (auto at = url.find(":unix"); at != std::string::npos && !url.empty() && url[0] == '/') {
    t.unix_path = url.substr(0, at);
    t.path = url.substr(at + 5);
    if (t.path.empty() || t.path[0] != '/') t.path = "/" + t.path;
    t.host = "localhost";
    return t;
  }
  if (url.rfind("https://", 0) == 0) return error = "https is not supported yet (http and Unix sockets are)", std::nullopt;
  if (url.rfind("http://", 0) != 0) return error = "expected http://host/path or /socket:unix/path", std::nullopt;
  std::string rest = url.substr(7);
  size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  t.path = slash == std::string::npos ? "/" : rest.substr(slash);
  // host:port, [v6]:port; a bare v6 address has several colons and no port
  size_t colon = authority.rfind(':'), bracket = authority.find(']');
  bool port = colon != std::string::npos &&
              (bracket == std::string::npos ? authority.find(':') == colon : colon > bracket);
  if (port) {
    t.port = authority.substr(colon + 1);
    authority = authority.substr(0, colon);
  }
  if (authority.size() > 1 && authority.front() == '[') authority = authority.substr(1, authority.size() - 2);
  if (authority.empty()) return error = "no host", std::nullopt;
  t.host = authority;
  return t;
}

std::string url_escape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || std::strchr("-_.~", c)) {
      out += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

class HttpStream : public RowStream {
 public:
  HttpStream(std::string url, std::string request, Target target, int64_t chunk, std::chrono::seconds timeout)
      : url_(std::move(url)), request_(std::move(request)), target_(std::move(target)), chunk_(chunk),
        deadline_(Clock::now() + timeout) {}

  Step next(std::vector<Row>& out, size_t budget) override {
    if (budget == 0) return Step::more();
    try {
      if (state_ == State::start) connect();
      if (state_ == State::connecting && !wait_for(POLLOUT)) return pause();
      if (state_ == State::connecting) {
        int error = 0;
        socklen_t len = sizeof error;
        ::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &error, &len);
        if (error) throw std::runtime_error("connect: " + errno_message(error));
        state_ = State::sending;
      }
      while (state_ == State::sending) {
        ssize_t n = ::send(fd_.get(), request_.data() + sent_, request_.size() - sent_, MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return pause();
        if (n < 0) throw std::runtime_error("send: " + errno_message(errno));
        sent_ += static_cast<size_t>(n);
        if (sent_ == request_.size()) state_ = State::reading;
      }
      while (state_ == State::reading) {
        char buf[65536];
        ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return pause();
        if (n < 0) throw std::runtime_error("recv: " + errno_message(errno));
        if (n == 0) break;
        response_.append(buf, static_cast<size_t>(n));
        if (response_.size() > kMaxResponseBytes) throw std::runtime_error("response larger than 64 MiB");
      }
      fd_.reset();
      respond(out);
    } catch (const std::exception& e) {  // as Velociraptor: one row, Response 500, the error as Content
      Row row;
      row.set("Url", url_);
      row.set("Content", std::string(e.what()));
      row.set("Response", int64_t{500});
      row.set("Headers", Dict());
      out.push_back(std::move(row));
    }
    return Step::done();
  }

 private:
  enum class State { start, connecting, sending, reading };

  Step pause() {
    if (Clock::now() > deadline_) throw std::runtime_error("no response in time");
    return Step::after(std::chrono::milliseconds(5));
  }
  bool wait_for(short events) {
    pollfd p{fd_.get(), events, 0};
    return ::poll(&p, 1, 0) > 0;
  }

  void connect() {
    if (!target_.unix_path.empty()) {
      sockaddr_un a{};
      a.sun_family = AF_UNIX;
      if (target_.unix_path.size() >= sizeof a.sun_path) throw std::runtime_error("socket path too long");
      std::memcpy(a.sun_path, target_.unix_path.c_str(), target_.unix_path.size());
      fd_ = Fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      start_connect(reinterpret_cast<sockaddr*>(&a), sizeof a, target_.unix_path);
      return;
    }
    addrinfo hints{}, *found = nullptr;
    hints.ai_socktype = SOCK_STREAM;
    if (int rc = ::getaddrinfo(target_.host.c_str(), target_.port.c_str(), &hints, &found); rc != 0)
      throw std::runtime_error(target_.host + ": " + gai_strerror(rc));
    std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> own(found, freeaddrinfo);
    fd_ = Fd(::socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    start_connect(found->ai_addr, found->ai_addrlen, target_.host + ":" + target_.port);
  }
  void start_connect(const sockaddr* a, socklen_t len, const std::string& where) {
    if (!fd_) throw std::runtime_error("socket: " + errno_message(errno));
    if (::connect(fd_.get(), a, len) == 0) {
      state_ = State::sending;
    } else if (errno == EINPROGRESS || errno == EAGAIN) {
      state_ = State::connecting;
    } else {
      throw std::runtime_error("connect to " + where + ": " + errno_message(errno));
    }
  }

  // The status, headers and body (de-chunked) into rows of at most chunk_ bytes.
  void respond(std::vector<Row>& out) {
    size_t end = response_.find("\r\n\r\n");
    if (end == std::string::npos || response_.rfind("HTTP/", 0) != 0) throw std::runtime_error("not an HTTP response");
    size_t space = response_.find(' ');
    int64_t status = std::atoi(response_.c_str() + space + 1);
    Dict headers;
    bool chunked = false;
    for (size_t at = response_.find("\r\n") + 2; at < end;) {
      size_t eol = response_.find("\r\n", at);
      std::string line = response_.substr(at, eol - at);
      at = eol + 2;
      size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string name = line.substr(0, colon), value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(' '));
      if (::strcasecmp(name.c_str(), "Transfer-Encoding") == 0 && value.find("chunked") != std::string::npos)
        chunked = true;
      const Value* seen = headers.find(name);  // a repeated header: its values in a list
      List values = seen && seen->as_list() ? *seen->as_list() : List{};
      values.push_back(value);
      headers.set(name, std::move(values));
    }
    std::string body = response_.substr(end + 4);
    if (chunked) body = dechunk(body);
    size_t at = 0;
    do {
      Row row;
      row.set("Url", url_);
      row.set("Content", body.substr(at, static_cast<size_t>(chunk_)));
      row.set("Response", status);
      row.set("Headers", headers);
      out.push_back(std::move(row));
      at += static_cast<size_t>(chunk_);
    } while (at < body.size());
  }

  static std::string dechunk(const std::string& body) {
    std::string out;
    for (size_t at = 0; at < body.size();) {
      size_t eol = body.find("\r\n", at);
      if (eol == std::string::npos) throw std::runtime_error("a chunked body cut short");
      size_t size = std::strtoul(body.c_str() + at, nullptr, 16);
      if (size == 0) break;
      if (eol + 2 + size > body.size()) throw std::runtime_error("a chunked body cut short");
      out.append(body, eol + 2, size);
      at = eol + 2 + size + 2;
    }
    return out;
  }

  std::string url_, request_;
  Target target_;
  int64_t chunk_;
  Clock::time_point deadline_;
  State state_ = State::start;
  Fd fd_;
  size_t sent_ = 0;
  std::string response_;
};

std::unique_ptr<RowStream> http_client(const Args& args, Env&) {
  std::string url = args.string("url").value_or("");
  std::string error;
  auto target = parse_url(url, error);
  if (!target) args.fail("url", error + ": " + url);
  std::string method = args.string("method").value_or("GET");
  if (method.empty() || method.find_first_of(" \r\n") != std::string::npos) args.fail("method", "not a method");
  std::string query, body = args.string("data").value_or("");
  if (auto params = args.find("params")) {
    auto d = params->as_dict();
    if (!d) args.fail("params", "expected a dict");
    for (auto& [k, v] : d->items()) query += (query.empty() ? "" : "&") + url_escape(k) + "=" + url_escape(to_string(v));
  }
  std::string path = target->path;
  if (!query.empty() && method == "GET") path += (path.find('?') == std::string::npos ? "?" : "&") + query;
  else if (!query.empty() && body.empty()) body = query;
  std::string request = method + " " + path + " HTTP/1.1\r\nHost: " + target->host + "\r\nConnection: close\r\n" +
                        "User-Agent: " + args.string("user_agent").value_or("Outpost") + "\r\n";
  if (auto headers = args.find("headers")) {
    auto d = headers->as_dict();
    if (!d) args.fail("headers", "expected a dict");
    for (auto& [k, v] : d->items()) {
      std::string value = to_string(v);
      if ((k + value).find_first_of("\r\n") != std::string::npos) args.fail("headers", "a line break in " + k);
      request += k + ": " + value + "\r\n";
    }
  }
  if (!body.empty() || method != "GET") request += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  request += "\r\n" + body;
  int64_t chunk = args.integer("chunk_size").value_or(kDefaultChunk);
  if (chunk <= 0) args.fail("chunk_size", "must be positive");
  int64_t timeout = args.integer("timeout").value_or(60);
  if (timeout <= 0) args.fail("timeout", "must be positive");
  return std::make_unique<HttpStream>(url, std::move(request), std::move(*target), chunk, std::chrono::seconds(timeout));
}

}  // namespace

void add_http_client(Registry& r) {
  r.add(PluginSpec{
      "http_client",
      "An HTTP request (http://, or a Unix socket as /path/to.sock:unix/api/path): a row {Url, Content, Response "
      "(the status), Headers (name: list of values)} per chunk_size bytes of body; a failure is one row with "
      "Response 500 and the error as Content. https is not supported yet.",
      {{"url", "string", true, ""},
       {"method", "string", false, "default GET"},
       {"params", "dict", false, "query parameters (GET) or a form body"},
       {"headers", "dict", false, ""},
       {"data", "string", false, "the body"},
       {"chunk_size", "int", false, "bytes of body per row (default 4 MiB)"},
       {"user_agent", "string", false, ""},
       {"timeout", "int", false, "seconds for the whole request (default 60)"}},
      false, http_client});
}

}  // namespace outpost::vql
