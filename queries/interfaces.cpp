// interfaces(), Velociraptor's list of network interfaces (Go's
// net.Interfaces() with each one's Addrs() and MulticastAddrs()), and
// rate(), whose state per call site only the engine can keep (rate_step).

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if_arp.h>
#include <netpacket/packet.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>

#include "queries/engine.hpp"
#include "queries/linux_util.hpp"

namespace outpost::vql {
namespace {

struct Interface {
  std::string name;
  int64_t index = 0;
  unsigned flags = 0;
  std::string hardware;  // raw bytes; empty when none (or all zero)
  List addrs, addr_strings, multicast, multicast_strings;
};

// Go's net.Flags.String(): the set flags by name, "|"-joined; "0" for none.
std::string flag_names(unsigned flags) {
  static const std::pair<unsigned, const char*> kNames[] = {
      {IFF_UP, "up"},           {IFF_BROADCAST, "broadcast"}, {IFF_LOOPBACK, "loopback"},
      {IFF_POINTOPOINT, "pointtopoint"}, {IFF_MULTICAST, "multicast"}, {IFF_RUNNING, "running"}};
  std::string out;
  for (auto& [bit, name] : kNames)
    if (flags & bit) out += (out.empty() ? "" : "|") + std::string(name);
  return out.empty() ? "0" : out;
}

// Go's HardwareAddr.String(): lower-case hex bytes joined by ':'.
std::string hex_colons(const std::string& bytes) {
  std::string out;
  char buf[4];
  for (unsigned char b : bytes) {
    std::snprintf(buf, sizeof buf, out.empty() ? "%02x" : ":%02x", b);
    out += buf;
  }
  return out;
}

constexpr unsigned kArphrdIp6Gre = 823;  // Linux's ARPHRD_IP6GRE, which glibc's <net/if_arp.h> lacks

// The link address, as Go keeps it: none when all zero (lo), nor a tunnel's
// IP address (ipip, sit, gre: their link "address" is the tunnel end).
std::string hardware_of(const sockaddr_ll& ll) {
  std::string bytes(reinterpret_cast<const char*>(ll.sll_addr), std::min<size_t>(ll.sll_halen, sizeof ll.sll_addr));
  bool tunnel = (bytes.size() == 4 && (ll.sll_hatype == ARPHRD_TUNNEL || ll.sll_hatype == ARPHRD_SIT ||
                                       ll.sll_hatype == ARPHRD_IPGRE)) ||
                (bytes.size() == 16 && (ll.sll_hatype == ARPHRD_TUNNEL6 || ll.sll_hatype == kArphrdIp6Gre));
  bool zero = std::all_of(bytes.begin(), bytes.end(), [](char c) { return c == 0; });
  return tunnel || zero ? std::string() : bytes;
}

// {IP, Mask} (Go's *net.IPNet, the mask its raw bytes) and its CIDR text.
void add_address(Interface& i, const sockaddr* addr, const sockaddr* mask) {
  bool v4 = addr->sa_family == AF_INET;
  const void* ip = v4 ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(addr)->sin_addr)
                      : &reinterpret_cast<const sockaddr_in6*>(addr)->sin6_addr;
  size_t length = v4 ? 4 : 16;
  std::string mask_bytes(length, '\0');
  if (mask) {
    const void* m = v4 ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(mask)->sin_addr)
                       : &reinterpret_cast<const sockaddr_in6*>(mask)->sin6_addr;
    std::memcpy(mask_bytes.data(), m, length);
  }
  int prefix = 0;
  for (unsigned char b : mask_bytes) prefix += __builtin_popcount(b);
  char text[INET6_ADDRSTRLEN];
  ::inet_ntop(addr->sa_family, ip, text, sizeof text);
  Dict net;
  net.set("IP", std::string(text));
  net.set("Mask", mask_bytes);
  i.addrs.push_back(std::move(net));
  i.addr_strings.push_back(std::string(text) + "/" + std::to_string(prefix));
}

