#pragma once
// Decoders for the bytes the network eBPF programs capture: a DNS message
// and the first bytes a process sent on a TCP socket. They give the values
// tracee's net_packet_dns (`proto_dns`) and net_packet_http_request
// (`http_request`) arguments hold, field for field, so that artifacts
// written for tracee's events (Linux.Events.DNS, Linux.Events.HTTPConnections)
// read ours unchanged. Hostile bytes never throw or read out of bounds.

#include <cstdint>
#include <string>
#include <string_view>

#include "queries/value.hpp"

namespace outpost::vql {

// An address as inet_ntop writes it: AF_INET reads 4 bytes, AF_INET6 16;
// "" for any other family.
std::string ip_text(int family, const uint8_t* addr);

// A DNS message in RFC 1035 wire format as tracee's proto_dns dict (ID, QR,
// opCode, ..., questions, answers, authorities, additionals). `cut`: only
// the message's first bytes were captured; the records that end within them
// are kept and `problem` says where the rest was lost. Otherwise NULL when
// the bytes are not a well-formed message, `problem` naming where it broke
// ("header: 7 bytes, needs 12", "answer 2: name pointer loops"). `problem`
// is "" for a message decoded whole. At most 64 records per section are
// kept (the header's counts still say how many there were).
Value decode_dns(std::string_view message, bool cut, std::string& problem);

// The request line and header lines of an HTTP/1.x request as tracee's
// http_request dict: method, protocol, host, uri_path (the path without the
// query, %-decoded), headers ({Name: [values]}, names canonical as Go
// writes them, in name order, Host and Transfer-Encoding taken out as Go's
// http.ReadRequest does) and content_length (0 when the complete header
// block declares no body, -1 when chunked or not known). Only complete
// lines count; when `cut`, a request line cut short still gives the method
// and the path so far (protocol ""). NULL when the bytes do not start with
// an HTTP/1.x request line.
Value parse_http_request(std::string_view first_bytes, bool cut);

}  // namespace outpost::vql
