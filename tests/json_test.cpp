#include "schemas/json.hpp"

#include <capnp/any.h>
#include <capnp/schema.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "schemas/codec.hpp"

namespace outpost::schemas {
namespace {

using schema::LogMessage;
using schema::Value;

// The JSON of one value built by `fill`.
template <typename Fill>
std::string json_of(Fill&& fill) {
  capnp::MallocMessageBuilder message;
  auto value = message.initRoot<Value>();
  fill(value);
  std::string out;
  append_json(out, value.asReader());
  return out;
}

std::string json_of_text(const std::string& text) {
  return json_of([&](Value::Builder v) { v.setText(kj::StringPtr(text.c_str(), text.size())); });
}

std::string json_of_bytes(std::initializer_list<kj::byte> bytes) {
  return json_of([&](Value::Builder v) { v.setBytes(kj::arrayPtr(bytes.begin(), bytes.size())); });
}

std::string json_of_timestamp(int64_t ns) {
  return json_of([&](Value::Builder v) { v.setTimestamp(ns); });
}

std::string json_of_float(double d) {
  return json_of([&](Value::Builder v) { v.setFloat64(d); });
}

// The JSON lines of an encoded record, read back the way the link reads it.
std::string lines_of(const Encoded& encoded, uint64_t seq) {
  RecordView view(encoded.words());
  std::string out;
  append_json_lines(out, seq, view.record());
  return out;
}

// Writes a union discriminant no schema version here knows, as a newer
// writer would.
template <typename Builder>
void set_unknown_discriminant(Builder builder) {
  auto offset = capnp::Schema::from<capnp::FromBuilder<Builder>>()
                    .getProto()
                    .getStruct()
                    .getDiscriminantOffset();
  auto data = capnp::AnyStruct::Builder(kj::mv(builder)).getDataSection();
  ASSERT_GE(data.size(), offset * 2 + 2);
  data[offset * 2] = 99;  // little-endian uint16 99
  data[offset * 2 + 1] = 0;
}

TEST(Json, Scalars) {
  EXPECT_EQ(json_of([](Value::Builder v) { v.setNull(); }), "null");
  EXPECT_EQ(json_of([](Value::Builder v) { v.setBool(true); }), "true");
  EXPECT_EQ(json_of([](Value::Builder v) { v.setBool(false); }), "false");
  EXPECT_EQ(json_of([](Value::Builder v) { v.setInt64(-42); }), "-42");
  EXPECT_EQ(json_of([](Value::Builder v) { v.setInt64(std::numeric_limits<int64_t>::min()); }),
            "-9223372036854775808");
  EXPECT_EQ(json_of([](Value::Builder v) { v.setInt64(std::numeric_limits<int64_t>::max()); }),
            "9223372036854775807");
  EXPECT_EQ(json_of([](Value::Builder v) { v.setUint64(0); }), "0");
  EXPECT_EQ(json_of([](Value::Builder v) { v.setUint64(UINT64_MAX); }), "18446744073709551615");
}

TEST(Json, FloatsShortestForm) {
  EXPECT_EQ(json_of_float(2.5), "2.5");
  EXPECT_EQ(json_of_float(0.1), "0.1");
  EXPECT_EQ(json_of_float(-1e300), "-1e+300");
  EXPECT_EQ(json_of_float(3.0), "3");
  EXPECT_EQ(json_of_float(-0.0), "-0");
}

TEST(Json, FloatsRoundTrip) {
  const double values[] = {0.1,  1.0 / 3, -2.5, 1e300, 5e-324, DBL_MAX, DBL_MIN, -DBL_MIN,
                           1e21, 1e-7,    3.141592653589793, -0.0, 123456789.123456789};
  for (double d : values) {
    std::string json = json_of_float(d);
    char* end = nullptr;
    double back = std::strtod(json.c_str(), &end);
    EXPECT_EQ(end, json.c_str() + json.size()) << json;
    EXPECT_EQ(std::memcmp(&back, &d, sizeof d), 0) << json << " from " << d;  // bit for bit
  }
}

TEST(Json, NonFiniteFloatsAreNull) {
  EXPECT_EQ(json_of_float(std::nan("")), "null");
  EXPECT_EQ(json_of_float(-std::nan("")), "null");
  EXPECT_EQ(json_of_float(INFINITY), "null");
  EXPECT_EQ(json_of_float(-INFINITY), "null");
}

TEST(Json, TextEscapes) {
  EXPECT_EQ(json_of_text(""), R"("")");
  EXPECT_EQ(json_of_text("plain / text"), R"("plain / text")");
  EXPECT_EQ(json_of_text("say \"hi\" \\ back"), R"("say \"hi\" \\ back")");
  EXPECT_EQ(json_of_text("a\nb\tc\rd\b\f"), R"("a\u000ab\u0009c\u000dd\u0008\u000c")");
  EXPECT_EQ(json_of_text("\x01\x1f\x7f"), "\"\\u0001\\u001f\x7f\"");  // DEL needs no escape
  EXPECT_EQ(json_of_text(std::string("a\0b", 3)), R"("a\u0000b")");  // Text may hold NULs
}

// Plain text is scanned eight bytes at a time: a byte needing care must be
// found at any offset, in a full step or in the tail, also after another.
TEST(Json, TextEscapesAtEveryOffset) {
  const std::pair<std::string, std::string> cases[] = {
      {"\"", "\\\""}, {"\\", "\\\\"}, {"\x1f", "\\u001f"}, {std::string(1, '\0'), "\\u0000"},
      {"\x7f", "\x7f"}, {" ", " "}, {"\xC3\xA9", "\xC3\xA9"}, {"\xFF", "\xEF\xBF\xBD"}};
  for (auto& [raw, escaped] : cases)
    for (size_t at = 0; at < 20; ++at) {
      std::string before(at, 'a'), after(19 - at, 'z');
      EXPECT_EQ(json_of_text(before + raw + after), "\"" + before + escaped + after + "\"")
          << "byte " << int(static_cast<unsigned char>(raw[0])) << " at offset " << at;
      EXPECT_EQ(json_of_text(before + raw + after + raw), "\"" + before + escaped + after + escaped + "\"");
    }
}

TEST(Json, Utf8PassesThrough) {
  EXPECT_EQ(json_of_text("héllo ✓"), "\"héllo ✓\"");
  EXPECT_EQ(json_of_text("😀 \xF4\x8F\xBF\xBF"), "\"😀 \xF4\x8F\xBF\xBF\"");  // U+10FFFF
  EXPECT_EQ(json_of_text("\xE2\x80\xA8"), "\"\xE2\x80\xA8\"");  // U+2028 is valid JSON
}

TEST(Json, InvalidUtf8BytesBecomeReplacementCharacters) {
  const std::string r = "\xEF\xBF\xBD";  // U+FFFD
  EXPECT_EQ(json_of_text("a\xFF" "b"), "\"a" + r + "b\"");  // the "" ends the \x escape
  EXPECT_EQ(json_of_text("\x80"), "\"" + r + "\"");                       // lone continuation
  EXPECT_EQ(json_of_text("x\xE2\x9C"), "\"x" + r + r + "\"");             // cut short at the end
  EXPECT_EQ(json_of_text("\xE2\x9C" "a"), "\"" + r + r + "a\"");          // cut short mid-text
  EXPECT_EQ(json_of_text("\xC0\xAF"), "\"" + r + r + "\"");               // overlong '/'
  EXPECT_EQ(json_of_text("\xE0\x80\xAF"), "\"" + r + r + r + "\"");       // overlong, 3 bytes
  EXPECT_EQ(json_of_text("\xED\xA0\x80"), "\"" + r + r + r + "\"");       // surrogate D800
  EXPECT_EQ(json_of_text("\xF4\x90\x80\x80"), "\"" + r + r + r + r + "\"");  // past U+10FFFF
  EXPECT_EQ(json_of_text("\xF8\x88\x80\x80\x80"), "\"" + r + r + r + r + r + "\"");
  EXPECT_EQ(json_of_text("ok\xC3\xA9\xC3"), "\"ok\xC3\xA9" + r + "\"");
}

TEST(Json, BytesAsBase64) {
  EXPECT_EQ(json_of_bytes({}), R"("")");
  EXPECT_EQ(json_of_bytes({0}), R"("AA==")");
  EXPECT_EQ(json_of_bytes({0, 1}), R"("AAE=")");
  EXPECT_EQ(json_of_bytes({0, 1, 2}), R"("AAEC")");
  EXPECT_EQ(json_of_bytes({0xFF, 0xFE, 0xFD, 0xFC}), R"("//79/A==")");
  EXPECT_EQ(json_of_bytes({'f', 'o', 'o', 'b', 'a', 'r'}), R"("Zm9vYmFy")");
}

TEST(Json, Timestamps) {
  EXPECT_EQ(json_of_timestamp(1700000000123456789), R"("2023-11-14T22:13:20.123456789Z")");
  EXPECT_EQ(json_of_timestamp(0), R"("1970-01-01T00:00:00.000000000Z")");
  EXPECT_EQ(json_of_timestamp(951782400000000000), R"("2000-02-29T00:00:00.000000000Z")");
  EXPECT_EQ(json_of_timestamp(std::numeric_limits<int64_t>::max()),
            R"("2262-04-11T23:47:16.854775807Z")");
}

TEST(Json, TimestampsBefore1970) {
  EXPECT_EQ(json_of_timestamp(-1), R"("1969-12-31T23:59:59.999999999Z")");
  EXPECT_EQ(json_of_timestamp(-1500000000), R"("1969-12-31T23:59:58.500000000Z")");
  EXPECT_EQ(json_of_timestamp(-2208988800000000000), R"("1900-01-01T00:00:00.000000000Z")");
  EXPECT_EQ(json_of_timestamp(std::numeric_limits<int64_t>::min()),
            R"("1677-09-21T00:12:43.145224192Z")");
}

TEST(Json, NestedListsAndDicts) {
  std::string json = json_of([](Value::Builder v) {
    auto list = v.initList(4);
    list[0].setInt64(1);
    auto inner = list[1].initList(2);
    inner[0].setBool(true);  // inner[1] stays null
    auto dict = list[2].initDict(3);
    dict[0].setKey("k");
    dict[0].initValue().setText("v");
    dict[1].setKey("empty list");
    dict[1].initValue().initList(0);
    dict[2].setKey("quote\"key");
    dict[2].initValue().initDict(0);
    list[3].initList(0);
  });
  EXPECT_EQ(json, R"([1,[true,null],{"k":"v","empty list":[],"quote\"key":{}},[]])");
}

TEST(Json, DictKeepsKeyOrder) {
  std::string json = json_of([](Value::Builder v) {
    auto dict = v.initDict(3);
    const char* keys[] = {"z", "a", "m"};
    for (unsigned i = 0; i < 3; ++i) {
      dict[i].setKey(keys[i]);
      dict[i].initValue().setUint64(i);
    }
  });
  EXPECT_EQ(json, R"({"z":0,"a":1,"m":2})");
}

void nest_lists(Value::Builder v, unsigned levels) {
  for (unsigned i = 0; i < levels; ++i) v = v.initList(1)[0];
}

TEST(Json, DepthIsBounded) {
  EXPECT_EQ(json_of([](Value::Builder v) { nest_lists(v, kMaxJsonDepth); }),
            std::string(kMaxJsonDepth, '[') + "null" + std::string(kMaxJsonDepth, ']'));
  EXPECT_THROW(json_of([](Value::Builder v) { nest_lists(v, kMaxJsonDepth + 1); }), DecodeError);
}

TEST(Json, UnknownValueKind) {
  std::string json = json_of([](Value::Builder v) {
    auto list = v.initList(3);
    list[0].setInt64(1);
    list[1].setInt64(2);
    set_unknown_discriminant(list[1]);
    list[2].setInt64(3);
  });
  EXPECT_EQ(json, R"([1,{"unknown":true},3])");
}

TEST(Json, AppendsToWhatIsThere) {
  capnp::MallocMessageBuilder message;
  auto value = message.initRoot<Value>();
  value.setInt64(5);
  std::string out = "[";
  append_json(out, value.asReader());
  out += ',';
  append_json(out, value.asReader());
  EXPECT_EQ(out, "[5,5");
}

TEST(Json, RowBatchGivesOneLinePerRow) {
  RowBatchWriter writer(7, "Generic.Client.Stats", "stats", Lane::EVENTS, {"Pid", "Name", "When"});
  auto row = writer.add_row();
  row[0].setInt64(1);
  row[1].setText("init");
  row[2].setTimestamp(1700000000123456789);
  row = writer.add_row();
  row[0].setInt64(2);
  row[1].setText("sshd \"-D\"");  // When stays null
  std::string out = lines_of(writer.finish(), 12);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 2);
  EXPECT_EQ(out,
            R"({"seq":12,"lane":"events","query_id":7,"artifact":"Generic.Client.Stats",)"
            R"("source":"stats","row":{"Pid":1,"Name":"init",)"
            R"("When":"2023-11-14T22:13:20.123456789Z"}})"
            "\n"
            R"({"seq":12,"lane":"events","query_id":7,"artifact":"Generic.Client.Stats",)"
            R"("source":"stats","row":{"Pid":2,"Name":"sshd \"-D\"","When":null}})"
            "\n");
}

