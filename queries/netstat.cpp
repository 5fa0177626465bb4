// connections(), Velociraptor's gopsutil-based socket list.

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <unordered_map>
#include <unordered_set>

#include "queries/engine.hpp"
#include "queries/linux_util.hpp"

namespace outpost::vql {
namespace {

namespace fs = std::filesystem;

// ---- connections()

// Directory entries or links read per call while mapping sockets to processes.
constexpr int kScanOps = 256;
// /proc/<pid>/status files read per call for the rows' Uids.
constexpr int kStatusReads = 64;

// Holder{}, pid and fd 0: nobody found (as gopsutil says it).
using Holder = SocketHolders::Holder;

struct SocketTable {
  const char* file;
  int family;
  int type;  // 0: on each line (unix)
};
constexpr SocketTable kTables[] = {{"tcp", AF_INET, SOCK_STREAM},
                                   {"tcp6", AF_INET6, SOCK_STREAM},
                                   {"udp", AF_INET, SOCK_DGRAM},
                                   {"udp6", AF_INET6, SOCK_DGRAM},
                                   {"unix", AF_UNIX, 0}};

struct Endpoint {
  std::string ip;
  int64_t port = 0;
};

// The bytes of an even run of hex digits.
std::optional<std::vector<uint8_t>> hex_bytes(std::string_view s) {
  if (s.size() % 2) return std::nullopt;
  std::vector<uint8_t> out;
  for (size_t i = 0; i < s.size(); i += 2) {
    auto byte = parse_number<uint8_t>(s.substr(i, 2), 16);
    if (!byte) return std::nullopt;
    out.push_back(*byte);
  }
  return out;
}

// An address as Go's net.IP prints it: IPv4 (and IPv4-mapped IPv6) dotted,
// IPv6 in RFC 5952 form (the first longest run of two or more zero groups as "::").
std::string ip_text(const uint8_t* b, size_t size) {
  char text[64];
  bool mapped = size == 16 && std::all_of(b, b + 10, [](uint8_t x) { return x == 0; }) && b[10] == 0xff &&
                b[11] == 0xff;
  if (size == 4 || mapped) {
    const uint8_t* v4 = size == 4 ? b : b + 12;
    std::snprintf(text, sizeof text, "%u.%u.%u.%u", v4[0], v4[1], v4[2], v4[3]);
    return text;
  }
  unsigned groups[8];
  for (int i = 0; i < 8; ++i) groups[i] = unsigned{b[2 * i]} << 8 | b[2 * i + 1];
  int best = -1, best_len = 0;
  for (int i = 0; i < 8;) {
    int j = i;
    while (j < 8 && groups[j] == 0) ++j;
    if (j - i > best_len && j - i >= 2) best = i, best_len = j - i;
    i = j == i ? i + 1 : j;
  }
  std::string out;
  for (int i = 0; i < 8; ++i) {
    if (i == best) {
      out += "::";
      i += best_len - 1;
      continue;
    }
    if (!out.empty() && out.back() != ':') out += ':';
    std::snprintf(text, sizeof text, "%x", groups[i]);
    out += text;
  }
  return out;
}

// "0100007F:0050": the address's 32-bit words in host byte order, then the
// port, in hex.
std::optional<Endpoint> parse_endpoint(std::string_view s, bool v6) {
  auto parts = split(s, ':');
  if (parts.size() != 2) return std::nullopt;
  auto port = parse_number<uint16_t>(parts[1], 16);
  auto bytes = hex_bytes(parts[0]);
  if (!port || !bytes || bytes->size() != (v6 ? 16u : 4u)) return std::nullopt;
  if (htonl(1) != 1)  // little endian: each word's bytes reversed give the network order
    for (size_t word = 0; word < bytes->size(); word += 4)
      std::reverse(bytes->begin() + word, bytes->begin() + word + 4);
  return Endpoint{ip_text(bytes->data(), bytes->size()), int64_t{*port}};
}

// gopsutil's names of the TCP states; "" for one it does not know (NEW_SYN_RECV).
std::string tcp_status(std::string_view hex) {
  static const char* const kNames[] = {"",          "ESTABLISHED", "SYN_SENT",   "SYN_RECV",
                                       "FIN_WAIT1", "FIN_WAIT2",   "TIME_WAIT",  "CLOSE",
                                       "CLOSE_WAIT", "LAST_ACK",   "LISTEN",     "CLOSING"};
  for (size_t i = 1; i < std::size(kNames); ++i) {
    char code[4];
    std::snprintf(code, sizeof code, "%02X", static_cast<unsigned>(i));
    if (hex == code) return kNames[i];
  }
  return "";
}

Value endpoint_value(const Endpoint& e) {
  Dict d;  // Velociraptor's keys are "ip" and "port", read case-insensitively; the artifacts write IP and Port
  d.set("IP", e.ip);
  d.set("Port", e.port);
  return d;
}

class ConnectionsStream : public RowStream {
 public:
  explicit ConnectionsStream(const Paths& paths) : proc_(paths.proc), holders_(paths.proc) {
    if (holders_.error())
      throw QueryError("connections(): cannot read " + proc_.string() + ": " + errno_message(holders_.error()));
  }

