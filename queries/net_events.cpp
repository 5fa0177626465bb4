// watch_ebpf()'s network events: rows in tracee's shape (as Velociraptor's
// artifacts read them) from the network programs' records (kernel_net.hpp),
// one sensor per group of programs.

#include <netinet/in.h>
#include <sys/socket.h>

#include "queries/kernel_net.hpp"
#include "queries/kernel_process.hpp"
#include "queries/kernel_scanner.hpp"
#include "queries/net_decode.hpp"

namespace outpost::vql {
namespace {

// tracee's sockaddr argument: {sa_family, sin_port, sin_addr}, or sin6_*,
// values as text.
Dict sockaddr(const NetEvent& e, const std::string& ip, uint16_t port) {
  Dict a;
  bool v6 = e.family == AF_INET6;
  a.set("sa_family", v6 ? "AF_INET6" : "AF_INET");
  a.set(v6 ? "sin6_port" : "sin_port", std::to_string(port));
  a.set(v6 ? "sin6_addr" : "sin_addr", ip);
  return a;
}

// Local and remote as source and destination: a query goes out, an answer comes in.
struct Direction {
  const std::string& src_ip;
  const std::string& dst_ip;
  uint16_t src_port, dst_port;
};
Direction direction(const NetEvent& e) {
  if (e.kind == NetEvent::Kind::dns_answer) return {e.remote_ip, e.local_ip, e.remote_port, e.local_port};
  return {e.local_ip, e.remote_ip, e.local_port, e.remote_port};
}

Dict metadata(const NetEvent& e) {
  auto d = direction(e);
  Dict m;
  m.set("src_ip", d.src_ip);
  m.set("dst_ip", d.dst_ip);
  m.set("src_port", int64_t{d.src_port});
  m.set("dst_port", int64_t{d.dst_port});
  m.set("protocol", int64_t{e.protocol});
  m.set("packet_len", int64_t{e.message_bytes});
  m.set("iface", "any");  // the programs see the socket, not the interface (tracee's "any" too)
  m.set("direction", e.kind == NetEvent::Kind::dns_answer ? "ingress" : "egress");
  return m;
}

const char* event_name(NetEvent::Kind kind) {
  switch (kind) {
    case NetEvent::Kind::connect: return "security_socket_connect";
    case NetEvent::Kind::accept: return "security_socket_accept";
    case NetEvent::Kind::close: return "net_flow_tcp_end";
    case NetEvent::Kind::dns_query:
    case NetEvent::Kind::dns_answer: return "net_packet_dns";
    case NetEvent::Kind::tcp_data: return "net_packet_http_request";
  }
  return "?";
}

// The event's row; none for first bytes that are no HTTP request.
void add_rows(const NetEvent& e, const std::string& host, std::vector<Row>& rows) {
  Dict data;
  switch (e.kind) {
    case NetEvent::Kind::connect:
      data.set("remote_addr", sockaddr(e, e.remote_ip, e.remote_port));
      data.set("local_addr", sockaddr(e, e.local_ip, e.local_port));
      data.set("established", e.result == 0);
      data.set("duration_ns", static_cast<int64_t>(e.duration_ns));
      break;
    case NetEvent::Kind::accept:
      data.set("local_addr", sockaddr(e, e.local_ip, e.local_port));
      data.set("remote_addr", sockaddr(e, e.remote_ip, e.remote_port));
      break;
    case NetEvent::Kind::close:
      data.set("src", e.local_ip);
      data.set("dst", e.remote_ip);
      data.set("src_port", int64_t{e.local_port});
      data.set("dst_port", int64_t{e.remote_port});
      data.set("closer_pid", int64_t{e.closer_pid});
      break;
    case NetEvent::Kind::dns_query:
    case NetEvent::Kind::dns_answer: {
      auto d = direction(e);
      data.set("src", d.src_ip);
      data.set("dst", d.dst_ip);
      data.set("src_port", int64_t{d.src_port});
      data.set("dst_port", int64_t{d.dst_port});
      data.set("metadata", metadata(e));
      std::string problem;
      data.set("proto_dns", decode_dns(e.data, e.cut, problem));
      if (!problem.empty()) data.set("dns_problem", problem);
      break;
    }
    case NetEvent::Kind::tcp_data: {
      Value request = parse_http_request(e.data, e.cut);
      if (request.is_null()) return;
      data.set("metadata", metadata(e));
      data.set("http_request", std::move(request));
      break;
    }
  }
  SystemFields f;
  f.time_ns = e.time_ns;
  f.event = event_name(e.kind);
  bool known = e.pid != 0;
  f.pid = known ? Value(int64_t{e.pid}) : Value();
  f.tid = known ? Value(int64_t{e.tid}) : Value();
  f.uid = known && e.uid >= 0 ? Value(e.uid) : Value();
  f.comm = e.comm;
  Row row;
  row.reserve(2);
  row.set("System", system_row(f, host));
  row.set("EventData", std::move(data));
  rows.push_back(std::move(row));
}

}  // namespace

std::unique_ptr<Scanner> net_scanner(const std::string& group, const NetSourceOptions& options) {
  NetGroup g = group == "dns" ? NetGroup::dns : group == "tcp_data" ? NetGroup::tcp_data : NetGroup::tcp;
  return std::make_unique<KernelScanner<NetEventSource, NetEvent>>(
      [g, options] { return open_net_events(g, options); },
      [host = host_name()](const NetEvent& e, std::vector<Row>& rows) { add_rows(e, host, rows); },
      [](const NetEventSource&) { return std::string("ebpf"); },
      [](const NetEventSource& source) {
        // A query asking for one of these fails with why, rather than wait for events that cannot come.
        std::vector<Scanner::Refusal> refusals;
        for (auto& u : source.unavailable()) {
          Dict system;
          system.set("EventName", event_name(u.kind));
          Scanner::Refusal r;
          r.example.set("System", std::move(system));
          r.why = std::string(event_name(u.kind)) + " cannot be watched here (the others can: ask without it): " + u.why;
          refusals.push_back(std::move(r));
        }
        return refusals;
      });
}

}  // namespace outpost::vql
