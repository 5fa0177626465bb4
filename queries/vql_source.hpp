#pragma once
// A VQL query as a query actor's source: rows from the engine's stream go
// into RowBatches, a batch per run of rows with the same columns.

#include "actors/source.hpp"
#include "queries/engine.hpp"
#include "queries/uploads.hpp"
#include "schemas/codec.hpp"

namespace outpost::vql {

class VqlSource : public Source {
 public:
  // Bytes of rows a pull adds to a batch, about: a quarter of the record-size
  // limit, so that one pull's rows never need more than one record.
  static constexpr size_t kMaxPullBytes = schemas::kMaxRecordBytes / 4;

  // Compiles nothing: the queries are parsed and checked already. Several
  // (an artifact's sources) run at once, their rows interleaved.
  VqlSource(const Engine& engine, std::vector<std::shared_ptr<const ast::Query>> queries,
            const std::vector<Binding>& parameters, std::shared_ptr<const Paths> paths = default_paths(),
            SensorHub* sensors = nullptr,
            uint64_t query_id = 0);

  std::vector<std::string> columns() const override { return columns_; }
  void set_wake(std::function<void()> wake) override;
  // Throws std::runtime_error with the query's error (the query then fails).
  PullResult pull(schemas::RowBatchWriter& batch, size_t max_rows) override;

 private:
  bool same_columns(const Row& row) const;

  Engine engine_;
  std::vector<std::shared_ptr<const ast::Query>> queries_;  // the streams refer into them
  Env env_;
  std::unique_ptr<RowStream> stream_;
  std::vector<Row> pending_;  // rows taken from the stream, not yet in a batch
  size_t next_ = 0;
  Step last_{};
  std::vector<std::string> columns_;  // of the batch being filled
  uint64_t query_id_;                 // of the upload chunks
  FileUploader uploads_;
};

}  // namespace outpost::vql
