#include <CLI/CLI.hpp>

#include "tools/bench.hpp"

int main(int argc, char** argv) {
  CLI::App app{"outpost-bench: Outpost's benchmarks, each against a same-run baseline"};
  app.require_subcommand(1);

  outpost::bench::BufferBenchOptions buffer;
  auto* cmd = app.add_subcommand(
      "buffer", "append fsynced record batches to the buffer store, then drain it; baseline: a bare "
                "LMDB loop doing the same appends");
  cmd->add_flag("--json", buffer.json, "print one JSON object");
  cmd->add_option("--dir", buffer.dir, "directory for the stores (default: a new temp dir)");
  cmd->add_option("--records", buffer.records, "records per round")->check(CLI::PositiveNumber);
  cmd->add_option("--batch", buffer.batch, "records per append (one transaction)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--record-size", buffer.record_size, "payload bytes per record")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--rounds", buffer.rounds, "rounds; the median counts")->check(CLI::PositiveNumber);

  CLI11_PARSE(app, argc, argv);
  return outpost::bench::run_buffer_bench(buffer);
}
