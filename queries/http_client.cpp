// http_client(): an HTTP/1.1 request over TCP, over TLS (https, with
// OpenSSL) or over a Unix socket (Docker's and snapd's APIs: url
// "/var/run/docker.sock:unix/info"), done in slices on a non-blocking socket
// so that no query holds its thread while it waits: the connect, the TLS
// handshake, the request and the response each go as far as the socket lets
// them, then the stream asks to be called again in 5 ms, until `timeout`.
//
// https checks the server's certificate against the system's CAs and those of
// root_ca, and its name (or IP address) against the URL's host, unless
// skip_verify (or disable_ssl_security, its older name in Velociraptor).
// Redirects are not followed: a 3xx is a row like any other status.

#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <poll.h>
#include <sys/socket.h>
#include <strings.h>
#include <sys/un.h>

#include <chrono>
#include <cstring>

#include "queries/engine.hpp"
#include "queries/linux_util.hpp"
#include "queries/openssl_ptr.hpp"

namespace outpost::vql {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxResponseBytes = size_t{64} << 20;
constexpr int64_t kDefaultChunk = int64_t{4} << 20;


struct Target {
  std::string unix_path;  // set: a Unix socket
  bool tls = false;       // https
  std::string host, port = "80", path = "/";
};

// What https trusts.
struct TlsOptions {
  bool verify = true;              // false: any certificate, for any name
  std::vector<X509Ptr> extra_cas;  // root_ca's, besides the system's
};

// "http[s]://host[:port]/path" or "/socket/path:unix/path"; error text when neither.
std::optional<Target> parse_url(const std::string& url, std::string& error) {
  Target t;
  if (auto at = url.find(":unix"); at != std::string::npos && !url.empty() && url[0] == '/') {
    t.unix_path = url.substr(0, at);
    t.path = url.substr(at + 5);
    if (t.path.empty() || t.path[0] != '/') t.path = "/" + t.path;
    t.host = "localhost";
    return t;
  }
  t.tls = url.rfind("https://", 0) == 0;
  if (!t.tls && url.rfind("http://", 0) != 0)
    return error = "expected http://host/path, https://host/path or /socket:unix/path", std::nullopt;
  if (t.tls) t.port = "443";
  std::string rest = url.substr(t.tls ? 8 : 7);
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

// The reason for OpenSSL's oldest queued error ("certificate verify failed"),
// or "" when none is queued.
std::string openssl_reason() {
  unsigned long e = ERR_peek_error();
  if (e == 0) return "";
  const char* reason = ERR_reason_error_string(e);
  return reason ? reason : "OpenSSL error " + std::to_string(ERR_GET_REASON(e));
}

[[noreturn]] void throw_openssl(const std::string& what) {
  std::string reason = openssl_reason();
  ERR_clear_error();
  throw std::runtime_error(what + ": " + (reason.empty() ? "failed" : reason));
}

// A BIO over a non-blocking socket (its descriptor as the BIO's data). Not
// OpenSSL's socket BIO: that one write()s, which raises SIGPIPE when the
// server has gone, and SIGPIPE's disposition belongs to the host program;
// this one send()s with MSG_NOSIGNAL, as the plain http path does.
int socket_fd(BIO* bio) { return static_cast<int>(reinterpret_cast<intptr_t>(BIO_get_data(bio))); }

int bio_write(BIO* bio, const char* data, size_t size, size_t* written) {
  BIO_clear_retry_flags(bio);
  ssize_t n;
  do n = ::send(socket_fd(bio), data, size, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n >= 0) {
    *written = static_cast<size_t>(n);
    return 1;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(bio);
  return 0;
}

int bio_read(BIO* bio, char* data, size_t size, size_t* read) {
  BIO_clear_retry_flags(bio);
  ssize_t n;
  do n = ::recv(socket_fd(bio), data, size, 0);
  while (n < 0 && errno == EINTR);
  if (n > 0) {
    *read = static_cast<size_t>(n);
    return 1;
  }
  if (n == 0) BIO_set_flags(bio, BIO_FLAGS_IN_EOF);  // what BIO_eof() reports, as OpenSSL's socket BIO does
  else if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_read(bio);
  return 0;
}

long bio_ctrl(BIO* bio, int cmd, long, void*) {
  if (cmd == BIO_CTRL_FLUSH) return 1;  // nothing is buffered here
  if (cmd == BIO_CTRL_EOF) return BIO_test_flags(bio, BIO_FLAGS_IN_EOF) != 0;
  return 0;
}

// Made once and kept for the life of the process (SSLs of any thread use it).
const BIO_METHOD* socket_bio_method() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "outpost non-blocking socket");
    if (m && BIO_meth_set_write_ex(m, bio_write) == 1 && BIO_meth_set_read_ex(m, bio_read) == 1 &&
        BIO_meth_set_ctrl(m, bio_ctrl) == 1)
      return m;
    BIO_meth_free(m);
    return static_cast<BIO_METHOD*>(nullptr);
  }();
  return method;
}

