#include <capnp/schema.h>
#include <gtest/gtest.h>

#include "schemas/codec.hpp"

namespace outpost::schemas {
namespace {

TEST(Schema, LaneCountMatchesRowsCapnp) {
  EXPECT_EQ(capnp::Schema::from<Lane>().getEnumerants().size(), kLaneCount);
  EXPECT_STREQ(lane_name(Lane::UPLOADS), "uploads");
}

TEST(Schema, RowBatchRoundTripsEveryValueKind) {
  RowBatchWriter writer(42, "Linux.Sys.Pslist", "procs", Lane::RESULTS, {"Pid", "Name", "Extra"});
  for (int i = 0; i < 3; ++i) {
    auto row = writer.add_row();
    row[0].setInt64(1000 + i);
    row[1].setText(i == 0 ? "init" : "sshd");
    if (i == 0) {
      auto list = row[2].initList(3);
      list[0].setUint64(UINT64_MAX);
      list[1].setFloat64(2.5);
      list[2].setBool(true);
    } else if (i == 1) {
      auto dict = row[2].initDict(2);
      dict[0].setKey("ts");
      dict[0].initValue().setTimestamp(1700000000123456789);
      dict[1].setKey("raw");
      const kj::byte raw[] = {0, 1, 255};
      dict[1].initValue().setBytes(kj::arrayPtr(raw, 3));
    }  // row 2 keeps Extra null
  }
  EXPECT_EQ(writer.row_count(), 3u);
  Encoded encoded = writer.finish();
  EXPECT_EQ(encoded.size() % 8, 0u);

  RecordView view(encoded.words());
  auto record = view.record();
  EXPECT_EQ(record.getQueryId(), 42u);
  ASSERT_TRUE(record.isRowBatch());
  auto batch = record.getRowBatch();
  EXPECT_EQ(batch.getArtifact(), "Linux.Sys.Pslist");
  EXPECT_EQ(batch.getSource(), "procs");
  EXPECT_EQ(batch.getLane(), Lane::RESULTS);
  EXPECT_EQ(batch.getCreatedNs(), record.getCreatedNs());
  ASSERT_EQ(batch.getColumns().size(), 3u);
  EXPECT_EQ(batch.getColumns()[2], "Extra");
  auto rows = batch.getRows();
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[2][0].getInt64(), 1002);
  EXPECT_EQ(rows[1][1].getText(), "sshd");
  EXPECT_EQ(rows[0][2].getList()[0].getUint64(), UINT64_MAX);
  EXPECT_DOUBLE_EQ(rows[0][2].getList()[1].getFloat64(), 2.5);
  auto dict = rows[1][2].getDict();
  EXPECT_EQ(dict[0].getKey(), "ts");
  EXPECT_EQ(dict[0].getValue().getTimestamp(), 1700000000123456789);
  EXPECT_EQ(dict[1].getValue().getBytes()[2], 255);
  EXPECT_TRUE(rows[2][2].isNull());
}

TEST(Schema, LogRecord) {
  Encoded encoded = encode_log(7, schema::LogMessage::Level::WARN, "disk almost full");
  RecordView view(encoded.words());
  ASSERT_TRUE(view.record().isLog());
  EXPECT_EQ(view.record().getLog().getText(), "disk almost full");
  EXPECT_EQ(view.record().getLog().getLevel(), schema::LogMessage::Level::WARN);
}

TEST(Schema, MalformedRecordIsADecodeErrorNotACrash) {
  // A segment table that claims far more words than the buffer holds.
  kj::Array<capnp::word> garbage = kj::heapArray<capnp::word>(4);
  auto bytes = garbage.asBytes();
  std::fill(bytes.begin(), bytes.end(), 0xff);
  EXPECT_THROW(RecordView view(garbage), DecodeError);

  // A valid frame whose root pointer points far outside the segment.
  kj::Array<capnp::word> bad_pointer = kj::heapArray<capnp::word>(2);
  auto b = bad_pointer.asBytes();
  std::fill(b.begin(), b.end(), 0);
  b[4] = 1;             // segment 0 is 1 word long
  b[8] = 0xfc;          // struct pointer with a huge offset
  b[9] = b[10] = b[11] = 0x7f;
  b[12] = 1;
  EXPECT_THROW(RecordView view(bad_pointer), DecodeError);
}

// The counters' row count: a row batch's rows, 0 for any other record, and 0
// (not a throw) for a malformed one.
TEST(Schema, RowCountReadsARowBatchInPlace) {
  std::vector<std::string> columns{"n"};
  RowBatchWriter batch(1, "A", "src", Lane::RESULTS, columns);
  for (int i = 0; i < 37; ++i) batch.add_row()[0].setInt64(i);
  Encoded rows = batch.finish();
  EXPECT_EQ(row_count(rows.words()), 37u);
  EXPECT_EQ(row_count(encode_log(7, schema::LogMessage::Level::WARN, "x").words()), 0u);
  kj::Array<capnp::word> garbage = kj::heapArray<capnp::word>(4);
  std::fill(garbage.asBytes().begin(), garbage.asBytes().end(), 0xff);
  EXPECT_EQ(row_count(garbage), 0u);
}

}  // namespace
}  // namespace outpost::schemas
