// http_client() against real servers: a Unix socket (as Docker's API is
// reached) and TCP on 127.0.0.1, a chunked body, and the failures; https
// against a TLS server on 127.0.0.1 whose CA and certificates the tests make
// at run time with OpenSSL (nothing read from disk, no network).

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include <kj/io.h>

#include "queries/engine.hpp"
#include "queries/openssl_ptr.hpp"
#include "tests/vql_test_util.hpp"

namespace outpost::vql {
namespace {

// Answers one connection with `response`, keeping the request it read.
class OneShotServer {
 public:
  OneShotServer(int fd, std::string response) : fd_(fd) {
    thread_ = std::thread([this, response] {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      char buf[4096];
      while (request_.find("\r\n\r\n") == std::string::npos) {
        ssize_t n = ::read(c, buf, sizeof buf);
        if (n <= 0) break;
        request_.append(buf, static_cast<size_t>(n));
      }
      (void)!::write(c, response.data(), response.size());
      ::close(c);
    });
  }
  ~OneShotServer() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
  }
  const std::string& request() {
    thread_.join();
    thread_ = std::thread([] {});
    return request_;
  }

 private:
  kj::AutoCloseFd fd_;
  std::string request_;
  std::thread thread_;
};

std::vector<Row> run(const std::string& vql) { return run_rows(default_registry(), vql, Waits::sleep); }

TEST(HttpClient, AUnixSocketLikeDockersWithAChunkedBody) {
  std::string path = "/tmp/outpost-http-" + std::to_string(::getpid()) + ".sock";
  ::unlink(path.c_str());
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strcpy(a.sun_path, path.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  OneShotServer server(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "7\r\n{\"ID\": \r\n4\r\n\"x\"}\r\n0\r\n\r\n");
  auto rows = run("SELECT Response, Content, parse_json(data=Content).ID AS ID, Headers FROM http_client(url='" + path +
                  ":unix/info', headers=dict(`X-Test`='1'))");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(to_json(rows[0]), "{\"Response\":200,\"Content\":\"{\\\"ID\\\": \\\"x\\\"}\",\"ID\":\"x\",\"Headers\":{"
                              "\"Content-Type\":[\"application/json\"],\"Transfer-Encoding\":[\"chunked\"]}}");
  std::string request = server.request();
  EXPECT_EQ(request.rfind("GET /info HTTP/1.1\r\n", 0), 0u) << request;
  EXPECT_NE(request.find("\r\nX-Test: 1\r\n"), std::string::npos) << request;
  ::unlink(path.c_str());
}

TEST(HttpClient, TcpWithParamsAndABodyInChunksOfRows) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  OneShotServer server(fd, "HTTP/1.0 404 Not Found\r\nContent-Length: 10\r\n\r\n0123456789");
  auto rows = run("SELECT Response, Content FROM http_client(url='http://127.0.0.1:" + std::to_string(ntohs(a.sin_port)) +
                  "/a', params=dict(q='x y', n=1), chunk_size=4)");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(to_json(rows[0]), "{\"Response\":404,\"Content\":\"0123\"}");
  EXPECT_EQ(to_json(rows[2]), "{\"Response\":404,\"Content\":\"89\"}");
  EXPECT_EQ(server.request().rfind("GET /a?q=x%20y&n=1 HTTP/1.1\r\n", 0), 0u);
}

TEST(HttpClient, FailuresAreOneRowWithResponse500) {
  auto rows = run("SELECT Response, Content FROM http_client(url='/nonexistent/outpost.sock:unix/info')");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(to_json(rows[0]), "{\"Response\":500,\"Content\":\"connect to /nonexistent/outpost.sock: No such file or "
                              "directory\"}");
  EXPECT_THROW(run("SELECT * FROM http_client(url='https:///no-host')"), QueryError);
  EXPECT_THROW(run("SELECT * FROM http_client(url='ftp://x/')"), QueryError);
  EXPECT_THROW(run("SELECT * FROM http_client(url='https://127.0.0.1:1/', root_ca='not PEM')"), QueryError);
}

// --- https ---


// A listening TCP socket on 127.0.0.1, on a port the kernel chose.
int listen_loopback(int& port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0 || ::listen(fd, 1) != 0)
    throw std::runtime_error("cannot listen on 127.0.0.1: " + std::string(std::strerror(errno)));
  port = ntohs(a.sin_port);
  return fd;
}

