// connections(), Velociraptor's gopsutil-based socket list, and the process
// tracker's functions as Velociraptor answers them without a tracker: from
// pslist()'s rows, kept for 10 s (process_tracker_get, _callchain, _tree).

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <mutex>
#include <set>
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
    List ids;
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
    return uids_.emplace(pid, Value(std::move(ids))).first->second;
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

// ---- the process tracker's fallback

// Velociraptor's fallback keeps its pslist() this long.
constexpr auto kTrackerLifetime = std::chrono::seconds(10);
// A call chain has at most kMaxChain processes; a tree, as Velociraptor
// counts, at most kMaxTreeDepth + 1 levels below its root.
constexpr int kMaxChain = 10;
constexpr int kMaxTreeDepth = 20;

struct Process {
  std::string id, parent_id;  // the pid and ppid as text
  Timestamp start;
  Row data;                          // pslist()'s row with Pid, Ppid, StartTime and EndTime the tracker's
  std::vector<std::string> children;  // ids, by pid
};

struct Processes {
  std::vector<Process> all;  // by pid
  std::unordered_map<std::string, size_t> by_id;
  const Process* find(const std::string& id) const {
    auto it = by_id.find(id);
    return it == by_id.end() ? nullptr : &all[it->second];
  }
};

// pslist()'s rows, all at once (the registry's pslist, as Velociraptor calls
// its own); none when the engine has no pslist.
std::vector<Row> pslist_rows(Env& env) {
  const PluginSpec* pslist = env.engine ? env.engine->registry().plugin("pslist") : nullptr;
  std::vector<Row> rows;
  if (!pslist) return rows;
  auto stream = pslist->make(Args("pslist", {}), env);
  for (Step step = Step::more(); step.state == Step::State::more;) step = stream->next(rows, 1000);
  return rows;
}

std::shared_ptr<const Processes> load_processes(Env& env) {
  auto p = std::make_shared<Processes>();
  for (auto& row : pslist_rows(env)) {
    auto pid = row.find("Pid"), ppid = row.find("Ppid"), created = row.find("CreateTime");
    if (!pid || !pid->as_int() || !ppid || !ppid->as_int() || !created) continue;
    Process process{std::to_string(*pid->as_int()), std::to_string(*ppid->as_int()),
                    created->as_timestamp() ? *created->as_timestamp() : Timestamp{}, std::move(row), {}};
    process.data.set("Pid", process.id);
    process.data.set("Ppid", process.parent_id);
    process.data.set("StartTime", process.start);
    process.data.set("EndTime", Timestamp{});  // running: Go's zero time upstream, the epoch here
    p->all.push_back(std::move(process));
  }
  std::sort(p->all.begin(), p->all.end(), [](const Process& a, const Process& b) {
    return std::make_pair(a.id.size(), a.id) < std::make_pair(b.id.size(), b.id);  // numerically
  });
  for (size_t i = 0; i < p->all.size(); ++i) p->by_id.emplace(p->all[i].id, i);
  for (auto& process : p->all) {
    auto parent = p->by_id.find(process.parent_id);
    if (parent != p->by_id.end() && process.parent_id != process.id)
      p->all[parent->second].children.push_back(process.id);
  }
  return p;
}

// The processes of the last 10 s, shared by every query in the process; read
// again when older or when asked for other proc or passwd paths (one set is
// kept). Read outside the lock, so that no worker waits on another's /proc
// scan (two may read at once; the later one is kept). Immutable once made:
// what leaves it is copied (set() may change a result in place).
std::shared_ptr<const Processes> processes(Env& env) {
  static std::mutex mutex;
  static std::string key;
  static std::chrono::steady_clock::time_point loaded;
  static std::shared_ptr<const Processes> cached;
  std::string paths = env.paths->proc.string() + '\0' + env.paths->passwd.string();
  auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (cached && key == paths && now - loaded < kTrackerLifetime) return cached;
  }
  auto fresh = load_processes(env);
  std::lock_guard<std::mutex> lock(mutex);
  cached = fresh;
  key = paths;
  loaded = now;
  return fresh;
}

// A copy of `v` sharing no dict or list with it.
Value copy_of(const Value& v) {
  if (auto d = v.as_dict()) {
    Dict out;
    for (auto& [k, item] : d->items()) out.set(k, copy_of(item));
    return out;
  }
  if (auto l = v.as_list()) {
    List out;
    out.reserve(l->size());
    for (auto& item : *l) out.push_back(copy_of(item));
    return out;
  }
  return v;
}

Value data_of(const Process& p) {
  Dict out;
  for (auto& [k, item] : p.data.items()) out.set(k, copy_of(item));
  return out;
}

// An entry as the tracker gives it: {Id, ParentId, StartTime, EndTime, Data, Children}.
Value entry_of(const Process& p) {
  Dict e;
  e.set("Id", p.id);
  e.set("ParentId", p.parent_id);
  e.set("StartTime", p.start);
  e.set("EndTime", Timestamp{});
  e.set("Data", data_of(p));
  List children(p.children.begin(), p.children.end());
  e.set("Children", std::move(children));
  return e;
}