void add_multicast(std::map<std::string, Interface>& by_name, const std::string& name, int family,
                   const void* ip) {
  auto it = by_name.find(name);
  if (it == by_name.end()) return;
  char text[INET6_ADDRSTRLEN];
  ::inet_ntop(family, ip, text, sizeof text);
  Dict addr;  // Go's *net.IPAddr
  addr.set("IP", std::string(text));
  addr.set("Zone", "");
  it->second.multicast.push_back(std::move(addr));
  it->second.multicast_strings.push_back(std::string(text));
}

// The groups joined, as Go reads them: <proc>/net/igmp (the group in hex,
// the kernel printing the network-order word as a native integer), then
// <proc>/net/igmp6 (index, name, the group as 32 hex digits, ...).
void read_multicast(const Paths& paths, std::map<std::string, Interface>& by_name) {
  if (auto text = read_small_file((paths.proc / "net/igmp").string(), 1 << 20)) {
    std::string device;
    for (auto line : split(*text, '\n')) {
      auto f = split_ws(line);
      if (f.size() < 2 || line.empty()) continue;
      if (line[0] != ' ' && line[0] != '\t') {
        device = std::string(f[1]);
        if (!device.empty() && device.back() == ':') device.pop_back();
      } else if (auto group = parse_number<uint32_t>(f[0], 16); group && f[0].size() == 8) {
        in_addr a{*group};
        add_multicast(by_name, device, AF_INET, &a);
      }
    }
  }
  if (auto text = read_small_file((paths.proc / "net/igmp6").string(), 1 << 20)) {
    for (auto line : split(*text, '\n')) {
      auto f = split_ws(line);
      if (f.size() < 6 || f[2].size() != 32) continue;
      in6_addr a;
      bool ok = true;
      for (size_t b = 0; b < 16 && ok; ++b) {
        auto byte = parse_number<uint8_t>(f[2].substr(2 * b, 2), 16);
        ok = byte.has_value();
        a.s6_addr[b] = byte.value_or(0);
      }
      if (ok) add_multicast(by_name, std::string(f[1]), AF_INET6, &a);
    }
  }
}

// <sys>/class/net/<name>/mtu, else SIOCGIFMTU; 0 when neither answers.
int64_t mtu_of(const Paths& paths, const std::string& name) {
  if (auto text = read_small_file((paths.sys / "class/net" / name / "mtu").string())) {
    while (!text->empty() && std::isspace(static_cast<unsigned char>(text->back()))) text->pop_back();
    if (auto mtu = parse_number<int64_t>(*text)) return *mtu;
  }
  ifreq req{};
  if (name.size() >= sizeof req.ifr_name) return 0;
  std::memcpy(req.ifr_name, name.c_str(), name.size());
  kj::AutoCloseFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  return sock.get() >= 0 && ::ioctl(sock.get(), SIOCGIFMTU, &req) == 0 ? req.ifr_mtu : 0;
}