  Step next(std::vector<Row>& out, size_t budget) override {
    if (!scanned_) {
      scanned_ = holders_.scan(kScanOps);
      return Step::more();
    }
    size_t added = flush(out, budget);
    reader_.new_slice();
    status_reads_ = 0;
    std::string line;
    while (added < budget && status_reads_ < kStatusReads && table_ < std::size(kTables)) {
      if (!open_) {
        reader_ = LineReader();
        open_ = reader_.open(proc_ / "net" / kTables[table_].file) == 0;
        header_ = true;
        if (!open_) ++table_;  // a missing table is skipped
        continue;
      }
      auto result = reader_.next(line);
      if (result == LineReader::Result::again) return Step::more();
      if (result == LineReader::Result::end) {
        open_ = false;
        ++table_;
      } else if (!std::exchange(header_, false)) {
        if (kTables[table_].type) inet_line(line, kTables[table_]);
        else unix_line(line);
        added += flush(out, budget - added);
      }
    }
    return table_ < std::size(kTables) || !pending_.empty() ? Step::more() : Step::done();
  }

 private:
  size_t flush(std::vector<Row>& out, size_t budget) {
    size_t n = 0;
    for (; n < budget && !pending_.empty(); ++n) {
      out.push_back(std::move(pending_.front()));
      pending_.pop_front();
    }
    return n;
  }

  //  sl  local_address rem_address   st tx_queue:rx_queue tr:tm->when retrnsmt   uid  timeout inode
  //   0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000   0        0 21765
  void inet_line(std::string_view line, const SocketTable& table) {
    auto f = split_ws(line);
    if (f.size() < 10) return;
    bool v6 = table.family == AF_INET6;
    auto local = parse_endpoint(f[1], v6), remote = parse_endpoint(f[2], v6);
    if (!local || !remote) return;
    std::string status = table.type == SOCK_STREAM ? tcp_status(f[3]) : "NONE";
    auto holders = holders_of(f[9]);
    Holder holder = holders && !holders->empty() ? holders->front() : Holder{};
    add(holder, table.family, table.type, *local, *remote, status,
        std::to_string(table.type) + "-" + local->ip + ":" + std::to_string(local->port) + "-" + remote->ip + ":" +
            std::to_string(remote->port) + "-" + status);
  }

  // Num       RefCount Protocol Flags    Type St Inode Path
  // 0000000000000000: 00000002 00000000 00010000 0001 01 21765 /run/systemd/notify
  void unix_line(std::string_view line) {
    auto f = split_ws(line);
    if (f.size() < 7) return;
    auto type = parse_number<int>(f[4]);  // hex in the file, read as decimal as gopsutil does (1, 2, 5)
    if (!type) return;
    Endpoint local{f.size() == 8 ? std::string(f[7]) : std::string(), 0};
    auto holders = holders_of(f[6]);
    static const std::vector<Holder> kNobody{Holder{}};
    for (const Holder& h : holders && !holders->empty() ? *holders : kNobody)
      add(h, AF_UNIX, *type, local, Endpoint{}, "NONE",
          std::to_string(h.pid) + "-" + std::to_string(h.fd) + "-" + std::string(f[6]) + "-" + std::string(f[4]) +
              "-" + local.ip);
  }

  // The holders of the inode a table's line names (in decimal), or nullptr.
  const std::vector<Holder>* holders_of(std::string_view inode) const {
    auto number = parse_number<uint64_t>(inode);
    return number ? holders_.find(*number) : nullptr;
  }

  void add(const Holder& h, int family, int type, const Endpoint& local, const Endpoint& remote,
           const std::string& status, std::string key) {
    if (!seen_.insert(std::move(key)).second) return;  // gopsutil's deduplication
    Row row;
    row.set("FD", h.fd);
    row.set("Family", family == AF_INET ? "AF_INET" : family == AF_INET6 ? "AF_INET6" : "AF_UNIX");
    row.set("Type", type == SOCK_STREAM ? "TCP" : type == SOCK_DGRAM ? "UCP" : std::to_string(type));  // sic
    row.set("Laddr", endpoint_value(local));
    row.set("Raddr", endpoint_value(remote));
    row.set("Status", status);
    row.set("Pid", h.pid);
    row.set("Uids", uids(h.pid));
    pending_.push_back(std::move(row));
  }

  // The process's real, effective, saved and filesystem uids; [] when unknown.
  Value uids(int64_t pid) {
    auto it = uids_.find(pid);
    if (it != uids_.end()) return it->second;
    std::vector<int64_t> ids;
    if (pid > 0) {
      ++status_reads_;
      std::string status = read_small_file(proc_ / std::to_string(pid) / "status").value_or("");
      for (auto line : split(status, '\n')) {
        if (line.substr(0, 4) != "Uid:") continue;
        for (auto field : split_ws(line.substr(4))) {
          auto id = parse_number<int64_t>(field);
          if (!id) {
            ids.clear();
            break;
          }
          ids.push_back(*id);
        }
        break;
      }
    }
    return uids_.emplace(pid, Value(List(ids.begin(), ids.end()))).first->second;
  }

  fs::path proc_;
  SocketHolders holders_;
  bool scanned_ = false;
  size_t table_ = 0;
  bool open_ = false, header_ = false;
  LineReader reader_;
  std::deque<Row> pending_;
  std::unordered_set<std::string> seen_;
  std::unordered_map<int64_t, Value> uids_;
  int status_reads_ = 0;
};

}  // namespace

void add_netstat_plugins(Registry& r) {
  r.add(PluginSpec{"connections",
                   "Sockets (TCP, UDP, unix) as gopsutil gives them: FD, Family (AF_INET, AF_INET6, AF_UNIX), Type "
                   "(TCP, UCP for datagrams as upstream spells it, or a number), Laddr {IP, Port}, Raddr {IP, Port}, "
                   "Status (ESTABLISHED, LISTEN, ..., NONE), Pid (0: unknown), Uids.",
                   {}, false, [](const Args&, Env& env) -> std::unique_ptr<RowStream> {
                     return std::make_unique<ConnectionsStream>(*env.paths);
                   }});
}

}  // namespace outpost::vql
