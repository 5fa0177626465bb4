// outpost-crash-writer DIR START_ID SEED
//
// Appends and acks at random until the crash test SIGKILLs it. Every line on
// stdout is a claim the parent holds the store to after the kill:
//   A <lane> <first_seq> <last_seq> <first_id>  append returned ok (ids first_id.. in seq order)
//   R <lane> <through_seq>                      an ack is about to start (may or may not land)
//   K <lane> <through_seq>                      that ack returned
// Lines go out with one write(2) each, unbuffered and shorter than PIPE_BUF,
// so the parent sees every claim made before the kill, and never half of one.

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "persistence/buffer_store.hpp"

using namespace outpost::persistence;

namespace {

void emit(const std::string& line) {
  if (::write(1, line.data(), line.size()) != static_cast<ssize_t>(line.size())) std::_Exit(3);
}

// Must match crash_test.cpp: the parent recomputes the payload from the id alone.
std::vector<kj::byte> payload_for(uint64_t id) {
  std::vector<kj::byte> p(1 + id % 700);
  for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<kj::byte>((id * 31 + i) & 0xff);
  return p;
}

using Range = std::pair<uint64_t, uint64_t>;  // inclusive seqs appended by this run

void ack(BufferStore& store, std::deque<Range>& known, size_t lane, uint64_t through) {
  emit("R " + std::to_string(lane) + " " + std::to_string(through) + "\n");
  store.ack(static_cast<Lane>(lane), through);
  emit("K " + std::to_string(lane) + " " + std::to_string(through) + "\n");
  while (!known.empty() && known.front().second <= through) known.pop_front();
  if (!known.empty() && known.front().first <= through) known.front().first = through + 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s DIR START_ID SEED\n", argv[0]);
    return 2;
  }
  // stdout carries the claims; the store's logs must not land in it.
  spdlog::set_default_logger(spdlog::stderr_color_st("crash-writer"));
  try {
    StoreOptions options;
    options.dir = argv[1];
    options.limit_bytes = 4ull << 20;  // small, so the writer also meets "full" and acks to make room
    options.sync = SyncPolicy::full;
    options.compact_threshold_bytes = 1ull << 20;
    BufferStore store(options);
    uint64_t next_id = std::stoull(argv[2]);
    std::mt19937_64 rng(std::stoull(argv[3]));
    std::vector<std::deque<Range>> known(kLaneCount);
    auto pick = [&](uint64_t lo, uint64_t hi) {
      return std::uniform_int_distribution<uint64_t>(lo, hi)(rng);
    };

    for (;;) {
      size_t lane = pick(0, kLaneCount - 1);
      size_t n = pick(1, 200);
      std::vector<std::vector<kj::byte>> payloads;
      std::vector<RecordIn> batch;
      for (size_t i = 0; i < n; ++i) payloads.push_back(payload_for(next_id + i));
      for (size_t i = 0; i < n; ++i)
        batch.push_back({next_id + i, static_cast<int64_t>((next_id + i) * 3),
                         kj::arrayPtr(payloads[i].data(), payloads[i].size())});
      AppendResult r = store.append(static_cast<Lane>(lane), kj::arrayPtr(batch.data(), n));

      if (r.ok()) {
        emit("A " + std::to_string(lane) + " " + std::to_string(r.first_seq) + " " +
             std::to_string(r.last_seq) + " " + std::to_string(next_id) + "\n");
        known[lane].push_back({r.first_seq, r.last_seq});
        next_id += n;
        if (pick(0, 49) == 0) {
          // Drain every lane: the store then compacts, and a kill may land in it.
          for (size_t l = 0; l < kLaneCount; ++l) ack(store, known[l], l, UINT64_MAX);
        } else if (pick(0, 9) == 0) {
          // Ack through a random seq of a random appended batch of some lane.
          size_t l = pick(0, kLaneCount - 1);
          if (!known[l].empty()) {
            auto& range = known[l][pick(0, known[l].size() - 1)];
            ack(store, known[l], l, pick(range.first, range.second));
          }
        }
      } else if (r.outcome == AppendOutcome::full) {
        // Free the oldest half of the fullest lane; records left by earlier
        // runs are not in `known`, so fall back to reading the lane itself.
        auto stats = store.stats();
        size_t l = 0;
        for (size_t i = 1; i < kLaneCount; ++i)
          if (stats.lanes[i].live.records > stats.lanes[l].live.records) l = i;
        auto head = store.read(static_cast<Lane>(l), 0, stats.lanes[l].live.records / 2 + 1,
                               SIZE_MAX);
        if (head.records.empty()) {
          std::fprintf(stderr, "crash-writer: full but lane %zu is empty: %s\n", l,
                       r.reason.c_str());
          return 4;
        }
        ack(store, known[l], l, head.records.back().seq);
      } else {
        std::fprintf(stderr, "crash-writer: append failed: %s (%s)\n", to_string(r.outcome),
                     r.reason.c_str());
        return 4;
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "crash-writer: %s\n", e.what());
    return 5;
  }
}