std::vector<Row> interface_rows(const Paths& paths) {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) throw QueryError("interfaces(): getifaddrs: " + errno_message(errno));
  std::unique_ptr<ifaddrs, void (*)(ifaddrs*)> owned(list, ::freeifaddrs);
  std::map<std::string, Interface> by_name;
  for (ifaddrs* a = list; a; a = a->ifa_next) {
    std::string name = a->ifa_name ? a->ifa_name : "";
    // An IPv4 alias's label ("eth0:1") names its address only: Go lists it under the link.
    if (!by_name.count(name) && name.find(':') != std::string::npos) name.resize(name.find(':'));
    Interface& i = by_name[name];
    if (i.name.empty()) {
      i.name = name;
      i.index = ::if_nametoindex(name.c_str());
      i.flags = a->ifa_flags;
    }
    if (!a->ifa_addr) continue;
    if (a->ifa_addr->sa_family == AF_PACKET) {
      i.flags = a->ifa_flags;  // the link's own flags
      i.hardware = hardware_of(*reinterpret_cast<const sockaddr_ll*>(a->ifa_addr));
    } else if (a->ifa_addr->sa_family == AF_INET || a->ifa_addr->sa_family == AF_INET6) {
      add_address(i, a->ifa_addr, a->ifa_netmask);
    }
  }
  read_multicast(paths, by_name);
  std::vector<Interface*> order;
  for (auto& [name, i] : by_name) order.push_back(&i);
  std::stable_sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->index < b->index; });
  std::vector<Row> rows;
  for (Interface* i : order) {
    auto yn = [&](unsigned bit) { return Value(i->flags & bit ? "Y" : "N"); };
    Row row;
    row.set("Name", i->name);
    row.set("HardwareAddr", i->hardware.empty() ? Value() : Value(i->hardware));
    row.set("MTU", mtu_of(paths, i->name));
    row.set("Index", i->index);
    row.set("Flags", flag_names(i->flags));
    row.set("Loopback", yn(IFF_LOOPBACK));
    row.set("PointToPoint", yn(IFF_POINTOPOINT));
    row.set("Up", yn(IFF_UP));
    row.set("HardwareAddrString", hex_colons(i->hardware));
    row.set("Addrs", i->addrs.empty() ? Value() : Value(std::move(i->addrs)));  // Go's nil slice: null
    row.set("AddrsString", std::move(i->addr_strings));
    row.set("MulticastAddrs", i->multicast.empty() ? Value() : Value(std::move(i->multicast)));
    row.set("MulticastAddrsString", std::move(i->multicast_strings));
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace

// One step of Velociraptor's rate(x=, y=) at one call site: `state` is that
// site's slot (NULL before its first row; then the list [x, y] of the last
// row). The first row gives NULL; each later one (x - x0) / (y - y0) as a
// float, or NULL when y did not change (Outpost's division by zero). A
// missing or non-number x or y gives NULL and leaves the state alone.
// The engine calls it with the call's own Aggregates slot (eval.cpp): a
// FunctionSpec knows neither its call site nor its GROUP BY group.
Value rate_step(Value& state, const Value& x, const Value& y) {
  auto nx = x.number(), ny = y.number();
  if (!nx || !ny) return Value();
  const List* last = state.as_list();
  Value out;
  if (last && last->size() == 2) {
    double dy = *ny - *(*last)[1].number();
    if (dy != 0) out = (*nx - *(*last)[0].number()) / dy;
  }
  state = List{Value(*nx), Value(*ny)};
  return out;
}

void add_interface_plugins(Registry& r) {
  r.add(PluginSpec{"interfaces",
                   "Network interfaces as Go's net.Interfaces() lists them: Name, HardwareAddr (raw bytes, NULL "
                   "when none), MTU, Index, Flags (\"up|broadcast|...\"), Loopback, PointToPoint, Up (\"Y\"/\"N\"), "
                   "HardwareAddrString (\"aa:bb:...\"), Addrs ([{IP, Mask}], NULL when none), AddrsString (CIDRs), "
                   "MulticastAddrs ([{IP, Zone}], NULL when none), MulticastAddrsString.",
                   {}, false, [](const Args&, Env& env) -> std::unique_ptr<RowStream> {
                     return rows_stream(interface_rows(*env.paths));
                   }});
  // As count() is (functions.cpp): the spec names the arguments for checks;
  // the engine evaluates the calls itself, as aggregates, with rate_step.
  r.add(FunctionSpec{"rate",
                     "(x - x0) / (y - y0), x0 and y0 the previous row's at this call (of the SELECT, or of the "
                     "row's GROUP BY group); NULL for the first row and when y did not change.",
                     {{"x", "number", true, ""}, {"y", "number", true, ""}},
                     [](const Args&, Env&) -> Value {
                       throw QueryError("rate(): evaluated by the engine, not called");  // a bug if reached
                     }});
}

}  // namespace outpost::vql
