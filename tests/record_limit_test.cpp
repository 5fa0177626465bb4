// The one record-size limit (schemas::kMaxRecordBytes) as the batch writer
// holds it: a batch is cut before the row that would cross it, and a row
// too big for any record is refused where it is written.

#include <gtest/gtest.h>

#include "schemas/codec.hpp"

namespace outpost::schemas {
namespace {

std::unique_ptr<RowBatchWriter> writer() {
  return std::make_unique<RowBatchWriter>(7, "A", "q", Lane::EVENTS, std::vector<std::string>{"N", "Data"});
}

void add(RowBatchWriter& w, uint64_t n, size_t bytes) {
  auto row = w.add_row();
  row[0].setUint64(n);
  row[1].initBytes(bytes);
}

// The N column of each row of an encoded batch.
std::vector<uint64_t> numbers(const Encoded& e) {
  RecordView view(e.words());
  std::vector<uint64_t> out;
  for (auto row : view.record().getRowBatch().getRows()) out.push_back(row[0].getUint64());
  return out;
}

TEST(RecordLimit, ABatchIsCutBeforeTheRowThatWouldCrossTheLimitAndTheRestCarriesOver) {
  auto w = writer();
  for (uint64_t n = 1; n <= 10; ++n) add(*w, n, 1 << 20);  // 10 MiB in one pull
  EXPECT_EQ(w->take_refused().rows, 0u);
  EXPECT_TRUE(w->full());
  EXPECT_EQ(w->row_count(), 10u);

  std::vector<uint64_t> seen;
  int records = 0;
  while (w) {
    auto carried = w->take_carried();
    auto encoded = w->finish();
    ++records;
    EXPECT_LE(encoded.size(), kMaxRecordBytes);
    auto got = numbers(encoded);
    EXPECT_FALSE(got.empty());
    seen.insert(seen.end(), got.begin(), got.end());
    w = std::move(carried);
  }
  EXPECT_GE(records, 3);
  std::vector<uint64_t> all{1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  EXPECT_EQ(seen, all) << "every row once, in order";
}

TEST(RecordLimit, ARowTooBigForAnyRecordIsRefusedAndTheOthersStay) {
  auto w = writer();
  add(*w, 1, 100);
  add(*w, 2, kMaxRecordBytes);  // alone bigger than a record may be
  add(*w, 3, 100);
  auto refused = w->take_refused();
  EXPECT_EQ(refused.rows, 1u);
  EXPECT_GT(refused.largest_bytes, kMaxRecordBytes);
  EXPECT_EQ(w->row_count(), 2u);
  EXPECT_FALSE(w->full());
  EXPECT_EQ(w->take_refused().rows, 0u) << "counted once";
  auto encoded = w->finish();
  EXPECT_EQ(numbers(encoded), (std::vector<uint64_t>{1, 3}));
  EXPECT_LT(encoded.size(), 4096u) << "the refused row's space is not sent";
}

TEST(RecordLimit, TheLastRowIsCheckedAtFinish) {
  auto w = writer();
  add(*w, 1, 100);
  add(*w, 2, kMaxRecordBytes + 1);
  auto encoded = w->finish();
  EXPECT_EQ(numbers(encoded), (std::vector<uint64_t>{1}));
  EXPECT_EQ(w->take_refused().rows, 1u);
}

}  // namespace
}  // namespace outpost::schemas
