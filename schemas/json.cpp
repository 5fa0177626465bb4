#include "schemas/json.hpp"

#include <kj/exception.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string_view>

namespace outpost::schemas {
namespace {

using schema::LogMessage;
using schema::QueryStatus;
using schema::Record;
using schema::Value;

constexpr char kHexDigits[] = "0123456789abcdef";

// Length of the well-formed UTF-8 sequence at the start of `s` (Unicode
// table 3-7: no overlongs, no surrogates, nothing past U+10FFFF), 0 if none.
size_t utf8_sequence_length(std::string_view s) {
  auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  unsigned char lead = byte(0);
  if (lead < 0x80) return 1;
  size_t length;
  unsigned char low = 0x80, high = 0xBF;  // allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;   // overlong
    if (lead == 0xED) high = 0x9F;  // surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;   // overlong
    if (lead == 0xF4) high = 0x8F;  // past U+10FFFF
  } else {
    return 0;
  }
  if (s.size() < length || byte(1) < low || byte(1) > high) return 0;
  for (size_t i = 2; i < length; ++i)
    if ((byte(i) & 0xC0) != 0x80) return 0;
  return length;
}

bool needs_escape(unsigned char c) { return c < 0x20 || c >= 0x80 || c == '"' || c == '\\'; }

// How many leading bytes of `s` need no escape. Eight bytes per step (the
// collector renders every row through here): a byte's flag in `special` is
// exact for the lowest flagged byte, as borrows only run upwards.
size_t plain_prefix(std::string_view s) {
  constexpr uint64_t kOnes = 0x0101010101010101ull, kHigh = 0x8080808080808080ull;
  auto has_zero = [&](uint64_t w) { return (w - kOnes) & ~w & kHigh; };
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    uint64_t special = (w & kHigh) | ((w - 0x20 * kOnes) & ~w & kHigh) |
                       has_zero(w ^ ('"' * kOnes)) | has_zero(w ^ ('\\' * kOnes));
    if (special) {
      if constexpr (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__) return i + __builtin_ctzll(special) / 8;
      break;  // find it byte by byte below
    }
  }
  while (i < s.size() && !needs_escape(static_cast<unsigned char>(s[i]))) ++i;
  return i;
}

}  // namespace

// The one string escaper: every text, key and name goes through here.
void append_json_string(std::string& out, kj::StringPtr text) {
  std::string_view s(text.begin(), text.size());  // may hold NULs: Text has a size
  out += '"';
  while (!s.empty()) {
    // Printable ASCII needs no escape: copy runs of it at once (most text is just that).
    size_t run = plain_prefix(s);
    if (run > 0) {
      out.append(s.data(), run);
      s.remove_prefix(run);
      continue;
    }
    unsigned char c = static_cast<unsigned char>(s[0]);
    size_t length = utf8_sequence_length(s);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      out += "\\u00";
      out += kHexDigits[c >> 4];
      out += kHexDigits[c & 0xF];
    } else if (length == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD for this one byte
      length = 1;
    } else {
      out.append(s.data(), length);
    }
    s.remove_prefix(length);
  }
  out += '"';
}

namespace {

template <typename Number>
void append_number(std::string& out, Number n) {
  char buffer[32];  // the longest double, "-2.2250738585072014e-308", is 24
  auto result = std::to_chars(buffer, buffer + sizeof buffer, n);
  out.append(buffer, result.ptr);
}

void append_float(std::string& out, double d) {
  if (std::isfinite(d))
    append_number(out, d);  // shortest form that round-trips
  else
    out += "null";
}

void append_bool(std::string& out, bool b) { out += b ? "true" : "false"; }

void append_base64(std::string& out, kj::ArrayPtr<const kj::byte> data) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  out += '"';
  for (size_t i = 0; i < data.size(); i += 3) {
    size_t have = std::min<size_t>(3, data.size() - i);
    uint32_t group = 0;
    for (size_t k = 0; k < 3; ++k) group = group << 8 | (k < have ? data[i + k] : 0);
    for (size_t k = 0; k < 4; ++k) out += k <= have ? kAlphabet[group >> (18 - 6 * k) & 63] : '=';
  }
  out += '"';
}