// The certificates of root_ca's PEM text; error text when one is broken or there is none.
std::vector<X509Ptr> parse_pem_certificates(const std::string& pem, std::string& error) {
  std::vector<X509Ptr> certs;
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  ERR_clear_error();
  while (bio) {
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) break;
    certs.push_back(std::move(cert));
  }
  unsigned long last = ERR_peek_last_error();  // no more PEM blocks: "no start line"
  bool clean_end = bio && ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE;
  if (!clean_end) error = "a broken PEM certificate: " + openssl_reason();
  else if (certs.empty()) error = "no PEM certificate in it";
  ERR_clear_error();
  return certs;
}

// A client context: TLS 1.2 or later, checking certificates against the
// system's CAs and `options`' unless !options.verify.
SslCtxPtr client_context(const TlsOptions& options) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) throw_openssl("TLS context");
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  // A server that closes the connection without close_notify ends the body,
  // as the connection's end does over plain http.
  SSL_CTX_set_options(ctx.get(), SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_verify(ctx.get(), options.verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  if (!options.verify) return ctx;
  if (SSL_CTX_set_default_verify_paths(ctx.get()) != 1) throw_openssl("the system's CA certificates");
  for (auto& cert : options.extra_cas)
    if (X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx.get()), cert.get()) != 1) throw_openssl("root_ca");
  return ctx;
}

// The context of most requests (verifying, with no root_ca), made once and
// shared: loading the system's CA certificates takes tens of milliseconds of
// CPU (about 70 on Debian 12), too long to spend on each request. A request
// with root_ca makes its own and pays that again; one with skip_verify makes
// one that loads nothing.
SSL_CTX* system_context() {
  static const SslCtxPtr ctx = client_context(TlsOptions{});  // a throw leaves it to the next call
  return ctx.get();
}