TEST(Json, RowShorterOrLongerThanColumns) {
  RecordWriter writer(9, 0);
  auto batch = writer.record().initRowBatch();
  batch.setLane(Lane::RESULTS);
  batch.setArtifact("A");
  batch.setSource("S");
  auto columns = batch.initColumns(3);
  columns.set(0, "a");
  columns.set(1, "b");
  columns.set(2, "c");
  auto rows = batch.initRows(2);
  auto shorter = rows.init(0, 2);
  shorter[0].setInt64(1);
  shorter[1].setInt64(2);
  auto longer = rows.init(1, 5);
  for (unsigned i = 0; i < 5; ++i) longer[i].setInt64(i + 1);
  EXPECT_EQ(lines_of(writer.finish(), 3),
            R"({"seq":3,"lane":"results","query_id":9,"artifact":"A","source":"S",)"
            R"("row":{"a":1,"b":2,"c":null}})"
            "\n"
            R"({"seq":3,"lane":"results","query_id":9,"artifact":"A","source":"S",)"
            R"("row":{"a":1,"b":2,"c":3,"_3":4,"_4":5}})"
            "\n");
}

TEST(Json, EmptyRowBatchGivesNoLines) {
  RowBatchWriter writer(7, "A", "S", Lane::EVENTS, {"x"});
  EXPECT_EQ(lines_of(writer.finish(), 1), "");
}

