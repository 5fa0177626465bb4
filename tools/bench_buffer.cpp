#include <fmt/format.h>
#include <lmdb.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "persistence/buffer_store.hpp"
#include "persistence/lmdb.hpp"
#include "persistence/record_format.hpp"
#include "tools/bench.hpp"

namespace outpost::bench {
namespace fs = std::filesystem;
using namespace outpost::persistence;

namespace {

std::vector<kj::byte> make_payload(size_t size) {
  std::vector<kj::byte> payload(size);
  for (size_t i = 0; i < size; ++i) payload[i] = static_cast<kj::byte>(i * 131 + 7);
  return payload;
}

struct StoreRound {
  double append_s = 0;
  double drain_s = 0;
  uint64_t commits = 0;
};

StoreRound store_round(const fs::path& dir, const BufferBenchOptions& o) {
  StoreOptions options;
  options.dir = dir;
  options.sync = SyncPolicy::full;
  options.limit_bytes = std::max<uint64_t>(options.limit_bytes,
                                           o.records * record_format::accounted_bytes(o.record_size) * 2);
  BufferStore store(options);
  auto payload = make_payload(o.record_size);
  std::vector<RecordIn> batch(o.batch);
  StoreRound round;

  auto start = Clock::now();
  for (size_t done = 0; done < o.records;) {
    size_t n = std::min(o.batch, o.records - done);
    for (size_t i = 0; i < n; ++i)
      batch[i] = {done + i + 1, 0, kj::ArrayPtr<const kj::byte>(payload.data(), payload.size())};
    auto result = store.append(Lane::EVENTS, kj::ArrayPtr<const RecordIn>(batch.data(), n));
    if (!result.ok()) throw StoreError("benchmark append refused: " + result.reason);
    done += n;
  }
  round.append_s = seconds_since(start);
  round.commits = store.stats().commits;

  start = Clock::now();
  uint64_t after = 0, drained = 0;
  for (;;) {
    auto read = store.read(Lane::EVENTS, after, o.batch, 4 << 20);
    if (read.records.empty()) break;
    after = read.records.back().seq;
    drained += read.records.size();
    store.ack(Lane::EVENTS, after);
  }
  round.drain_s = seconds_since(start);
  if (drained != o.records)
    throw StoreError(fmt::format("benchmark drained {} of {} records", drained, o.records));
  return round;
}

// The same appends with nothing but LMDB: one write transaction and one
// fsync per batch, MDB_APPEND with big-endian keys, values of the same size.
double baseline_round(const fs::path& dir, const BufferBenchOptions& o) {
  fs::create_directories(dir);
  lmdb::Env env(dir.string(), MDB_NOTLS, 4ull << 30, 2);
  MDB_dbi dbi;
  {
    lmdb::Txn txn(env, false);
    lmdb::check(mdb_dbi_open(txn.get(), "lane", MDB_CREATE, &dbi), "mdb_dbi_open", dir.string());
    lmdb::check(txn.commit(), "mdb_txn_commit", dir.string());
  }
  auto payload = make_payload(o.record_size);
  auto start = Clock::now();
  uint64_t seq = 0;
  for (size_t done = 0; done < o.records;) {
    size_t n = std::min(o.batch, o.records - done);
    lmdb::Txn txn(env, false);
    for (size_t i = 0; i < n; ++i) {
      record_format::Key key(++seq);
      MDB_val k = key.val(), v{payload.size(), payload.data()};
      lmdb::check(mdb_put(txn.get(), dbi, &k, &v, MDB_APPEND), "mdb_put", dir.string());
    }
    lmdb::check(txn.commit(), "mdb_txn_commit", dir.string());
    done += n;
  }
  return seconds_since(start);
}

}  // namespace

int run_buffer_bench(const BufferBenchOptions& o) {
  spdlog::set_level(spdlog::level::warn);
  WorkDir work(o.dir);
  const fs::path& root = work.path();
  if (!o.json)
    fmt::print("outpost-bench buffer: {} records of {} bytes, {} per append, sync=full, {} rounds, in {}\n",
               o.records, o.record_size, o.batch, o.rounds, root.string());

  std::vector<double> append_s, drain_s, baseline_s;
  uint64_t commits = 0;
  for (int r = 0; r < o.rounds; ++r) {
    fs::path store_dir = root / fmt::format("store-{}", r), base_dir = root / fmt::format("bare-{}", r);
    baseline_s.push_back(baseline_round(base_dir, o));
    auto round = store_round(store_dir, o);
    append_s.push_back(round.append_s);
    drain_s.push_back(round.drain_s);
    commits = round.commits;
    fs::remove_all(store_dir);
    fs::remove_all(base_dir);
    if (!o.json)
      fmt::print("  round {}: store append {:.3f} s, drain {:.3f} s; bare LMDB append {:.3f} s\n", r + 1,
                 round.append_s, round.drain_s, baseline_s.back());
  }

  double n = static_cast<double>(o.records);
  double append_rows = n / median(append_s), baseline_rows = n / median(baseline_s);
  double append_mb = append_rows * o.record_size / 1e6;
  double drain_rows = n / median(drain_s);
  double ratio = append_rows / baseline_rows;
  if (o.json) {
    fmt::print(
        "{{\"bench\":\"buffer\",\"records\":{},\"record_size\":{},\"batch\":{},\"rounds\":{},"
        "\"append_rows_per_s\":{:.0f},\"append_mb_per_s\":{:.2f},\"baseline_rows_per_s\":{:.0f},"
        "\"ratio\":{:.3f},\"drain_rows_per_s\":{:.0f},\"store_commits_per_round\":{}}}\n",
        o.records, o.record_size, o.batch, o.rounds, append_rows, append_mb, baseline_rows, ratio,
        drain_rows, commits);
  } else {
    fmt::print("append:   {:>10.0f} rows/s  {:>7.2f} MB/s  ({} commits per round)\n", append_rows,
               append_mb, commits);
    fmt::print("baseline: {:>10.0f} rows/s  (bare LMDB, same batches, fsync per commit)\n",
               baseline_rows);
    fmt::print("ratio:    {:>10.3f}  (store / baseline; target >= 0.8)\n", ratio);
    fmt::print("drain:    {:>10.0f} rows/s  (read + ack)\n", drain_rows);
  }
  return 0;
}

}  // namespace outpost::bench
