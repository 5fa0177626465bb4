#include "queries/net_decode.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <iterator>
#include <map>
#include <vector>

// The names and values follow tracee's types (types/trace/network_trace.go)
// as its derive code fills them from gopacket's DNS layer (layers/dns.go):
// type and class as gopacket's String() names them, opCode and
// responseCode lower-cased, every record carrying every field.

namespace outpost::vql {

std::string ip_text(int family, const uint8_t* addr) {
  char text[INET6_ADDRSTRLEN] = {};
  if ((family != AF_INET && family != AF_INET6) || !inet_ntop(family, addr, text, sizeof text)) return "";
  return text;
}

namespace {

constexpr size_t kHeaderSize = 12;
constexpr size_t kMaxRecords = 64;  // kept per section
constexpr size_t kMaxName = 255;    // wire bytes, the root's zero included
constexpr size_t kMaxPointers = 64;

// Record types that have RDATA decoded (RFC 1035, 3596, 2782, 6891, 7553).
enum : uint16_t {
  kA = 1,
  kNS = 2,
  kCNAME = 5,
  kSOA = 6,
  kPTR = 12,
  kHINFO = 13,
  kMX = 15,
  kTXT = 16,
  kAAAA = 28,
  kSRV = 33,
  kOPT = 41,
  kURI = 256
};

const char* type_name(uint16_t type) {
  static const char* const low[] = {nullptr, "A",    "NS",  "MD",  "MF",    "CNAME", "SOA", "MB", "MG",
                                    "MR",    "NULL", "WKS", "PTR", "HINFO", "MINFO", "MX",  "TXT"};
  if (type < std::size(low) && low[type]) return low[type];
  switch (type) {
    case kAAAA: return "AAAA";
    case kSRV: return "SRV";
    case kOPT: return "OPT";
    case kURI: return "URI";
    default: return "Unknown";
  }
}

const char* class_name(uint16_t cls) {
  switch (cls) {
    case 1: return "IN";
    case 2: return "CS";
    case 3: return "CH";
    case 4: return "HS";
    case 255: return "Any";
    default: return "Unknown";
  }
}

const char* opcode_name(unsigned op) {
  static const char* const names[] = {"query", "inverse query", "status", "unknown", "notify", "update"};
  return op < std::size(names) ? names[op] : "unknown";
}

// gopacket's names, lower-cased; its "Server Failure " loses the stray space.
const char* rcode_name(unsigned rc) {
  static const char* const names[] = {"no error",
                                      "format error",
                                      "server failure",
                                      "non-existent domain",
                                      "not implemented",
                                      "query refused",
                                      "name exists when it should not",
                                      "rr set exists when it should not",
                                      "rr set that should exist does not",
                                      "server not authoritative for zone",
                                      "name not contained in zone"};
  if (rc < std::size(names)) return names[rc];
  switch (rc) {
    case 16: return "bad opt version";
    case 17: return "key not recognized";
    case 18: return "signature out of time window";
    case 19: return "bad tkey mode";
    case 20: return "duplicate key name";
    case 21: return "algorithm not supported";
    case 22: return "bad truncation";
    case 23: return "bad cookie";
    default: return "unknown";
  }
}

const char* option_name(uint16_t code) {
  switch (code) {
    case 3: return "NSID";
    case 5: return "DAU";
    case 6: return "DHU";
    case 7: return "N3U";
    case 8: return "EDNSClientSubnet";
    case 9: return "EDNSExpire";
    case 10: return "Cookie";
    case 11: return "EDNSKeepAlive";
    case 12: return "CodePadding";
    case 13: return "CodeChain";
    case 14: return "CodeEDNSKeyTag";
    case 16: return "EDNSClientTag";
    case 17: return "EDNSServerTag";
    case 26946: return "DeviceID";
    default: return "Unknown";
  }
}

// Why decoding stopped. `ran_out`: the bytes ended where more were due,
// which a cut message may do.
struct Failure {
  bool ran_out = false;
  std::string what;
};

bool fail(Failure& f, bool ran_out, std::string what) {
  f.ran_out = ran_out;
  f.what = std::move(what);
  return false;
}

uint16_t u16(std::string_view m, size_t at) {
  return static_cast<uint16_t>(static_cast<uint8_t>(m[at]) << 8 | static_cast<uint8_t>(m[at + 1]));
}

uint32_t u32(std::string_view m, size_t at) { return uint32_t{u16(m, at)} << 16 | u16(m, at + 2); }

// The name at `pos`, labels joined by dots ("" for the root). Its bytes in
// place must end by `limit` (npos: the message's end, where a cut message
// may run out); those a pointer leads to, by the message's end. `next` is
// the byte after the bytes in place.
bool read_name(std::string_view m, size_t pos, size_t limit, std::string& name, size_t& next, Failure& f) {
  name.clear();
  size_t end = std::min(limit, m.size()), wire = 1, pointers = 0;
  std::array<size_t, kMaxPointers> seen{};
  while (true) {
    if (pos >= end) return fail(f, limit == std::string_view::npos, "name runs past the end");
    const uint8_t len = static_cast<uint8_t>(m[pos]);
    if (len == 0) {
      if (pointers == 0) next = pos + 1;
      return true;
    }
    if ((len & 0xC0) == 0xC0) {
      if (end - pos < 2) return fail(f, limit == std::string_view::npos, "name pointer runs past the end");
      if (pointers == 0) next = pos + 2;
      const size_t target = u16(m, pos) & 0x3FFF;
      for (size_t i = 0; i < pointers; ++i)
        if (seen[i] == target) return fail(f, false, "name pointer loops");
      if (pointers == kMaxPointers) return fail(f, false, "name has more than 64 pointers");
      seen[pointers++] = target;
      if (target >= m.size())
        return fail(f, true,
                    "name pointer to byte " + std::to_string(target) + ", past the end (" + std::to_string(m.size()) +
                        " bytes)");
      pos = target;
      end = m.size();
      limit = std::string_view::npos;
      continue;
    }
    if (len & 0xC0) return fail(f, false, "label type " + std::to_string(len & 0xC0) + " unsupported");
    if (end - pos - 1 < len) return fail(f, limit == std::string_view::npos, "label runs past the end");
    wire += 1 + len;
    if (wire > kMaxName) return fail(f, false, "name longer than 255 bytes");
    if (!name.empty()) name += '.';
    name.append(m.substr(pos + 1, len));
    pos += 1 + len;
  }
}

// One resource record's fields, all of them, as tracee gives them.
struct Record {
  std::string name, ip, ns, cname, ptr, txt, soa_mname, soa_rname, srv_name, mx_name, uri_target;
  uint16_t type = 0, cls = 0, srv_priority = 0, srv_weight = 0, srv_port = 0, mx_preference = 0, uri_priority = 0,
           uri_weight = 0;
  uint32_t ttl = 0, soa_serial = 0, soa_refresh = 0, soa_retry = 0, soa_expire = 0, soa_minimum = 0;
  List txts, opts;
};

Value record_value(Record r) {
  Dict soa;
  soa.set("MName", std::move(r.soa_mname));
  soa.set("RName", std::move(r.soa_rname));
  soa.set("serial", int64_t{r.soa_serial});
  soa.set("refresh", int64_t{r.soa_refresh});
  soa.set("retry", int64_t{r.soa_retry});
  soa.set("expire", int64_t{r.soa_expire});
  soa.set("minimum", int64_t{r.soa_minimum});
  Dict srv;
  srv.set("priority", int64_t{r.srv_priority});
  srv.set("weight", int64_t{r.srv_weight});
  srv.set("port", int64_t{r.srv_port});
  srv.set("name", std::move(r.srv_name));
  Dict mx;
  mx.set("preference", int64_t{r.mx_preference});
  mx.set("name", std::move(r.mx_name));
  Dict uri;
  uri.set("priority", int64_t{r.uri_priority});
  uri.set("weight", int64_t{r.uri_weight});
  uri.set("target", std::move(r.uri_target));
  Dict d;
  d.reserve(15);
  d.set("name", std::move(r.name));
  d.set("type", type_name(r.type));
  d.set("class", class_name(r.cls));
  d.set("TTL", int64_t{r.ttl});
  d.set("IP", std::move(r.ip));
  d.set("NS", std::move(r.ns));
  d.set("CNAME", std::move(r.cname));
  d.set("PTR", std::move(r.ptr));
  d.set("TXTs", std::move(r.txts));
  d.set("SOA", std::move(soa));
  d.set("SRV", std::move(srv));
  d.set("MX", std::move(mx));
  d.set("OPT", std::move(r.opts));
  d.set("URI", std::move(uri));
  d.set("TXT", std::move(r.txt));
  return d;
}

// The RDATA in [at, end), which lies within the message.
bool read_rdata(std::string_view m, size_t at, size_t end, Record& r, Failure& f) {
  const size_t size = end - at;
  size_t next = 0;
  const auto need = [&](size_t bytes) {
    return bytes <= size || fail(f, false,
                                 std::string(type_name(r.type)) + " rdata is " + std::to_string(size) +
                                     " bytes, needs at least " + std::to_string(bytes));
  };
  switch (r.type) {
    case kA:
    case kAAAA: {
      const size_t want = r.type == kA ? 4 : 16;
      if (size != want)
        return fail(f, false,
                    std::string(type_name(r.type)) + " rdata is " + std::to_string(size) + " bytes, needs " +
                        std::to_string(want));
      r.ip = ip_text(r.type == kA ? AF_INET : AF_INET6, reinterpret_cast<const uint8_t*>(m.data() + at));
      return true;
    }
    case kTXT:
    case kHINFO:
      r.txt = std::string(m.substr(at, size));
      for (size_t i = at; i < end;) {
        const size_t len = static_cast<uint8_t>(m[i]);
        if (i + 1 + len > end) return fail(f, false, std::string(type_name(r.type)) + " string runs past its record");
        r.txts.emplace_back(m.substr(i + 1, len));
        i += 1 + len;
      }
      return true;
    case kNS: return read_name(m, at, end, r.ns, next, f);
    case kCNAME: return read_name(m, at, end, r.cname, next, f);
    case kPTR: return read_name(m, at, end, r.ptr, next, f);
    case kSOA:
      if (!read_name(m, at, end, r.soa_mname, next, f) || !read_name(m, next, end, r.soa_rname, next, f)) return false;
      if (end - next < 20) return fail(f, false, "SOA rdata lacks its 20 bytes of numbers");
      r.soa_serial = u32(m, next);
      r.soa_refresh = u32(m, next + 4);
      r.soa_retry = u32(m, next + 8);
      r.soa_expire = u32(m, next + 12);
      r.soa_minimum = u32(m, next + 16);
      return true;
    case kMX:
      if (!need(3)) return false;
      r.mx_preference = u16(m, at);
      return read_name(m, at + 2, end, r.mx_name, next, f);
    case kSRV:
      if (!need(7)) return false;
      r.srv_priority = u16(m, at);
      r.srv_weight = u16(m, at + 2);
      r.srv_port = u16(m, at + 4);
      return read_name(m, at + 6, end, r.srv_name, next, f);
    case kURI:
      if (!need(4)) return false;
      r.uri_priority = u16(m, at);
      r.uri_weight = u16(m, at + 2);
      r.uri_target = std::string(m.substr(at + 4, size - 4));
      return true;
    case kOPT:
      for (size_t i = at; i < end;) {
        if (end - i < 4) return fail(f, false, "OPT option header runs past its record");
        const size_t len = u16(m, i + 2);
        if (end - i - 4 < len) return fail(f, false, "OPT option runs past its record");
        Dict opt;
        opt.set("code", option_name(u16(m, i)));
        opt.set("data", m.substr(i + 4, len));
        r.opts.emplace_back(std::move(opt));
        i += 4 + len;
      }
      return true;
    default: return true;  // kept undecoded, as tracee does
  }
}

bool read_question(std::string_view m, size_t& pos, Value& out, Failure& f) {
  std::string name;
  size_t next = 0;
  if (!read_name(m, pos, std::string_view::npos, name, next, f)) return false;
  if (m.size() - next < 4) return fail(f, true, "type and class run past the end");
  Dict q;
  q.set("name", std::move(name));
  q.set("type", type_name(u16(m, next)));
  q.set("class", class_name(u16(m, next + 2)));
  out = std::move(q);
  pos = next + 4;
  return true;
}

bool read_record(std::string_view m, size_t& pos, Record& r, Failure& f) {
  size_t next = 0;
  if (!read_name(m, pos, std::string_view::npos, r.name, next, f)) return false;
  if (m.size() - next < 10) return fail(f, true, "type, class, TTL and length run past the end");
  r.type = u16(m, next);
  r.cls = u16(m, next + 2);
  r.ttl = u32(m, next + 4);
  const size_t size = u16(m, next + 8), at = next + 10;
  if (m.size() - at < size) return fail(f, true, "rdata of " + std::to_string(size) + " bytes runs past the end");
  if (!read_rdata(m, at, at + size, r, f)) return false;
  pos = at + size;
  return true;
}

}  // namespace

Value decode_dns(std::string_view m, bool cut, std::string& problem) {
  problem.clear();
  if (m.size() < kHeaderSize) {
    problem = "header: " + std::to_string(m.size()) + " bytes, needs 12";
    return {};
  }
  const uint8_t b2 = static_cast<uint8_t>(m[2]), b3 = static_cast<uint8_t>(m[3]);
  const uint16_t counts[4] = {u16(m, 4), u16(m, 6), u16(m, 8), u16(m, 10)};
  static const char* const kWhere[4] = {"question", "answer", "authority", "additional"};
  static const char* const kKeys[4] = {"questions", "answers", "authorities", "additionals"};
  List sections[4];
  unsigned rcode = b3 & 0x0F;
  size_t pos = kHeaderSize;
  Failure f;
  bool stopped = false;  // a cut message ended
  for (int s = 0; s < 4 && !stopped; ++s) {
    for (size_t i = 0; i < counts[s]; ++i) {
      Value item;
      Record r;
      const bool ok = s == 0 ? read_question(m, pos, item, f) : read_record(m, pos, r, f);
      if (!ok) {
        const std::string where = std::string(kWhere[s]) + " " + std::to_string(i + 1) + ": ";
        if (!(cut && f.ran_out)) {
          problem = where + f.what;
          return {};
        }
        problem = where + "cut short (" + f.what + ")";
        stopped = true;
        break;
      }
      if (s == 3 && r.type == kOPT) rcode |= (r.ttl >> 20) & 0xF0;  // EDNS extended RCODE (RFC 6891)
      if (sections[s].size() < kMaxRecords)
        sections[s].push_back(s == 0 ? std::move(item) : record_value(std::move(r)));
    }
    if (counts[s] > kMaxRecords && problem.empty())
      problem = std::string(kKeys[s]) + ": " + std::to_string(counts[s]) + " records, kept the first 64";
  }
  Dict d;
  d.reserve(17);
  d.set("ID", int64_t{u16(m, 0)});
  d.set("QR", int64_t{b2 >> 7});
  d.set("opCode", opcode_name((b2 >> 3) & 0x0F));
  d.set("AA", int64_t{(b2 >> 2) & 1});
  d.set("TC", int64_t{(b2 >> 1) & 1});
  d.set("RD", int64_t{b2 & 1});
  d.set("RA", int64_t{b3 >> 7});
  d.set("Z", int64_t{(b3 >> 4) & 7});
  d.set("responseCode", rcode_name(rcode));
  d.set("QDCount", int64_t{counts[0]});
  d.set("ANCount", int64_t{counts[1]});
  d.set("NSCount", int64_t{counts[2]});
  d.set("ARCount", int64_t{counts[3]});
  for (int s = 0; s < 4; ++s) d.set(kKeys[s], std::move(sections[s]));
  return d;
}

namespace {

// HTTP's token characters (RFC 9110 5.6.2).
bool is_token_char(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (const char c : s)
    if (!is_token_char(c)) return false;
  return true;
}

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }
char upper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c; }