TEST(Json, UnknownLaneInRowBatch) {
  RowBatchWriter writer(7, "A", "S", static_cast<Lane>(77), {"x"});
  writer.add_row()[0].setBool(false);
  EXPECT_EQ(lines_of(writer.finish(), 1),
            R"({"seq":1,"lane":"unknown","query_id":7,"artifact":"A","source":"S",)"
            R"("row":{"x":false}})"
            "\n");
}

TEST(Json, LogMessage) {
  RecordWriter writer(5, 0);
  auto log = writer.record().initLog();
  log.setLevel(LogMessage::Level::WARN);
  log.setText("disk \"low\"\n");
  log.setTimeNs(-1);
  EXPECT_EQ(lines_of(writer.finish(), 4),
            R"({"seq":4,"lane":"control","query_id":5,"log":{"level":"warn",)"
            R"("text":"disk \"low\"\u000a","time":"1969-12-31T23:59:59.999999999Z"}})"
            "\n");
}

TEST(Json, LogLevels) {
  const char* names[] = {"trace", "debug", "info", "warn", "error", "critical", "unknown"};
  for (uint16_t level = 0; level <= 6; ++level) {
    RecordWriter writer(0, 0);
    auto log = writer.record().initLog();
    log.setLevel(static_cast<LogMessage::Level>(level == 6 ? 42 : level));
    std::string out = lines_of(writer.finish(), 1);
    EXPECT_NE(out.find(std::string("\"level\":\"") + names[level] + "\""), std::string::npos)
        << out;
  }
}