Value tracker_get(const Args& args, Env& env) {
  auto p = processes(env);
  auto process = p->find(required_string(args, "id"));
  return process ? entry_of(*process) : Value();
}

// The process's ancestors from the oldest known down to it.
Value tracker_callchain(const Args& args, Env& env) {
  std::string id = required_string(args, "id");
  int64_t max_items = args.integer("max_items").value_or(0);
  if (max_items == 0) max_items = 10;
  auto p = processes(env);
  std::vector<const Process*> chain;
  for (int depth = 0; depth < kMaxChain; ++depth) {
    const Process* process = p->find(id);
    if (!process || std::find(chain.begin(), chain.end(), process) != chain.end()) break;
    chain.push_back(process);
    if (static_cast<int64_t>(chain.size()) > max_items) break;  // max_items + 1, as Velociraptor
    id = process->parent_id;
  }
  List out;
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) out.push_back(entry_of(**it));
  return out;
}

// process_tracker_tree()'s nodes: {name, id, start_time, data, children}.
class TreeBuilder {
 public:
  TreeBuilder(const Processes& processes, Env& env, int64_t max_items)
      : processes_(processes), env_(env), left_(max_items - 1) {}

  // `depth` counts the levels above `p`'s children, as Velociraptor's does.
  Dict node(const Process& p, int depth) {
    Dict n;
    auto name = p.data.find("Name");
    n.set("name", name && name->as_string() ? *name : Value(p.id));
    n.set("id", p.id);
    n.set("start_time", p.start);
    n.set("data", data_of(p));
    std::vector<std::pair<int64_t, Dict>> children;
    bool complete = true;
    for (size_t i = 0; depth <= kMaxTreeDepth && i < p.children.size(); ++i) {
      const Process* child = processes_.find(p.children[i]);
      if (!child || !seen_.insert(child->id).second) continue;
      if (--left_ < 0) {
        log_row_error(env_, "process_tracker_tree(): more than max_items processes in the tree: truncated");
        complete = false;
        break;
      }
      children.emplace_back(child->start.ns, node(*child, depth + 1));
    }
    if (complete)  // a truncated level stays in pid order, as Velociraptor leaves it unsorted
      std::stable_sort(children.begin(), children.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
    List list;
    for (auto& child : children) list.push_back(std::move(child.second));
    n.set("children", list.empty() ? Value() : Value(std::move(list)));  // Go's nil slice: null
    return n;
  }

 private:
  const Processes& processes_;
  Env& env_;
  int64_t left_;
  std::set<std::string> seen_;
};

Value tracker_tree(const Args& args, Env& env) {
  if (auto callback = args.find("data_callback"); callback && !dynamic_cast<const Lambda*>(callback->as_object()))
    args.fail("data_callback", "expected a lambda");
  int64_t max_items = args.integer("max_items").value_or(0);
  if (max_items == 0) max_items = 1000;
  auto p = processes(env);
  auto root = p->find(args.string("id").value_or(""));
  if (!root) return Value();
  return TreeBuilder(*p, env, max_items).node(*root, 0);
}

}  // namespace

void add_netstat_plugins(Registry& r) {
  r.add(PluginSpec{"connections",
                   "Sockets (TCP, UDP, unix) as gopsutil gives them: FD, Family (AF_INET, AF_INET6, AF_UNIX), Type "
                   "(TCP, UCP for datagrams as upstream spells it, or a number), Laddr {IP, Port}, Raddr {IP, Port}, "
                   "Status (ESTABLISHED, LISTEN, ..., NONE), Pid (0: unknown), Uids.",
                   {}, false, [](const Args&, Env& env) -> std::unique_ptr<RowStream> {
                     return std::make_unique<ConnectionsStream>(*env.paths);
                   }});
  const std::string fallback = " Without a process tracker: from pslist(), ids the pids as text, kept 10 s.";
  r.add(FunctionSpec{"process_tracker_get",
                     "A process: {Id, ParentId, StartTime, EndTime, Data (its pslist() row), Children (ids)}, or "
                     "NULL." + fallback,
                     {{"id", "string", true, "the process id"}, {"max_items", "int", false, "accepted, unused"}},
                     tracker_get});
  r.add(FunctionSpec{"process_tracker_callchain",
                     "A process and its ancestors, oldest first, as process_tracker_get() gives them." + fallback,
                     {{"id", "string", true, "the process id"},
                      {"max_items", "int", false, "stop after max_items + 1 processes (default 10; 10 at most)"}},
                     tracker_callchain});
  r.add(FunctionSpec{"process_tracker_tree",
                     "A process and its descendants: {name, id, start_time, data, children [...]}, children by "
                     "start time, 21 levels deep at most; NULL for an unknown id." + fallback,
                     {{"id", "string", false, "the process id"},
                      {"data_callback", "lambda", false, "accepted, unused (as upstream)"},
                      {"max_items", "int", false, "processes in the tree at most (default 1000)"}},
                     tracker_tree});
}

}  // namespace outpost::vql