// Reads and writes on a server's connection give up after 30 s, so that a
// client that never finishes cannot hang the server's thread.
void bound_waits(int fd) {
  timeval limit{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
}

std::string openssl_error() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  const char* reason = e ? ERR_reason_error_string(e) : nullptr;
  return reason ? reason : "failed (OpenSSL gave no reason)";
}

void add_extension(X509* cert, X509V3_CTX& ctx, int nid, const char* value) {
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (!ext || X509_add_ext(cert, ext, -1) != 1) throw std::runtime_error("extension " + std::string(value));
  X509_EXTENSION_free(ext);
}

// An X.509 v3 certificate for `key`, valid from an hour ago for a day: a CA's
// (self-signed) when issuer is null, else a TLS server's with subjectAltName `san`.
X509Ptr make_certificate(EVP_PKEY* key, const char* common_name, X509* issuer, EVP_PKEY* issuer_key,
                         const char* san = nullptr) {
  static long serial = 0;
  X509Ptr cert(X509_new());
  X509* c = cert.get();
  X509_set_version(c, X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(c), ++serial);
  X509_gmtime_adj(X509_getm_notBefore(c), -3600);
  X509_gmtime_adj(X509_getm_notAfter(c), 86400);
  X509_set_pubkey(c, key);
  X509_NAME* name = X509_get_subject_name(c);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(common_name), -1, -1, 0);
  X509_set_issuer_name(c, issuer ? X509_get_subject_name(issuer) : name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer ? issuer : c, c, nullptr, nullptr, 0);
  add_extension(c, ctx, NID_basic_constraints, issuer ? "critical,CA:FALSE" : "critical,CA:TRUE");
  add_extension(c, ctx, NID_key_usage, issuer ? "critical,digitalSignature" : "critical,keyCertSign,cRLSign");
  add_extension(c, ctx, NID_subject_key_identifier, "hash");
  if (issuer) {
    add_extension(c, ctx, NID_authority_key_identifier, "keyid:always");
    add_extension(c, ctx, NID_ext_key_usage, "serverAuth");
    add_extension(c, ctx, NID_subject_alt_name, san);
  }
  if (X509_sign(c, issuer ? issuer_key : key, EVP_sha256()) <= 0)
    throw std::runtime_error("X509_sign: " + openssl_error());
  return cert;
}

EvpPkeyPtr make_key() {
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) throw std::runtime_error("EC key generation: " + openssl_error());
  return key;
}

// A test CA and two server certificates it signed: `cert` for 127.0.0.1 and
// localhost, `other_cert` for other.example only. Made once per run.
struct Pki {
  EvpPkeyPtr ca_key = make_key(), key = make_key();
  X509Ptr ca = make_certificate(ca_key.get(), "Outpost test CA", nullptr, nullptr);
  X509Ptr cert = make_certificate(key.get(), "127.0.0.1", ca.get(), ca_key.get(), "IP:127.0.0.1,DNS:localhost");
  X509Ptr other_cert = make_certificate(key.get(), "other.example", ca.get(), ca_key.get(), "DNS:other.example");
  std::string ca_pem = pem(ca.get());

  static std::string pem(X509* cert) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    PEM_write_bio_X509(bio.get(), cert);
    char* data = nullptr;
    long size = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<size_t>(size));
  }
};
const Pki& pki() {
  static const Pki made;
  return made;
}