bool equal_fold(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// "content-length" as Go's textproto writes it: "Content-Length".
std::string canonical_key(std::string_view key) {
  std::string out(key);
  bool start = true;
  for (char& c : out) {
    c = start ? upper(c) : lower(c);
    start = c == '-';
  }
  return out;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %XX decoded, as Go's URL.Path has it; left as it is if an escape is bad.
std::string unescape_path(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '%') {
      out += raw[i];
      continue;
    }
    const int hi = i + 2 < raw.size() ? hex_digit(raw[i + 1]) : -1, lo = hi < 0 ? -1 : hex_digit(raw[i + 2]);
    if (lo < 0) return std::string(raw);
    out += static_cast<char>(hi << 4 | lo);
    i += 2;
  }
  return out;
}

// The request target's host (absolute form only) and path, as Go's
// url.ParseRequestURI splits them. False when Go would refuse the target.
bool split_target(std::string_view method, std::string_view target, std::string& host, std::string& path) {
  target = target.substr(0, target.find('?'));
  if (method == "CONNECT" && (target.empty() || target.front() != '/')) {
    host = std::string(target);  // authority form: "host:port"
    return true;
  }
  if (target == "*" || (!target.empty() && target.front() == '/')) {
    path = unescape_path(target);
    return true;
  }
  // Absolute form: scheme ":" ["//" authority] path.
  size_t colon = 0;
  while (colon < target.size() && target[colon] != ':') {
    const char c = target[colon];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (!alpha && (colon == 0 || !((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.'))) return false;
    ++colon;
  }
  if (colon == 0 || colon == target.size()) return false;
  std::string_view rest = target.substr(colon + 1);
  if (rest.substr(0, 2) != "//") return true;  // opaque: no host, no path
  rest.remove_prefix(2);
  const size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  if (const size_t at = authority.rfind('@'); at != std::string_view::npos) authority.remove_prefix(at + 1);
  host = std::string(authority);
  if (slash != std::string_view::npos) path = unescape_path(rest.substr(slash));
  return true;
}

// "HTTP/1.0", "HTTP/1.1": HTTP/1 and a minor version digit.
bool is_http1(std::string_view proto) {
  return proto.size() == 8 && proto.substr(0, 7) == "HTTP/1." && proto[7] >= '0' && proto[7] <= '9';
}

// What a request line cut short may end with: part of "HTTP/1.x", or nothing.
bool is_http1_prefix(std::string_view proto) {
  constexpr std::string_view head = "HTTP/1.";
  return proto.size() <= head.size() ? head.substr(0, proto.size()) == proto : is_http1(proto);
}

bool is_common_method(std::string_view m) {
  for (const char* known : {"GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE"})
    if (m == known) return true;
  return false;
}

// Content-Length's value: digits only, fitting int64; -1 otherwise.
int64_t parse_length(std::string_view s) {
  s = trim(s);
  if (s.empty() || s.size() > 18) return -1;  // 18 digits cannot overflow
  int64_t n = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return -1;
    n = n * 10 + (c - '0');
  }
  return n;
}

}  // namespace

Value parse_http_request(std::string_view bytes, bool cut) {
  // The request line: METHOD SP target SP HTTP/1.x, then CRLF (or LF).
  size_t eol = bytes.find('\n');
  const bool whole_line = eol != std::string_view::npos;
  std::string_view line = bytes.substr(0, eol);
  if (whole_line && !line.empty() && line.back() == '\r') line.remove_suffix(1);
  const size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return {};
  const size_t sp2 = line.find(' ', sp1 + 1);
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target =
      line.substr(sp1 + 1, sp2 == std::string_view::npos ? std::string_view::npos : sp2 - sp1 - 1);
  const std::string_view proto = sp2 == std::string_view::npos ? std::string_view() : line.substr(sp2 + 1);
  if (!is_token(method) || target.empty()) return {};
  if (whole_line) {
    if (sp2 == std::string_view::npos || !is_http1(proto)) return {};
  } else if (!cut || !is_common_method(method) || !is_http1_prefix(proto)) {
    return {};  // a cut request line is taken only when it looks like one
  }
  std::string host, path;
  if (!split_target(method, target, host, path)) return {};

  // Header lines, complete ones only, up to the blank line.
  std::map<std::string, std::vector<std::string>> headers;
  std::vector<std::string>* last = nullptr;  // for a folded (continued) line
  bool ended = false;                        // the blank line was seen
  for (size_t pos = whole_line ? eol + 1 : bytes.size(); pos < bytes.size(); pos = eol + 1) {
    eol = bytes.find('\n', pos);
    if (eol == std::string_view::npos) break;
    std::string_view h = bytes.substr(pos, eol - pos);
    if (!h.empty() && h.back() == '\r') h.remove_suffix(1);
    if (h.empty()) {
      ended = true;
      break;
    }
    if (h.front() == ' ' || h.front() == '\t') {
      if (last && !last->empty()) (last->back() += ' ') += trim(h);
      continue;
    }
    const size_t colon = h.find(':');
    const std::string_view key = h.substr(0, colon);
    last = nullptr;
    if (colon == std::string_view::npos || !is_token(key)) continue;  // Go refuses these lines
    last = &headers[canonical_key(key)];
    last->emplace_back(trim(h.substr(colon + 1)));
  }

  // What Go's http.ReadRequest does with Host, Pragma, Transfer-Encoding
  // and Content-Length.
  if (const auto it = headers.find("Host"); it != headers.end()) {
    if (host.empty() && !it->second.empty()) host = it->second.front();
    headers.erase(it);
  }
  if (const auto it = headers.find("Pragma");
      it != headers.end() && !it->second.empty() && it->second.front() == "no-cache" && !headers.count("Cache-Control"))
    headers["Cache-Control"] = {"no-cache"};
  int64_t length = ended ? 0 : -1;
  bool chunked = false;
  if (const auto it = headers.find("Transfer-Encoding"); it != headers.end()) {
    const bool http11 = proto == "HTTP/1.1" || (is_http1(proto) && proto[7] > '1');
    if (http11) {
      chunked = true;  // chunked, or an encoding Go refuses: the length is not known either way
      if (it->second.size() == 1 && equal_fold(trim(it->second.front()), "chunked")) headers.erase("Content-Length");
    }
    headers.erase("Transfer-Encoding");
  }
  if (chunked) {
    length = -1;
  } else if (const auto it = headers.find("Content-Length"); it != headers.end()) {
    length = parse_length(it->second.front());
    for (const std::string& v : it->second)
      if (trim(v) != trim(it->second.front())) length = -1;  // differing values: Go refuses the request
    if (length >= 0) it->second.resize(1);
  }

  Dict header_dict;
  header_dict.reserve(headers.size());
  for (auto& [key, values] : headers) {
    List list;
    list.reserve(values.size());
    for (std::string& v : values) list.emplace_back(std::move(v));
    header_dict.set(key, std::move(list));
  }
  Dict d;
  d.reserve(6);
  d.set("method", method);
  d.set("protocol", whole_line ? proto : std::string_view());
  d.set("host", std::move(host));
  d.set("uri_path", std::move(path));
  d.set("headers", std::move(header_dict));
  d.set("content_length", length);
  return d;
}

}  // namespace outpost::vql
