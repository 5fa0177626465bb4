#pragma once
// Benchmarks report a figure and, measured in the same run, a baseline that
// does the same work with the bare library; the ratio is what we track.

#include <filesystem>

namespace outpost::bench {

struct BufferBenchOptions {
  std::filesystem::path dir;  // where the stores go; a temp dir when empty
  size_t records = 200000;
  size_t batch = 1000;
  size_t record_size = 256;
  int rounds = 3;  // store and baseline alternate; the median round counts
  bool json = false;
};

int run_buffer_bench(const BufferBenchOptions& options);

}  // namespace outpost::bench
