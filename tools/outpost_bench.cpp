#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>

#include "tools/bench.hpp"

int main(int argc, char** argv) {
  using namespace outpost::bench;
  CLI::App app{"outpost-bench: Outpost's benchmarks, each against a same-run baseline"};
  app.require_subcommand(1);

  BufferBenchOptions buffer;
  auto* b = app.add_subcommand(
      "buffer", "append fsynced record batches to the buffer store, then drain it; baseline: a bare "
                "LMDB loop doing the same appends");
  b->add_flag("--json", buffer.json, "print one JSON object");
  b->add_option("--dir", buffer.dir, "directory for the stores (default: a new temp dir)");
  b->add_option("--records", buffer.records, "records per round")->check(CLI::PositiveNumber);
  b->add_option("--batch", buffer.batch, "records per append (one transaction)")
      ->check(CLI::PositiveNumber);
  b->add_option("--record-size", buffer.record_size, "payload bytes per record")
      ->check(CLI::PositiveNumber);
  b->add_option("--rounds", buffer.rounds, "rounds; the median counts")->check(CLI::PositiveNumber);

  PipelineBenchOptions pipeline;
  auto* p = app.add_subcommand(
      "pipeline", "N synthetic queries as fast as the pipeline takes their rows, through the buffer "
                  "actor (sync=full) into the file link; baseline: the bare store appending the "
                  "same rows in 1000-row batches");
  p->add_flag("--json", pipeline.json, "print one JSON object");
  p->add_option("--dir", pipeline.dir, "working directory (default: a new temp dir)");
  p->add_option("--queries", pipeline.queries, "query actors")->check(CLI::PositiveNumber);
  p->add_option("--row-size", pipeline.row_size, "bytes of each row's Data column")
      ->check(CLI::PositiveNumber);
  p->add_option("--rows", pipeline.rows, "rows per round, shared by the queries")
      ->check(CLI::PositiveNumber);
  p->add_option("--rounds", pipeline.rounds, "rounds; the median counts")->check(CLI::PositiveNumber);

  VqlBenchOptions vql;
  auto* v = app.add_subcommand("vql", "the evaluator: a filter over 1M process-like rows, against the same filter by hand");
  v->add_flag("--json", vql.json, "print one JSON object");
  v->add_option("--rows", vql.rows, "rows")->check(CLI::PositiveNumber);
  v->add_option("--rounds", vql.rounds, "rounds (the median is reported)")->check(CLI::PositiveNumber);

  SensorsBenchOptions sensors;
  auto* s = app.add_subcommand("sensors", "N query actors on one shared sensor, through the buffer: events fanned "
                                          "out per second and RSS per query");
  s->add_flag("--json", sensors.json, "print one JSON object");
  s->add_option("--dir", sensors.dir, "working directory (default: a new temp dir)");
  s->add_option("--queries", sensors.queries, "query actors")->check(CLI::PositiveNumber);
  s->add_option("--period", sensors.period_s, "seconds between the sensor's events")->check(CLI::PositiveNumber);
  s->add_option("--per-tick", sensors.per_tick, "events each time")->check(CLI::PositiveNumber);
  s->add_option("--seconds", sensors.seconds, "how long to measure")->check(CLI::PositiveNumber);

  QueriesBenchOptions queries;
  auto* q = app.add_subcommand(
      "queries", "RSS of N idle clock queries (1 s period) above the agent without queries");
  q->add_flag("--json", queries.json, "print one JSON object");
  q->add_option("--dir", queries.dir, "working directory (default: a new temp dir)");
  q->add_option("--queries", queries.queries, "query actors")->check(CLI::PositiveNumber);

  E2EBenchOptions e2e;
  auto* e = app.add_subcommand(
      "e2e", "agent -> collector over loopback, both durable: throughput, latency at a moderate "
             "rate, and a backlog drained while live rows flow");
  e->add_flag("--json", e2e.json, "print one JSON object");
  e->add_flag("--tls", e2e.tls, "mutual TLS (certificates from tools/outpost-certs)");
  e->add_option("--dir", e2e.dir, "working directory (default: a new temp dir)");
  e->add_option("--queries", e2e.queries, "query actors")->check(CLI::PositiveNumber);
  e->add_option("--rows", e2e.rows, "rows in the throughput phase")->check(CLI::PositiveNumber);
  e->add_option("--rate", e2e.rate, "rows per second in the latency phase")->check(CLI::PositiveNumber);
  e->add_option("--latency-seconds", e2e.latency_seconds, "length of the latency phase")
      ->check(CLI::PositiveNumber);
  e->add_option("--backlog-mb", e2e.backlog_mb, "MiB spooled while the collector is down")
      ->check(CLI::PositiveNumber);

  EmbedBenchOptions embed;
  auto* m = app.add_subcommand(
      "embed", "a host pushing rows through the library's push() into its own sink (link: host), "
               "through the buffer (sync=full); baseline: the same rows from a built-in synthetic "
               "query into the same sink, in the same run");
  m->add_flag("--json", embed.json, "print one JSON object");
  m->add_option("--dir", embed.dir, "working directory (default: a new temp dir)");
  m->add_option("--row-size", embed.row_size, "bytes of each row's Data column")->check(CLI::PositiveNumber);
  m->add_option("--rows", embed.rows, "rows per round")->check(CLI::PositiveNumber);
  m->add_option("--rounds", embed.rounds, "rounds; the median counts")->check(CLI::PositiveNumber);

  KernelBenchOptions kernel;
  auto* k = app.add_subcommand(
      "kernel", "an exec storm (/bin/true started and reaped, as fast as the machine goes) with the process "
                "event sensor off, then on, in turn: the storm's rate both ways, the sensor's CPU per 1,000 "
                "events, and events lost (as root)");
  k->add_flag("--json", kernel.json, "print one JSON object");
  k->add_option("--backend", kernel.backend, "auto, ebpf or proc_connector");
  k->add_option("--workers", kernel.workers, "storm threads (default: one per core)")->check(CLI::PositiveNumber);
  k->add_option("--seconds", kernel.seconds, "length of each phase")->check(CLI::PositiveNumber);
  k->add_option("--rounds", kernel.rounds, "rounds; the medians count")->check(CLI::PositiveNumber);

  FootprintBenchOptions footprint;
  auto* f = app.add_subcommand(
      "footprint", "the agent's own cost: outpost-agent with its default configuration (link offline) idle, "
                   "with one 10 rows/s query, and with 100 queries of ~1 row/s grouped into commits and not; "
                   "CPU, memory and wakeups per thread from /proc, rows and commits from outpostctl");
  f->add_flag("--json", footprint.json, "print one JSON object");
  f->add_option("--agent", footprint.agent, "the outpost-agent binary (default: beside outpost-bench)");
  f->add_option("--dir", footprint.dir, "working directory (default: a new temp dir)");
  f->add_option("--seconds", footprint.seconds, "length of each measurement")->check(CLI::PositiveNumber);

  FleetBenchOptions fleet;
  auto* fl = app.add_subcommand(
      "fleet", "outpost-collector (one, or several on NATS) against N simulated agents (the real protocol over mutual TLS, each with its "
               "own certificate, many per thread) making R rows/s each: rows stored per second, latency from a "
               "row's making to its durable storage, the collector's CPU and memory; over a sweep of N, the highest "
               "N under the latency target");
  fl->add_flag("--json", fleet.json, "print one JSON object");
  fl->add_option("--agents", fleet.agents, "agents; several (--agents 100 1000 10000) make a sweep")
      ->check(CLI::PositiveNumber);
  fl->add_option("--rate", fleet.rate, "rows per second per agent")->check(CLI::PositiveNumber);
  fl->add_option("--max-delay-ms", fleet.max_delay_ms,
                 "an agent holds a row up to this long to send it with the next ones (0: at once)")
      ->check(CLI::NonNegativeNumber);
  fl->add_option("--seconds", fleet.seconds, "the measured window")->check(CLI::PositiveNumber);
  fl->add_option("--warmup", fleet.warmup, "seconds between the last agent connecting and the window")
      ->check(CLI::NonNegativeNumber);
  fl->add_option("--threads", fleet.threads, "threads the simulated agents share")->check(CLI::PositiveNumber);
  fl->add_option("--latency-target-ms", fleet.latency_target_ms, "the p99 a run of the sweep must stay under")
      ->check(CLI::PositiveNumber);
  fl->add_flag("--reconnect-storm", fleet.reconnect_storm,
               "after the window, every agent drops its connection at once: time until all are back");
  fl->add_option("--collector", fleet.collector, "the outpost-collector binary (default: beside outpost-bench)");
  fl->add_option("--collector-arg", fleet.collector_args, "one more option for outpost-collector (repeatable), "
                                                          "e.g. --collector-arg=--max-handshakes=100000");
  fl->add_option("--backend", fleet.backend, "the collectors' storage: jsonl, or jetstream (NATS nodes started for "
                                             "each run)")
      ->check(CLI::IsMember({"jsonl", "jetstream"}))
      ->capture_default_str();
  fl->add_option("--collectors", fleet.collectors, "jetstream: collectors; agent i connects to collector i % N")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  fl->add_option("--nats-nodes", fleet.nats_nodes, "jetstream: 1, or 3 (a cluster, R=3)")
      ->check(CLI::IsMember({1, 3}))
      ->capture_default_str();
  fl->add_option("--kill-nats-node-at", fleet.kill_nats_node_at,
                 "jetstream with 3 nodes: kill -9 one node this many seconds into the window");
  fl->add_option("--dir", fleet.dir, "working directory (default: a new temp dir)");

  CLI11_PARSE(app, argc, argv);
  spdlog::set_default_logger(spdlog::stderr_color_mt("bench"));  // stdout carries the results
  try {
    if (*b) return run_buffer_bench(buffer);
    if (*p) return run_pipeline_bench(pipeline);
    if (*e) return run_e2e_bench(e2e);
    if (*v) return run_vql_bench(vql);
    if (*s) return run_sensors_bench(sensors);
    if (*m) return run_embed_bench(embed);
    if (*k) return run_kernel_bench(kernel);
    if (*f) return run_footprint_bench(footprint);
    if (*fl) return run_fleet_bench(fleet);
    return run_queries_bench(queries);
  } catch (const std::exception& e) {
    fprintf(stderr, "outpost-bench: %s\n", e.what());
    return 1;
  }
}