// Serves one https connection on 127.0.0.1 with `cert` (sent alone, without
// its CA): the handshake, one request read, `response` written, close_notify.
// Keeps the request and, when the handshake failed, OpenSSL's reason.
class TlsServer {
 public:
  TlsServer(X509* cert, EVP_PKEY* key, std::string response) : fd_(listen_loopback(port_)) {
    ctx_.reset(SSL_CTX_new(TLS_server_method()));
    if (!ctx_ || SSL_CTX_use_certificate(ctx_.get(), cert) != 1 || SSL_CTX_use_PrivateKey(ctx_.get(), key) != 1)
      throw std::runtime_error("server context: " + openssl_error());
    thread_ = std::thread([this, response] { serve(response); });
  }
  ~TlsServer() {
    join();
  }
  std::string url(const std::string& path) const { return "https://127.0.0.1:" + std::to_string(port_) + path; }
  std::string where() const { return "127.0.0.1:" + std::to_string(port_); }
  // Once the client is done.
  const std::string& request() { return join(), request_; }
  const std::string& handshake_error() { return join(), handshake_error_; }

 private:
  // Called once the client is done: a connection it made has been accepted
  // by then, and shutting the listener down wakes an accept() still waiting
  // for one it never made.
  void join() {
    ::shutdown(fd_, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
  }
  void serve(const std::string& response) {
    int c = ::accept(fd_, nullptr, nullptr);
    if (c < 0) return;
    bound_waits(c);
    SslPtr ssl(SSL_new(ctx_.get()));
    SSL_set_fd(ssl.get(), c);
    if (SSL_accept(ssl.get()) != 1) {
      handshake_error_ = openssl_error();
    } else {
      char buf[4096];
      while (request_.find("\r\n\r\n") == std::string::npos) {
        int n = SSL_read(ssl.get(), buf, sizeof buf);
        if (n <= 0) break;
        request_.append(buf, static_cast<size_t>(n));
      }
      SSL_write(ssl.get(), response.data(), static_cast<int>(response.size()));
      SSL_shutdown(ssl.get());
    }
    ssl.reset();
    ::close(c);
  }

  int port_ = 0;
  kj::AutoCloseFd fd_;
  SslCtxPtr ctx_;
  std::string request_, handshake_error_;
  std::thread thread_;
};

// Accepts one TCP connection and never answers; keeps what the client sent,
// and whether the client then closed the connection (rather than the 30 s
// bound ending the wait).
class SilentServer {
 public:
  SilentServer() : fd_(listen_loopback(port_)) {
    thread_ = std::thread([this] {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      bound_waits(c);
      char buf[4096];
      ssize_t n;
      while ((n = ::read(c, buf, sizeof buf)) > 0) received_.append(buf, static_cast<size_t>(n));
      client_closed_ = n == 0;
      ::close(c);
    });
  }
  ~SilentServer() {
    join();
  }
  std::string url() const { return "https://127.0.0.1:" + std::to_string(port_) + "/"; }
  // Once the client is done (these wait for the server's thread to see it close).
  const std::string& received() { return join(), received_; }
  bool client_closed() { return join(), client_closed_; }

