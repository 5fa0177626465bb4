// outpost-soak: faults at random against a real agent and collector under
// continuous flow, then a row-by-row check of what the collector stored
// (soak_check.hpp); or, with `memory`, a long steady run sampling both
// processes' RSS. Prints a JSON report with --json; exits 1 when a row was
// lost, duplicated or reordered, a fault wedged the flow, or memory grew past
// its bound.

#include <CLI/CLI.hpp>

#include <signal.h>

#include <algorithm>
#include <iostream>
#include <random>
#include <thread>

#include "tests/soak/fault_cycle.hpp"
#include "tests/soak/memory_soak.hpp"

using namespace outpost::soak;

int main(int argc, char** argv) {
  CLI::App app{"outpost-soak: a fault soak of a real agent and collector"};
  WorldOptions world;
  world.agent_binary = OUTPOST_AGENT;
  world.collector_binary = OUTPOST_COLLECTOR;
  world.certs_script = OUTPOST_CERTS;
  FaultSoakOptions faults;
  bool json = false;
  std::string dir;
  app.add_option("--cycles", faults.cycles, "fault cycles")->capture_default_str();
  app.add_option("--seed", faults.seed, "random seed (default: drawn, and printed)");
  app.add_option("--queries", world.queries, "synthetic queries per agent run")->capture_default_str();
  app.add_option("--rate", world.rate, "rows per second per query")->capture_default_str();
  app.add_option("--dir", dir, "keep everything in this directory (default: a temporary one, removed)");
  app.add_flag("--json", json, "print the report as JSON");
  app.add_option("--agent", world.agent_binary, "the outpost-agent binary")->capture_default_str();
  app.add_option("--collector", world.collector_binary, "the outpost-collector binary")->capture_default_str();

  MemorySoakOptions memory;
  auto* mem = app.add_subcommand("memory", "a steady run sampling the agent's and the collector's RSS");
  mem->fallthrough();  // --json, --rate, ... after `memory` too
  mem->add_option("--seconds", memory.seconds, "how long")->capture_default_str();
  mem->add_option("--sample-seconds", memory.sample_seconds, "between RSS samples")->capture_default_str();
  mem->add_option("--warmup-seconds", memory.warmup_seconds, "before the baseline sample")->capture_default_str();
  mem->add_option("--max-growth-mib", memory.max_growth_mib, "RSS growth allowed after the warm-up, each process")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  world.root = dir;
  ::signal(SIGPIPE, SIG_IGN);

  try {
    if (*mem) {
      world.small_disks = false;  // hours of rows: the machine's disk, not a tmpfs in memory
      auto report = run_memory_soak(world, memory);
      std::cout << (json ? report.json() : report.text()) << std::endl;
      return report.ok() ? 0 : 1;
    }
    if (!faults.seed) faults.seed = std::random_device{}();
    auto report = run_fault_soak(world, faults);
    std::cout << (json ? report.json() : report.text()) << std::endl;
    return report.ok() ? 0 : 1;
  } catch (const SoakError& e) {
    std::cerr << "outpost-soak: " << e.what() << std::endl;
    return 2;
  }
}