TEST(Json, EncodedLogMessage) {
  std::string out = lines_of(encode_log(3, LogMessage::Level::ERROR, "boom"), 2);
  const std::string start =
      R"({"seq":2,"lane":"control","query_id":3,"log":{"level":"error","text":"boom","time":")";
  EXPECT_EQ(out.compare(0, start.size(), start), 0) << out;
  EXPECT_EQ(out.back(), '\n');
}

TEST(Json, UploadChunkWithoutData) {
  RecordWriter writer(11, 0);
  auto chunk = writer.record().initUploadChunk();
  chunk.setPath("/var/log/sys\tlog");
  chunk.setOffset(4096);
  const kj::byte data[] = {'s', 'e', 'c', 'r', 't'};
  chunk.setData(kj::arrayPtr(data, 5));
  chunk.setEof(true);
  chunk.setTotalSize(4101);
  kj::byte sha[32];
  for (unsigned i = 0; i < 32; ++i) sha[i] = static_cast<kj::byte>(i * 8);
  chunk.setSha256(kj::arrayPtr(sha, 32));
  std::string out = lines_of(writer.finish(), 20);
  EXPECT_EQ(out,
            R"({"seq":20,"lane":"uploads","query_id":11,"upload":{"path":"/var/log/sys\u0009log",)"
            R"("offset":4096,"size":5,"eof":true,"total_size":4101,"sha256":")"
            "0008101820283038404850586068707880889098a0a8b0b8c0c8d0d8e0e8f0f8"
            R"("}})"
            "\n");
  EXPECT_EQ(out.find("secrt"), std::string::npos);
  EXPECT_EQ(out.find("c2VjcnQ"), std::string::npos);  // not even as base64
}

TEST(Json, UploadChunkBeforeEof) {
  RecordWriter writer(11, 0);
  auto chunk = writer.record().initUploadChunk();
  chunk.setPath("f");
  EXPECT_EQ(lines_of(writer.finish(), 21),
            R"({"seq":21,"lane":"uploads","query_id":11,"upload":{"path":"f","offset":0,)"
            R"("size":0,"eof":false,"total_size":0,"sha256":""}})"
            "\n");
}

