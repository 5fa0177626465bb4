// http_client() against real servers: a Unix socket (as Docker's API is
// reached) and TCP on 127.0.0.1, a chunked body, and the failures.

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "queries/engine.hpp"
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
    ::close(fd_);
  }
  const std::string& request() {
    thread_.join();
    thread_ = std::thread([] {});
    return request_;
  }

 private:
  int fd_;
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
  EXPECT_THROW(run("SELECT * FROM http_client(url='https://example.com/')"), QueryError);
  EXPECT_THROW(run("SELECT * FROM http_client(url='ftp://x/')"), QueryError);
}

}  // namespace
}  // namespace outpost::vql