bool is_ip_address(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1 || ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

class HttpStream : public RowStream {
 public:
  HttpStream(std::string url, std::string request, Target target, TlsOptions tls, int64_t chunk,
             std::chrono::seconds timeout)
      : url_(std::move(url)), request_(std::move(request)), target_(std::move(target)), tls_(std::move(tls)),
        chunk_(chunk), deadline_(Clock::now() + timeout) {}

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
        connected();
      }
      if (state_ == State::handshaking && !handshake()) return pause();
      while (state_ == State::sending) {
        auto n = send_some(request_.data() + sent_, request_.size() - sent_);
        if (!n) return pause();
        sent_ += *n;
        if (sent_ == request_.size()) state_ = State::reading;
      }
      while (state_ == State::reading) {
        char buf[65536];
        auto n = recv_some(buf, sizeof buf);
        if (!n) return pause();
        if (*n == 0) break;
        response_.append(buf, *n);
        if (response_.size() > kMaxResponseBytes) throw std::runtime_error("response larger than 64 MiB");
      }
      ssl_.reset();
      fd_ = nullptr;
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
  enum class State { start, connecting, handshaking, sending, reading };

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
      fd_ = kj::AutoCloseFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      start_connect(reinterpret_cast<sockaddr*>(&a), sizeof a, target_.unix_path);
      return;
    }
    addrinfo hints{}, *found = nullptr;
    hints.ai_socktype = SOCK_STREAM;
    if (int rc = ::getaddrinfo(target_.host.c_str(), target_.port.c_str(), &hints, &found); rc != 0)
      throw std::runtime_error(target_.host + ": " + gai_strerror(rc));
    std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> own(found, freeaddrinfo);
    fd_ = kj::AutoCloseFd(::socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    start_connect(found->ai_addr, found->ai_addrlen, target_.host + ":" + target_.port);
  }
  void start_connect(const sockaddr* a, socklen_t len, const std::string& where) {
    if (fd_ == nullptr) throw std::runtime_error("socket: " + errno_message(errno));
    if (::connect(fd_.get(), a, len) == 0) {
      connected();
    } else if (errno == EINPROGRESS || errno == EAGAIN) {
      state_ = State::connecting;
    } else {
      throw std::runtime_error("connect to " + where + ": " + errno_message(errno));
    }
  }

  void connected() { state_ = target_.tls ? State::handshaking : State::sending; }

  std::string server() const { return target_.host + ":" + target_.port; }

  // Up to `size` bytes of the request sent: how many, or nullopt while the socket is full.
  std::optional<size_t> send_some(const char* data, size_t size) {
    if (ssl_) {
      size_t n = 0;
      ERR_clear_error();
      int ok = SSL_write_ex(ssl_.get(), data, size, &n);
      if (!tls_step(ok, errno, "TLS with ")) return std::nullopt;
      if (n == 0) throw std::runtime_error("TLS with " + server() + ": the server closed the connection");
      return n;
    }
    ssize_t n = ::send(fd_.get(), data, size, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return std::nullopt;
    if (n < 0) throw std::runtime_error("send: " + errno_message(errno));
    return static_cast<size_t>(n);
  }

  // Bytes of the response read into buf: 0 at its end, nullopt while none has come.
  std::optional<size_t> recv_some(char* buf, size_t size) {
    if (ssl_) {
      size_t n = 0;
      ERR_clear_error();
      int ok = SSL_read_ex(ssl_.get(), buf, size, &n);
      if (!tls_step(ok, errno, "TLS with ")) return std::nullopt;
      return n;  // 0 when the server closed: the end of the response
    }
    ssize_t n;
    do n = ::recv(fd_.get(), buf, size, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN) return std::nullopt;
    if (n < 0) throw std::runtime_error("recv: " + errno_message(errno));
    return static_cast<size_t>(n);
  }

  // The TLS handshake as far as the socket lets it go: true once it is done.
  bool handshake() {
    if (!ssl_) start_tls();
    ERR_clear_error();
    int ok = SSL_connect(ssl_.get());
    if (!tls_step(ok, errno, "TLS handshake with ")) return false;
    if (ok != 1) throw std::runtime_error("TLS handshake with " + server() + ": the server closed the connection");
    state_ = State::sending;
    return true;
  }

  // An SSL over fd_ that sends the host's name (SNI) and, verifying, wants
  // a certificate for that name, or for that address when the host is one.
  void start_tls() {
    SslCtxPtr own = tls_.verify && tls_.extra_cas.empty() ? SslCtxPtr() : client_context(tls_);
    ssl_.reset(SSL_new(own ? own.get() : system_context()));  // holds its own reference to the context
    if (!ssl_) throw_openssl("TLS with " + server());
    BIO* bio = BIO_new(socket_bio_method());
    if (!bio) throw_openssl("TLS with " + server());
    BIO_set_data(bio, reinterpret_cast<void*>(static_cast<intptr_t>(fd_.get())));
    BIO_set_init(bio, 1);
    SSL_set_bio(ssl_.get(), bio, bio);  // ssl_ owns it now
    const std::string& host = target_.host;
    bool ip = is_ip_address(host);
    bool ok = ip || SSL_set_tlsext_host_name(ssl_.get(), host.c_str()) == 1;  // no SNI for an address (RFC 6066)
    if (ok && tls_.verify)
      ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_.get()), host.c_str()) == 1
              : SSL_set1_host(ssl_.get(), host.c_str()) == 1;
    if (!ok) throw_openssl("TLS with " + server() + ": the host name");
    SSL_set_connect_state(ssl_.get());
  }

  // After an SSL call that returned `ok` (errno then `sys`): false when it
  // must wait for the socket, true when it succeeded or found the server's
  // end of the stream; any other failure is thrown, naming the server and
  // OpenSSL's reason (with the certificate check's own after "certificate
  // verify failed").
  bool tls_step(int ok, int sys, const char* doing) {
    if (ok == 1) return true;
    int error = SSL_get_error(ssl_.get(), ok);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) return false;
    if (error == SSL_ERROR_ZERO_RETURN) return true;
    unsigned long e = ERR_peek_error();
    std::string reason = openssl_reason();
    if (reason.empty())
      reason = error == SSL_ERROR_SYSCALL && sys != 0 ? errno_message(sys) : "the server closed the connection";
    if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED)
      reason += std::string(": ") + X509_verify_cert_error_string(SSL_get_verify_result(ssl_.get()));
    ERR_clear_error();
    throw std::runtime_error(doing + server() + ": " + reason);
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
  TlsOptions tls_;
  int64_t chunk_;
  Clock::time_point deadline_;
  State state_ = State::start;
  kj::AutoCloseFd fd_;
  SslPtr ssl_;  // https, once connected: reads and writes fd_ through its BIO
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
  TlsOptions tls;
  tls.verify = !args.boolean("disable_ssl_security").value_or(false) && !args.boolean("skip_verify").value_or(false);
  if (auto pem = args.string("root_ca"); pem && !pem->empty()) {
    tls.extra_cas = parse_pem_certificates(*pem, error);
    if (!error.empty()) args.fail("root_ca", error);
  }
  return std::make_unique<HttpStream>(url, std::move(request), std::move(*target), std::move(tls), chunk,
                                      std::chrono::seconds(timeout));
}

}  // namespace

void add_http_client(Registry& r) {
  r.add(PluginSpec{
      "http_client",
      "An HTTP/1.1 request (http://, https://, or a Unix socket as /path/to.sock:unix/api/path): a row {Url, "
      "Content, Response (the status), Headers (name: list of values)} per chunk_size bytes of body; a failure "
      "(a TLS one names the host and OpenSSL's reason) is one row with Response 500 and the error as Content. "
      "https checks the certificate against the system's CAs and root_ca's, and the URL's host name or address. "
      "Redirects are not followed.",
      {{"url", "string", true, ""},
       {"method", "string", false, "default GET"},
       {"params", "dict", false, "query parameters (GET) or a form body"},
       {"headers", "dict", false, ""},
       {"data", "string", false, "the body"},
       {"chunk_size", "int", false, "bytes of body per row (default 4 MiB)"},
       {"user_agent", "string", false, ""},
       {"timeout", "int", false, "seconds for the whole request (default 60)"},
       {"root_ca", "string", false, "https: PEM certificates of CAs to trust besides the system's"},
       {"skip_verify", "bool", false, "https: accept any certificate, for any name"},
       {"disable_ssl_security", "bool", false, "the same as skip_verify (its older name)"}},
      false, http_client});
}

}  // namespace outpost::vql