template <typename Fill>
std::string status_line(Fill&& fill) {
  RecordWriter writer(UINT64_MAX, 0);
  fill(writer.record().initQueryStatus());
  return lines_of(writer.finish(), 30);
}

TEST(Json, QueryStatuses) {
  const std::string prefix = R"({"seq":30,"lane":"control","query_id":18446744073709551615,)";
  using Status = schema::QueryStatus::Builder;
  EXPECT_EQ(status_line([](Status s) { s.setStarted(); }),
            prefix + R"("status":{"started":true}})" + "\n");
  EXPECT_EQ(status_line([](Status s) {
              auto finished = s.initFinished();
              finished.setRowCount(1234);
              finished.setError("timeout: \"x\"");
            }),
            prefix + R"("status":{"finished":{"rows":1234,"error":"timeout: \"x\"","bytes":0,"duration_ns":0,)"
                     R"("outcome":"finished"}}})" + "\n");
  EXPECT_EQ(status_line([](Status s) { s.initFinished().setRowCount(0); }),
            prefix + R"("status":{"finished":{"rows":0,"error":"","bytes":0,"duration_ns":0,"outcome":"finished"}}})" +
                "\n");
  EXPECT_EQ(status_line([](Status s) { s.setPaused(); }),
            prefix + R"("status":{"paused":true}})" + "\n");
  EXPECT_EQ(status_line([](Status s) { s.setResumed(); }),
            prefix + R"("status":{"resumed":true}})" + "\n");
  EXPECT_EQ(status_line([](Status s) { s.setDroppedAtSource(77); }),
            prefix + R"("status":{"dropped_at_source":77}})" + "\n");
  EXPECT_EQ(status_line([](Status s) {
              s.setDroppedAtSource(77);
              set_unknown_discriminant(s);
            }),
            prefix + R"("status":{"unknown":true}})" + "\n");
}

TEST(Json, FlowStatuses) {
  const std::string start = R"({"seq":4,"lane":"control","query_id":0,"status":)";
  std::string started = lines_of(encode_flow_started(4294967297, "Generic.Client.Info"), 4);
  const std::string head = start + R"({"started":true,"flow_id":4294967297,"artifact":"Generic.Client.Info","time":")";
  EXPECT_EQ(started.compare(0, head.size(), head), 0) << started;
  EXPECT_EQ(started.substr(started.size() - 5), "Z\"}}\n") << started;
  FlowEnd end;
  end.rows = 12;
  end.bytes = 3456;
  end.duration_ns = 789;
  end.outcome = schema::QueryStatus::Outcome::FAILED;
  end.error = "no such file";
  std::string finished = lines_of(encode_flow_finished(4294967297, "A", end), 4);
  const std::string fhead = start + R"({"finished":{"rows":12,"error":"no such file","bytes":3456,"duration_ns":789,)"
                                    R"("outcome":"failed"},"flow_id":4294967297,"artifact":"A","time":")";
  EXPECT_EQ(finished.compare(0, fhead.size(), fhead), 0) << finished;
}

TEST(Json, UnknownRecordKind) {
  RecordWriter writer(5, 0);
  writer.record().initLog().setText("from the future");
  set_unknown_discriminant(writer.record());
  EXPECT_EQ(lines_of(writer.finish(), 8),
            R"({"seq":8,"lane":"unknown","query_id":5,"unknown":true})"
            "\n");
}

TEST(Json, MalformedTextThrowsDecodeErrorAndLeavesOutputAlone) {
  RowBatchWriter writer(7, "A", "S", Lane::EVENTS, {"x"});
  writer.add_row()[0].setText("abcdefg");  // with its NUL, exactly one word
  Encoded encoded = writer.finish();
  auto words = kj::heapArray<capnp::word>(encoded.words().size());
  std::memcpy(words.begin(), encoded.words().begin(), encoded.words().size() * sizeof(capnp::word));
  auto bytes = words.asBytes();
  const char needle[] = "abcdefg";  // 8 bytes with the NUL
  auto at = std::search(bytes.begin(), bytes.end(), needle, needle + sizeof needle);
  ASSERT_NE(at, bytes.end());
  at[7] = 'h';  // no NUL any more

  RecordView view(words);  // checks the root only
  std::string out = "earlier line\n";
  EXPECT_THROW(append_json_lines(out, 1, view.record()), DecodeError);
  EXPECT_EQ(out, "earlier line\n");
}

}  // namespace
}  // namespace outpost::schemas