void append_hex(std::string& out, kj::ArrayPtr<const kj::byte> data) {
  out += '"';
  for (kj::byte b : data) {
    out += kHexDigits[b >> 4];
    out += kHexDigits[b & 0xF];
  }
  out += '"';
}

// Floor division: leaves the quotient in `value`, returns the remainder in [0, unit).
int64_t floor_split(int64_t& value, int64_t unit) {
  int64_t remainder = value % unit;
  value /= unit;
  if (remainder < 0) {
    remainder += unit;
    --value;
  }
  return remainder;
}

// The one timestamp formatter: nanoseconds since the epoch as RFC 3339 UTC.
// Every int64 fits (years 1677 to 2262).
void append_timestamp(std::string& out, int64_t ns) {
  int64_t days = ns;
  int nanos = static_cast<int>(floor_split(days, 1'000'000'000));
  int seconds = static_cast<int>(floor_split(days, 86'400));
  // Civil date from days since 1970-01-01 (Howard Hinnant's days_from_civil, inverted).
  int64_t shifted = days + 719'468;  // days since 0000-03-01
  int64_t era = shifted;
  int64_t day_of_era = floor_split(era, 146'097);
  int64_t year_of_era =
      (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146'096) / 365;
  int64_t day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
  int64_t march_month = (5 * day_of_year + 2) / 153;  // 0 = March
  int day = static_cast<int>(day_of_year - (153 * march_month + 2) / 5 + 1);
  int month = static_cast<int>(march_month < 10 ? march_month + 3 : march_month - 9);
  int year = static_cast<int>(year_of_era + era * 400 + (month <= 2));

  // By hand: snprintf was a measurable share of the collector's time.
  char buffer[40];
  char* p = buffer;
  auto digits = [&p](int value, int width) {
    for (int i = width - 1; i >= 0; --i, value /= 10) p[i] = static_cast<char>('0' + value % 10);
    p += width;
  };
  *p++ = '"';
  digits(year, 4);
  *p++ = '-';
  digits(month, 2);
  *p++ = '-';
  digits(day, 2);
  *p++ = 'T';
  digits(seconds / 3600, 2);
  *p++ = ':';
  digits(seconds / 60 % 60, 2);
  *p++ = ':';
  digits(seconds % 60, 2);
  *p++ = '.';
  digits(nanos, 9);
  *p++ = 'Z';
  *p++ = '"';
  out.append(buffer, p);
}

void append_value(std::string& out, Value::Reader value, unsigned depth);

void append_list(std::string& out, capnp::List<Value>::Reader list, unsigned depth) {
  out += '[';
  for (unsigned i = 0; i < list.size(); ++i) {
    if (i > 0) out += ',';
    append_value(out, list[i], depth + 1);
  }
  out += ']';
}

void append_dict(std::string& out, capnp::List<Value::Entry>::Reader dict, unsigned depth) {
  out += '{';
  for (unsigned i = 0; i < dict.size(); ++i) {
    if (i > 0) out += ',';
    append_json_string(out, dict[i].getKey());
    out += ':';
    append_value(out, dict[i].getValue(), depth + 1);
  }
  out += '}';
}

void append_value(std::string& out, Value::Reader value, unsigned depth) {
  if (depth > kMaxJsonDepth)
    throw DecodeError("value nested deeper than " + std::to_string(kMaxJsonDepth));
  switch (value.which()) {
    case Value::NULL_: out += "null"; return;
    case Value::BOOL: append_bool(out, value.getBool()); return;
    case Value::INT64: append_number(out, value.getInt64()); return;
    case Value::UINT64: append_number(out, value.getUint64()); return;
    case Value::FLOAT64: append_float(out, value.getFloat64()); return;
    case Value::TEXT: append_json_string(out, value.getText()); return;
    case Value::BYTES: append_base64(out, value.getBytes()); return;
    case Value::TIMESTAMP: append_timestamp(out, value.getTimestamp()); return;
    case Value::LIST: append_list(out, value.getList(), depth); return;
    case Value::DICT: append_dict(out, value.getDict(), depth); return;
  }
  out += "{\"unknown\":true}";  // a kind from a newer schema
}

// {"seq":S,"lane":"L","query_id":Q   — the start of every line.
void open_line(std::string& out, uint64_t seq, const char* lane, uint64_t query_id) {
  out += "{\"seq\":";
  append_number(out, seq);
  out += ",\"lane\":";
  append_json_string(out, lane);
  out += ",\"query_id\":";
  append_number(out, query_id);
}

void append_rows(std::string& out, uint64_t seq, uint64_t query_id,
                 schema::RowBatch::Reader batch) {
  // Every row of a batch starts the same way and names the same columns:
  // render those once (most of a line's cost when the values are short).
  std::string prefix;
  open_line(prefix, seq, lane_name(batch.getLane()), query_id);
  prefix += ",\"artifact\":";
  append_json_string(prefix, batch.getArtifact());
  prefix += ",\"source\":";
  append_json_string(prefix, batch.getSource());
  prefix += ",\"row\":{";
  std::vector<std::string> keys;
  auto key = [&](unsigned i) -> const std::string& {
    while (keys.size() <= i) {
      std::string k = keys.empty() ? "" : ",";
      unsigned n = static_cast<unsigned>(keys.size());
      if (n < batch.getColumns().size())
        append_json_string(k, batch.getColumns()[n]);
      else
        append_json_string(k, "_" + std::to_string(n));
      k += ':';
      keys.push_back(std::move(k));
    }
    return keys[i];
  };
  unsigned columns = batch.getColumns().size();
  for (auto row : batch.getRows()) {
    out += prefix;
    for (unsigned i = 0; i < std::max(columns, row.size()); ++i) {
      out += key(i);
      if (i < row.size())
        append_value(out, row[i], 0);
      else
        out += "null";
    }
    out += "}}\n";
  }
}

const char* level_name(LogMessage::Level level) {
  switch (level) {
    case LogMessage::Level::TRACE: return "trace";
    case LogMessage::Level::DEBUG: return "debug";
    case LogMessage::Level::INFO: return "info";
    case LogMessage::Level::WARN: return "warn";
    case LogMessage::Level::ERROR: return "error";
    case LogMessage::Level::CRITICAL: return "critical";
  }
  return "unknown";
}

void append_log(std::string& out, LogMessage::Reader log) {
  out += "{\"level\":";
  append_json_string(out, level_name(log.getLevel()));
  out += ",\"text\":";
  append_json_string(out, log.getText());
  out += ",\"time\":";
  append_timestamp(out, log.getTimeNs());
  out += '}';
}

void append_upload(std::string& out, schema::UploadChunk::Reader chunk) {
  out += "{\"path\":";
  append_json_string(out, chunk.getPath());
  out += ",\"offset\":";
  append_number(out, chunk.getOffset());
  out += ",\"size\":";
  append_number(out, chunk.getData().size());
  out += ",\"eof\":";
  append_bool(out, chunk.getEof());
  out += ",\"total_size\":";
  append_number(out, chunk.getTotalSize());
  out += ",\"sha256\":";
  append_hex(out, chunk.getSha256());
  out += '}';
}

const char* outcome_name(QueryStatus::Outcome outcome) {
  switch (outcome) {
    case QueryStatus::Outcome::FINISHED: return "finished";
    case QueryStatus::Outcome::FAILED: return "failed";
    case QueryStatus::Outcome::CANCELLED: return "cancelled";
  }
  return "unknown";
}

void append_status(std::string& out, QueryStatus::Reader status, int64_t created_ns) {
  switch (status.which()) {
    case QueryStatus::STARTED: out += "{\"started\":true"; break;
    case QueryStatus::FINISHED: {
      auto finished = status.getFinished();
      out += "{\"finished\":{\"rows\":";
      append_number(out, finished.getRowCount());
      out += ",\"error\":";
      append_json_string(out, finished.getError());
      out += ",\"bytes\":";
      append_number(out, finished.getBytes());
      out += ",\"duration_ns\":";
      append_number(out, finished.getDurationNs());
      out += ",\"outcome\":\"";
      out += outcome_name(finished.getOutcome());
      out += "\"}";
      break;
    }
    case QueryStatus::PAUSED: out += "{\"paused\":true"; break;
    case QueryStatus::RESUMED: out += "{\"resumed\":true"; break;
    case QueryStatus::DROPPED_AT_SOURCE:
      out += "{\"dropped_at_source\":";
      append_number(out, status.getDroppedAtSource());
      break;
    default: out += "{\"unknown\":true"; break;
  }
  if (status.getFlowId() != 0) {
    out += ",\"flow_id\":";
    append_number(out, status.getFlowId());
    out += ",\"artifact\":";
    append_json_string(out, status.getArtifact());
    out += ",\"time\":";
    append_timestamp(out, created_ns);
  }
  out += '}';
}

// The start of a line for a record of one kind: {"seq":S,"lane":"L","query_id":Q,"kind":
void open_record_line(std::string& out, uint64_t seq, const char* lane, Record::Reader record,
                      const char* kind) {
  open_line(out, seq, lane, record.getQueryId());
  out += ",\"";
  out += kind;
  out += "\":";
}

void append_record(std::string& out, uint64_t seq, Record::Reader record) {
  const char* control = lane_name(schema::Lane::CONTROL);
  switch (record.which()) {
    case Record::ROW_BATCH:
      append_rows(out, seq, record.getQueryId(), record.getRowBatch());
      return;
    case Record::LOG:
      open_record_line(out, seq, control, record, "log");
      append_log(out, record.getLog());
      out += "}\n";
      return;
    case Record::UPLOAD_CHUNK:
      open_record_line(out, seq, lane_name(schema::Lane::UPLOADS), record, "upload");
      append_upload(out, record.getUploadChunk());
      out += "}\n";
      return;
    case Record::QUERY_STATUS:
      open_record_line(out, seq, control, record, "status");
      append_status(out, record.getQueryStatus(), record.getCreatedNs());
      out += "}\n";
      return;
  }
  open_record_line(out, seq, "unknown", record, "unknown");  // a kind from a newer schema
  out += "true}\n";
}

// Runs `write`, which appends to `out`; if it throws, `out` is put back as it
// was and a Cap'n Proto error (a malformed message) becomes a DecodeError.
template <typename Write>
void append_all_or_nothing(std::string& out, Write&& write) {
  size_t original_size = out.size();
  try {
    write();
  } catch (const kj::Exception& e) {
    out.resize(original_size);
    throw DecodeError("malformed record: " + std::string(e.getDescription().cStr()));
  } catch (...) {
    out.resize(original_size);
    throw;
  }
}

}  // namespace

void append_json_timestamp(std::string& out, int64_t ns) { append_timestamp(out, ns); }
void append_json_float(std::string& out, double d) { append_float(out, d); }

void append_json(std::string& out, Value::Reader value) {
  append_all_or_nothing(out, [&] { append_value(out, value, 0); });
}

void append_json_lines(std::string& out, uint64_t seq, Record::Reader record) {
  append_all_or_nothing(out, [&] { append_record(out, seq, record); });
}

void append_json_base64(std::string& out, kj::ArrayPtr<const kj::byte> data) {
  append_base64(out, data);
}

}  // namespace outpost::schemas
