#pragma once
// JSON for Outpost's values and records, as the file link writes them and
// people read them. Hand-written: output only, no parsing.
//
// Both functions append to `out`, which is left exactly as it was if they
// throw. They do not throw for anything a newer schema may send: an unknown
// value kind, status kind or record kind becomes {"unknown":true} (the record
// kind as an "unknown":true member), an unknown lane or log level the string
// "unknown". They throw DecodeError (codec.hpp) only when the message itself
// is malformed further in than RecordView checks (a bad pointer, text without
// its NUL, values nested deeper than kMaxJsonDepth), and std::bad_alloc.

#include <cstdint>
#include <string>

#include "schemas/codec.hpp"

namespace outpost::schemas {

// Lists and dicts nested deeper than this are refused (DecodeError) rather
// than recursed into; RecordView's own nesting limit is lower still.
inline constexpr unsigned kMaxJsonDepth = 64;

// Appends the JSON for one value:
//   null, true/false; integers exactly (uint64 too); floats in the shortest
//   form that round-trips, NaN and ±Inf as null; text as a JSON string
//   (", \ and control characters escaped, the latter as \u00xx; other UTF-8
//   passes through; each byte of invalid UTF-8 becomes U+FFFD); bytes as a
//   base64 string (standard alphabet, padded); a timestamp as an RFC 3339 UTC
//   string with nine fraction digits ("2023-11-14T22:13:20.123456789Z");
//   a list as an array; a dict as an object, keys in their order.
void append_json(std::string& out, schema::Value::Reader value);

// A JSON string: text escaped as append_json describes.
void append_json_string(std::string& out, kj::StringPtr text);
inline std::string json_string(kj::StringPtr text) {
  std::string out;
  append_json_string(out, text);
  return out;
}
// A JSON string holding `data` in base64, as append_json writes bytes.
void append_json_base64(std::string& out, kj::ArrayPtr<const kj::byte> data);

// A timestamp as a JSON string, and a float, as append_json writes them.
void append_json_timestamp(std::string& out, int64_t ns);
void append_json_float(std::string& out, double d);

// Appends the JSON lines for one buffered record, each ending in '\n'. Every
// line starts {"seq":S,"lane":"...","query_id":Q, then by kind:
//   row batch:     one line per row (none for an empty batch):
//                  "artifact":"A","source":"S","row":{"Col1":v1,...}}
//                  a row shorter than the columns gets null for the rest;
//                  values past the last column get keys "_<index>" ("_3").
//   log message:   "log":{"level":"warn","text":"...","time":"<RFC 3339>"}}
//   upload chunk:  "upload":{"path":"...","offset":N,"size":<data bytes>,
//                  "eof":B,"total_size":N,"sha256":"<hex, or empty>"}}
//                  (never the data itself)
//   query status:  "status":{"started":true}}, {"finished":{"rows":N,"error":"..."}}
//                  (error "" on success), {"paused":true}, {"resumed":true},
//                  {"dropped_at_source":N}
// A record carries no lane, so the lane is the one rows.capnp assigns its kind:
// a row batch's own lane, "control" for logs and statuses, "uploads" for chunks.
void append_json_lines(std::string& out, uint64_t seq, schema::Record::Reader record);

}  // namespace outpost::schemas
