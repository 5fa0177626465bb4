#pragma once
// Network events from the kernel (eBPF; bpf/net.bpf.c): TCP connections
// made, accepted and ended, with the 5-tuple and the process; DNS messages
// over UDP (port 53) with the process that sent the query; the first bytes a
// process sends on a TCP connection (for HTTP request lines). Programs are
// loaded by group, each only when a query asks for its events. A record the
// ring buffer had no room for is counted (take_lost), never silent.
//
// Kernel requirements beyond the process events': the raw tracepoints
// inet_sock_set_state and (for the first bytes) tcp_sendmsg_locked (recent kernels only),
// a BTF-typed tracepoint on sys_exit (accept, by 64-bit processes and, on
// x86, 32-bit ones: without it the tcp group gives connects and closes
// only), and cgroup v2 mounted (DNS).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace outpost::vql {

struct NetEvent {
  enum class Kind { connect, accept, close, dns_query, dns_answer, tcp_data };
  Kind kind = Kind::connect;
  uint64_t time_ns = 0;  // wall clock
  // The process: the current one, or (close, DNS answers) the one recorded
  // at connect, accept or the socket's last query; unknown: pid 0.
  int32_t pid = 0, tid = 0;
  int64_t uid = -1;
  std::string comm;
  int family = 0;    // AF_INET, AF_INET6
  int protocol = 0;  // IPPROTO_TCP, IPPROTO_UDP
  std::string local_ip, remote_ip;  // as inet_ntop writes them
  uint16_t local_port = 0, remote_port = 0;
  int32_t result = 0;      // connect: 0 established, else failed; close: the TCP state it closed from
  int32_t closer_pid = 0;  // close: the process whose close() or shutdown() sent the FIN; 0 unknown
  uint64_t duration_ns = 0;  // connect: from the SYN to the outcome
  uint64_t socket = 0;       // pairs events of one socket (kernel address, or cookie for UDP)
  uint32_t message_bytes = 0;  // DNS: the UDP payload; data: the send's length
  std::string data;            // DNS: the message (512 bytes at most); data: the first 256 bytes
  bool cut = false;            // data holds only the first bytes
};

// Groups of programs, loaded together.
enum class NetGroup { tcp, dns, tcp_data };
const char* net_group_name(NetGroup group);

// Thread: one reader (the sensor's); interrupt() from any thread.
class NetEventSource {
 public:
  // Events of its group this source cannot report, and why.
  struct Unavailable {
    NetEvent::Kind kind;
    std::string why;
  };
  virtual ~NetEventSource() = default;
  // As ProcessEventSource::read.
  virtual bool read(std::vector<NetEvent>& out, int timeout_ms) = 0;
  virtual uint64_t take_lost() = 0;
  virtual void interrupt() const = 0;
  // Set when it opened; any thread.
  virtual std::vector<Unavailable> unavailable() const { return {}; }
};

struct NetSourceOptions {
  uint64_t ring_buffer_bytes = 1 << 20;
  // The BTF tracepoint accept's program attaches to (tests name one whose
  // arguments are not sys_exit's, which the kernel's verifier refuses, to
  // see the tcp group go on without accept events).
  std::string accept_tracepoint = "sys_exit";
};

// Loads and attaches `group`'s programs; throws std::runtime_error naming
// what is missing (privilege, BTF, cgroup v2) or what the kernel refused.
// The tcp group opens without its accept program when only that one fails
// (unavailable() says why; a warning is logged).
std::unique_ptr<NetEventSource> open_net_events(NetGroup group, const NetSourceOptions& options);

}  // namespace outpost::vql
