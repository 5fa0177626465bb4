// decode_dns(), parse_http_request() and ip_text(): DNS messages and HTTP
// requests written by hand, hostile and cut-short ones among them.

#include "queries/net_decode.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>

namespace outpost::vql {
namespace {

std::string json(const Value& v) {
  std::string out;
  append_json(out, v);
  return out;
}

// v.key, or NULL when v is not a dict with that key.
Value at(const Value& v, std::string_view key) {
  const Dict* d = v.as_dict();
  const Value* found = d ? d->find(key) : nullptr;
  return found ? *found : Value();
}

// v[i], or NULL.
Value item(const Value& v, size_t i) {
  const List* l = v.as_list();
  return l && i < l->size() ? (*l)[i] : Value();
}

// How many items a list has; 0 when v is not a list.
size_t length(const Value& v) { return v.as_list() ? v.as_list()->size() : 0; }

// A DNS message written byte by byte.
struct Msg {
  std::string b;
  Msg(uint16_t id, uint16_t flags, uint16_t qd, uint16_t an, uint16_t ns, uint16_t ar) {
    u16(id).u16(flags).u16(qd).u16(an).u16(ns).u16(ar);
  }
  Msg& u8(unsigned v) {
    b += static_cast<char>(v);
    return *this;
  }
  Msg& u16(unsigned v) { return u8(v >> 8 & 0xFF).u8(v & 0xFF); }
  Msg& u32(uint32_t v) { return u16(v >> 16).u16(v & 0xFFFF); }
  Msg& raw(std::string_view s) {
    b += s;
    return *this;
  }
  // Labels, then the root's zero unless a pointer ends the name.
  Msg& name(std::string_view dotted, int pointer = -1) {
    while (!dotted.empty()) {
      const size_t dot = dotted.find('.');
      const std::string_view label = dotted.substr(0, dot);
      u8(label.size()).raw(label);
      dotted = dot == std::string_view::npos ? std::string_view() : dotted.substr(dot + 1);
    }
    return pointer < 0 ? u8(0) : u16(0xC000 | pointer);
  }
  Msg& ptr(unsigned offset) { return u16(0xC000 | offset); }
  // TYPE, CLASS IN, TTL and RDLENGTH; the RDATA is written next.
  Msg& rr_head(unsigned type, uint32_t ttl, unsigned rdlength) { return u16(type).u16(1).u32(ttl).u16(rdlength); }
  size_t size() const { return b.size(); }
};

constexpr unsigned kQuestionName = 12;  // where the first question's name starts
constexpr unsigned kExampleCom = 16;    // "example.com" inside "www.example.com"

Msg query_www_example_com(uint16_t flags, uint16_t answers) {
  Msg m(0x1234, flags, 1, answers, 0, 0);
  m.name("www.example.com").u16(1).u16(1);
  return m;
}

Value decode(const Msg& m, std::string* problem_out = nullptr, bool cut = false) {
  std::string problem;
  Value v = decode_dns(m.b, cut, problem);
  if (problem_out)
    *problem_out = problem;
  else
    EXPECT_EQ(problem, "");
  return v;
}

std::string problem_of(std::string_view bytes, bool cut = false) {
  std::string problem;
  const Value v = decode_dns(bytes, cut, problem);
  EXPECT_TRUE(v.is_null() || cut) << json(v);
  return problem;
}

TEST(IpText, WritesAsInetNtop) {
  const uint8_t v4[4] = {192, 0, 2, 1};
  uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8};
  v6[15] = 1;
  EXPECT_EQ(ip_text(AF_INET, v4), "192.0.2.1");
  EXPECT_EQ(ip_text(AF_INET6, v6), "2001:db8::1");
  EXPECT_EQ(ip_text(99, v4), "");
}

TEST(DecodeDns, QueryForA) {
  const Value v = decode(query_www_example_com(0x0100, 0));
  EXPECT_EQ(json(v), R"({"ID":4660,"QR":0,"opCode":"query","AA":0,"TC":0,"RD":1,"RA":0,"Z":0,)"
                     R"("responseCode":"no error","QDCount":1,"ANCount":0,"NSCount":0,"ARCount":0,)"
                     R"("questions":[{"name":"www.example.com","type":"A","class":"IN"}],)"
                     R"("answers":[],"authorities":[],"additionals":[]})");
}

TEST(DecodeDns, CnameChainAndTwoAWithCompression) {
  Msg m = query_www_example_com(0x8180, 3);
  m.ptr(kQuestionName).rr_head(5, 300, 6);
  const unsigned cdn = m.size();
  m.name("cdn", kExampleCom);  // cdn.example.com, 6 bytes
  m.ptr(cdn).rr_head(1, 60, 4).u8(93).u8(184).u8(216).u8(34);
  m.ptr(cdn).rr_head(1, 60, 4).u8(93).u8(184).u8(216).u8(35);
  const Value v = decode(m);
  EXPECT_EQ(json(at(v, "QR")), "1");
  EXPECT_EQ(json(at(v, "RA")), "1");
  const Value answers = at(v, "answers");
  EXPECT_EQ(json(item(answers, 0)),
            R"({"name":"www.example.com","type":"CNAME","class":"IN","TTL":300,"IP":"","NS":"",)"
            R"("CNAME":"cdn.example.com","PTR":"","TXTs":[],)"
            R"("SOA":{"MName":"","RName":"","serial":0,"refresh":0,"retry":0,"expire":0,"minimum":0},)"
            R"("SRV":{"priority":0,"weight":0,"port":0,"name":""},"MX":{"preference":0,"name":""},"OPT":[],)"
            R"("URI":{"priority":0,"weight":0,"target":""},"TXT":""})");
  EXPECT_EQ(json(at(item(answers, 1), "name")), R"("cdn.example.com")");
  EXPECT_EQ(json(at(item(answers, 1), "IP")), R"("93.184.216.34")");
  EXPECT_EQ(json(at(item(answers, 2), "IP")), R"("93.184.216.35")");
  EXPECT_EQ(json(at(item(answers, 2), "TTL")), "60");
}

TEST(DecodeDns, Aaaa) {
  Msg m(7, 0x8180, 1, 1, 0, 0);
  m.name("example.com").u16(28).u16(1);
  m.ptr(kQuestionName).rr_head(28, 3600, 16);
  for (const unsigned word : {0x2606u, 0x2800u, 0x220u, 0x1u, 0x248u, 0x1893u, 0x25c8u, 0x1946u}) m.u16(word);
  const Value v = decode(m);
  EXPECT_EQ(json(at(item(at(v, "questions"), 0), "type")), R"("AAAA")");
  EXPECT_EQ(json(at(item(at(v, "answers"), 0), "IP")), R"("2606:2800:220:1:248:1893:25c8:1946")");
}

TEST(DecodeDns, Mx) {
  Msg m(8, 0x8180, 1, 1, 0, 0);
  m.name("example.com").u16(15).u16(1);
  m.ptr(kQuestionName).rr_head(15, 300, 2 + 7).u16(10).name("mail", kQuestionName);
  const Value mx = at(item(at(decode(m), "answers"), 0), "MX");
  EXPECT_EQ(json(mx), R"({"preference":10,"name":"mail.example.com"})");
}

TEST(DecodeDns, Txt) {
  Msg m(9, 0x8180, 1, 1, 0, 0);
  m.name("example.com").u16(16).u16(1);
  m.ptr(kQuestionName).rr_head(16, 300, 12 + 6).u8(11).raw("v=spf1 -all").u8(5).raw("hello");
  const Value answer = item(at(decode(m), "answers"), 0);
  EXPECT_EQ(json(at(answer, "TXTs")), R"(["v=spf1 -all","hello"])");
  // TXT is the RDATA as it is, length bytes and all, as tracee gives it.
  EXPECT_EQ(to_string(at(answer, "TXT")), "\x0bv=spf1 -all\x05hello");
}

TEST(DecodeDns, NxdomainWithSoa) {
  Msg m(10, 0x8183, 1, 0, 1, 0);
  m.name("nope.example.com").u16(1).u16(1);
  const unsigned zone = kQuestionName + 5;
  m.ptr(zone).rr_head(6, 900, 5 + 7 + 20);
  m.name("ns", zone).name("root", zone).u32(2024010101).u32(7200).u32(3600).u32(1209600).u32(300);
  const Value v = decode(m);
  EXPECT_EQ(json(at(v, "responseCode")), R"("non-existent domain")");
  EXPECT_EQ(json(at(v, "answers")), "[]");
  const Value auth = item(at(v, "authorities"), 0);
  EXPECT_EQ(json(at(auth, "type")), R"("SOA")");
  EXPECT_EQ(json(at(auth, "SOA")), R"({"MName":"ns.example.com","RName":"root.example.com","serial":2024010101,)"
                                   R"("refresh":7200,"retry":3600,"expire":1209600,"minimum":300})");
}

TEST(DecodeDns, SrvPtrAndOpt) {
  Msg m(11, 0x8180, 0, 2, 0, 1);
  m.name("_sip._tcp.example.com").rr_head(33, 60, 6 + 6).u16(1).u16(5).u16(5060).name("sip", 22);
  m.name("1.2.0.192.in-addr.arpa").rr_head(12, 60, 7).name("host", 22);
  // OPT: root name, class = payload size, TTL's top byte the extended RCODE.
  m.u8(0).u16(41).u16(1232).u32(0x01000000).u16(4 + 3).u16(10).u16(3).raw("abc");
  const Value v = decode(m);
  EXPECT_EQ(json(at(item(at(v, "answers"), 0), "SRV")),
            R"({"priority":1,"weight":5,"port":5060,"name":"sip.example.com"})");
  EXPECT_EQ(json(at(item(at(v, "answers"), 1), "PTR")), R"("host.example.com")");
  const Value opt = item(at(v, "additionals"), 0);
  EXPECT_EQ(json(at(opt, "class")), R"("Unknown")");
  EXPECT_EQ(json(at(opt, "OPT")), R"([{"code":"Cookie","data":"abc"}])");
  EXPECT_EQ(json(at(v, "responseCode")), R"("bad opt version")");  // 1 << 4 | 0
}

TEST(DecodeDns, HeaderTooShort) {
  EXPECT_EQ(problem_of(""), "header: 0 bytes, needs 12");
  EXPECT_EQ(problem_of(std::string(7, '\0')), "header: 7 bytes, needs 12");
  EXPECT_EQ(problem_of(std::string(7, '\0'), true), "header: 7 bytes, needs 12");
}

TEST(DecodeDns, PointerLoops) {
  Msg self = query_www_example_com(0x8180, 1);
  const unsigned at_answer = self.size();
  self.ptr(at_answer);  // the answer's name points at itself
  EXPECT_EQ(problem_of(self.b), "answer 1: name pointer loops");

  Msg pair(1, 0, 1, 0, 0, 0);
  pair.u8(1).raw("a").ptr(16).u8(1).raw("b").ptr(12).u16(1).u16(1);  // a -> b -> a
  EXPECT_EQ(problem_of(pair.b), "question 1: name pointer loops");
  EXPECT_EQ(problem_of(pair.b, true), "question 1: name pointer loops");
}

TEST(DecodeDns, PointerBeyondTheEnd) {
  Msg m(1, 0, 1, 0, 0, 0);
  m.u8(3).raw("www").ptr(1000).u16(1).u16(1);
  EXPECT_EQ(problem_of(m.b), "question 1: name pointer to byte 1000, past the end (22 bytes)");
}

TEST(DecodeDns, LabelLongerThanTheMessage) {
  Msg m(1, 0, 1, 0, 0, 0);
  m.u8(63).raw("short");
  EXPECT_EQ(problem_of(m.b), "question 1: label runs past the end");
}

TEST(DecodeDns, NameLongerThan255) {
  Msg m(1, 0, 1, 0, 0, 0);
  for (int i = 0; i < 5; ++i) m.u8(60).raw(std::string(60, 'a' + i));
  m.u8(0).u16(1).u16(1);
  EXPECT_EQ(problem_of(m.b), "question 1: name longer than 255 bytes");
}

TEST(DecodeDns, CountsClaimingMoreRecordsThanThereAre) {
  Msg m = query_www_example_com(0x8180, 0xFFFF);
  m.ptr(kQuestionName).rr_head(1, 60, 4).u32(0x7F000001);
  EXPECT_EQ(problem_of(m.b), "answer 2: name runs past the end");
  // Cut, the same bytes keep what is whole.
  std::string problem;
  const Value v = decode(m, &problem, true);
  EXPECT_EQ(problem, "answer 2: cut short (name runs past the end)");
  EXPECT_EQ(json(at(v, "ANCount")), "65535");
  EXPECT_EQ(json(at(item(at(v, "answers"), 0), "IP")), R"("127.0.0.1")");
  EXPECT_EQ(length(at(v, "answers")), 1u);
}

TEST(DecodeDns, KeepsAtMost64RecordsPerSection) {
  Msg m = query_www_example_com(0x8180, 70);
  for (unsigned i = 0; i < 70; ++i) m.ptr(kQuestionName).rr_head(1, 60, 4).u32(0x0A000000 | i);
  std::string problem;
  const Value v = decode(m, &problem);
  EXPECT_EQ(problem, "answers: 70 records, kept the first 64");
  EXPECT_EQ(length(at(v, "answers")), 64u);
}

TEST(DecodeDns, CutMessageKeepsTheWholeRecords) {
  Msg m = query_www_example_com(0x8180, 2);
  m.ptr(kQuestionName).rr_head(1, 60, 4).u32(0x01020304);
  m.ptr(kQuestionName).rr_head(28, 60, 16).raw(std::string(16, '\x01'));
  const std::string first = m.b.substr(0, m.size() - 5);
  std::string problem;
  const Value v = decode_dns(first, true, problem);
  EXPECT_EQ(problem, "answer 2: cut short (rdata of 16 bytes runs past the end)");
  EXPECT_EQ(length(at(v, "answers")), 1u);
  EXPECT_EQ(json(at(item(at(v, "answers"), 0), "IP")), R"("1.2.3.4")");
  // Not cut, the same bytes are no DNS message.
  EXPECT_TRUE(decode_dns(first, false, problem).is_null());
  EXPECT_EQ(problem, "answer 2: rdata of 16 bytes runs past the end");
}

TEST(DecodeDns, BadRdata) {
  Msg a = query_www_example_com(0x8180, 1);
  a.ptr(kQuestionName).rr_head(1, 60, 3).raw("abc");
  EXPECT_EQ(problem_of(a.b), "answer 1: A rdata is 3 bytes, needs 4");
  Msg txt = query_www_example_com(0x8180, 1);
  txt.ptr(kQuestionName).rr_head(16, 60, 3).u8(9).raw("ab");
  EXPECT_EQ(problem_of(txt.b), "answer 1: TXT string runs past its record");
  Msg cname = query_www_example_com(0x8180, 1);
  cname.ptr(kQuestionName).rr_head(5, 60, 2).u8(5).raw("abcde").u8(0);  // the name overruns RDLENGTH
  EXPECT_EQ(problem_of(cname.b), "answer 1: label runs past the end");
  // Ending with the message, the record is still whole: no cut explains it.
  Msg last = query_www_example_com(0x8180, 1);
  last.ptr(kQuestionName).rr_head(5, 60, 2).u8(5).raw("a");
  EXPECT_EQ(problem_of(last.b, true), "answer 1: label runs past the end");
}

// Every prefix of a message, every byte flipped, and random bytes: never a
// crash (run under ASan/UBSan to see reads out of bounds), and a cut prefix
// of 12 bytes or more always decodes.
TEST(DecodeDns, HostileBytesNeverBreakIt) {
  Msg m = query_www_example_com(0x8180, 2);
  m.ptr(kQuestionName).rr_head(5, 300, 6).name("cdn", kExampleCom);
  m.ptr(kQuestionName + 17).rr_head(15, 60, 4).u16(1).ptr(kExampleCom);
  ASSERT_FALSE(decode(m).is_null());
  std::string problem;
  for (size_t n = 0; n <= m.size(); ++n) {
    const Value v = decode_dns(std::string_view(m.b).substr(0, n), true, problem);
    EXPECT_EQ(v.is_null(), n < 12) << n << ": " << problem;
  }
  for (size_t i = 0; i < m.size(); ++i)
    for (const uint8_t x : {0x01, 0x3F, 0x40, 0x80, 0xC0, 0xFF}) {
      std::string bytes = m.b;
      bytes[i] = static_cast<char>(bytes[i] ^ x);
      decode_dns(bytes, false, problem);
      decode_dns(bytes, true, problem);
    }
  std::mt19937 random(42);
  for (int round = 0; round < 2000; ++round) {
    std::string bytes(12 + random() % 500, '\0');
    for (char& c : bytes) c = static_cast<char>(random() % 4 ? random() % 8 : 0xC0 | (random() % 64));
    decode_dns(bytes, round % 2, problem);
  }
}

TEST(ParseHttpRequest, GetWithHostAndQuery) {
  const Value v = parse_http_request(
      "GET /search%20x?q=1&r=2 HTTP/1.1\r\nHost: example.com\r\nuser-agent: curl/8.0\r\nAccept: */*\r\n\r\n", false);
  EXPECT_EQ(json(v), R"({"method":"GET","protocol":"HTTP/1.1","host":"example.com","uri_path":"/search x",)"
                     R"("headers":{"Accept":["*/*"],"User-Agent":["curl/8.0"]},"content_length":0})");
}

TEST(ParseHttpRequest, PostWithContentLength) {
  const Value v = parse_http_request(
      "POST /api/v1/items HTTP/1.0\r\nHost: api.local:8080\r\nContent-Length: 27\r\nX-Tag: a\r\nX-Tag:  b \r\n"
      "\r\n{\"name\":\"x\"}",
      false);
  EXPECT_EQ(json(at(v, "protocol")), R"("HTTP/1.0")");
  EXPECT_EQ(json(at(v, "host")), R"("api.local:8080")");
  EXPECT_EQ(json(at(v, "content_length")), "27");
  EXPECT_EQ(json(at(v, "headers")), R"({"Content-Length":["27"],"X-Tag":["a","b"]})");
}

TEST(ParseHttpRequest, CutMidHeader) {
  const Value v = parse_http_request("GET /a HTTP/1.1\r\nHost: h\r\nUser-Ag", true);
  EXPECT_EQ(json(v), R"({"method":"GET","protocol":"HTTP/1.1","host":"h","uri_path":"/a","headers":{},)"
                     R"("content_length":-1})");
}

TEST(ParseHttpRequest, CutInTheRequestLine) {
  const Value v = parse_http_request("GET /very/long/pa", true);
  EXPECT_EQ(json(at(v, "uri_path")), R"("/very/long/pa")");
  EXPECT_EQ(json(at(v, "protocol")), R"("")");
  EXPECT_TRUE(parse_http_request("GET /very/long/pa", false).is_null());
  EXPECT_TRUE(parse_http_request("FROB /x", true).is_null());
}

TEST(ParseHttpRequest, AbsoluteFormConnectAndChunked) {
  const Value proxy =
      parse_http_request("GET http://user@proxy.example:8080/x/y?z HTTP/1.1\r\nHost: other\r\n\r\n", false);
  EXPECT_EQ(json(at(proxy, "host")), R"("proxy.example:8080")");
  EXPECT_EQ(json(at(proxy, "uri_path")), R"("/x/y")");
  const Value connect = parse_http_request("CONNECT example.com:443 HTTP/1.1\r\n\r\n", false);
  EXPECT_EQ(json(at(connect, "host")), R"("example.com:443")");
  EXPECT_EQ(json(at(connect, "uri_path")), R"("")");
  const Value chunked = parse_http_request(
      "PUT /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", false);
  EXPECT_EQ(json(at(chunked, "content_length")), "-1");
  EXPECT_EQ(json(at(chunked, "headers")), "{}");
}

TEST(ParseHttpRequest, NotARequest) {
  EXPECT_TRUE(parse_http_request("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false).is_null());
  EXPECT_TRUE(parse_http_request("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", false).is_null());
  EXPECT_TRUE(parse_http_request(std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11), true).is_null());
  EXPECT_TRUE(parse_http_request("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false).is_null());
  EXPECT_TRUE(parse_http_request("GET index.html HTTP/1.1\r\n\r\n", false).is_null());
  EXPECT_TRUE(parse_http_request("", true).is_null());
}

}  // namespace
}  // namespace outpost::vql