 private:
  // Called once the client is done: a connection it made has been accepted
  // by then, and shutting the listener down wakes an accept() still waiting
  // for one it never made.
  void join() {
    ::shutdown(fd_, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
  }

  int port_ = 0;
  kj::AutoCloseFd fd_;
  std::string received_;
  bool client_closed_ = false;
  std::thread thread_;
};

// Every row of `vql`, its waits slept; a query still going after `cap` fails
// the test there instead of hanging it. The stream (and so its socket) is
// gone on return.
std::vector<Row> run_capped(const std::string& vql, std::vector<Binding> params = {},
                            std::chrono::seconds cap = std::chrono::seconds(20)) {
  Engine engine(default_registry());
  Env env;
  auto stream = engine.start(vql, std::move(params), env);
  std::vector<Row> rows;
  auto give_up = std::chrono::steady_clock::now() + cap;
  for (;;) {
    Step s = stream->next(rows, 1000);
    if (s.state == Step::State::done) return rows;
    if (std::chrono::steady_clock::now() > give_up) {
      ADD_FAILURE() << "the query was still going after " << cap.count() << " s";
      return rows;
    }
    if (s.state == Step::State::wait) std::this_thread::sleep_for(s.wait);
  }
}

std::vector<Binding> trusting_the_test_ca() { return {{"CA", Value(pki().ca_pem), nullptr}}; }

std::string content(const Row& row) {
  const Value* v = row.find("Content");
  return v && v->as_string() ? *v->as_string() : "(no Content)";
}

int64_t status(const Row& row) {
  const Value* v = row.find("Response");
  return v && v->as_int() ? *v->as_int() : -1;
}

TEST(HttpClient, HttpsTrustingTheTestCaGetsTheBody) {
  std::string body(40000, 'x');  // more than one TLS record (16 KiB)
  body.replace(0, 5, "hello");
  TlsServer server(pki().cert.get(), pki().key.get(),
                   "HTTP/1.1 200 OK\r\nContent-Length: 40000\r\n\r\n" + body);
  auto rows = run_capped("SELECT Response, Content FROM http_client(url='" + server.url("/tls") + "', root_ca=CA)",
                         trusting_the_test_ca());
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(status(rows[0]), 200) << content(rows[0]);
  EXPECT_EQ(content(rows[0]).size(), body.size());
  EXPECT_TRUE(content(rows[0]) == body);
  EXPECT_EQ(server.handshake_error(), "");
  EXPECT_EQ(server.request().rfind("GET /tls HTTP/1.1\r\nHost: 127.0.0.1\r\n", 0), 0u) << server.request();
}

TEST(HttpClient, HttpsWithoutTheCaFailsNamingTheHostAndTheReason) {
  TlsServer server(pki().cert.get(), pki().key.get(), "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno");
  auto rows = run_capped("SELECT Response, Content FROM http_client(url='" + server.url("/") + "')");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(to_json(rows[0]), "{\"Response\":500,\"Content\":\"TLS handshake with " + server.where() +
                                  ": certificate verify failed: unable to get local issuer certificate\"}");
  // The client gave up in the handshake (its alert is the server's error): no request went out.
  EXPECT_NE(server.handshake_error().find("unknown ca"), std::string::npos) << server.handshake_error();
  EXPECT_EQ(server.request(), "");
}

TEST(HttpClient, HttpsWithSslSecurityDisabledTakesAnyCertificate) {
  // Signed by a CA the client does not know, for a name that is not the URL's.
  TlsServer server(pki().other_cert.get(), pki().key.get(), "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  auto rows = run_capped("SELECT Response, Content FROM http_client(url='" + server.url("/") +
                         "', disable_ssl_security=TRUE)");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(to_json(rows[0]), "{\"Response\":200,\"Content\":\"ok\"}");
  EXPECT_EQ(server.request().rfind("GET / HTTP/1.1\r\n", 0), 0u) << server.request();
}

TEST(HttpClient, HttpsRefusesACertificateForAnotherName) {
  // The test CA signed it, but for other.example only, and the URL says 127.0.0.1.
  TlsServer server(pki().other_cert.get(), pki().key.get(), "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno");
  auto rows = run_capped("SELECT Response, Content FROM http_client(url='" + server.url("/") + "', root_ca=CA)",
                         trusting_the_test_ca());
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(to_json(rows[0]), "{\"Response\":500,\"Content\":\"TLS handshake with " + server.where() +
                                  ": certificate verify failed: IP address mismatch\"}");
  EXPECT_NE(server.handshake_error().find("bad certificate"), std::string::npos) << server.handshake_error();
  EXPECT_EQ(server.request(), "");
}

TEST(HttpClient, HttpsToAServerThatNeverSpeaksTlsTimesOut) {
  SilentServer server;
  auto started = std::chrono::steady_clock::now();
  auto rows = run_capped("SELECT Response, Content FROM http_client(url='" + server.url() + "', timeout=1)");
  auto took = std::chrono::steady_clock::now() - started;
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(to_json(rows[0]), "{\"Response\":500,\"Content\":\"no response in time\"}");
  EXPECT_GE(took, std::chrono::seconds(1));
  // It had sent a ClientHello (a TLS handshake record, type 22) and closed the connection once it gave up.
  ASSERT_FALSE(server.received().empty());
  EXPECT_EQ(server.received()[0], '\x16');
  EXPECT_TRUE(server.client_closed());
}

}  // namespace
}  // namespace outpost::vql
