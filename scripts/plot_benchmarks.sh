#!/usr/bin/env bash
# Runs outpost-bench at several sizes (--json) and draws the figures with
# gnuplot as SVG (BENCHMARKS.md, "Plots"):
#   pipeline_throughput.svg  pipeline rows/s and its same-run baseline against the number of queries
#   sensors_throughput.svg   events/s committed, and offered, against the number of sensor queries
#   queries_memory.svg       bytes per idle clock query (RSS, anonymous, malloc'd) against their number
#   e2e_latency.svg          end-to-end latency p50 and p99 against the row rate
#   e2e_latency_cdf.svg      the distribution of that latency at 10,000 rows/s, and of live rows'
#                            during the drain of a backlog
#   e2e_drain.svg            the backlog still buffered against the time since the collector came back
# Each run's JSON line goes to OUT/<bench>.jsonl (default OUT: docs/bench), the
# machine and the commit to OUT/machine.txt; --plot-only draws from those files
# again without running anything. Not run by CI.
#   scripts/plot_benchmarks.sh [--plot-only] [OUT]
# Needs build/tools/outpost-bench (or OUTPOST_BENCH=path), gnuplot (apt-get
# install -y gnuplot-nox; scripts/install-deps.sh does not install it) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${OUTPOST_BENCH:-build/tools/outpost-bench}
plot_only=false
if [ "${1:-}" = --plot-only ]; then plot_only=true; shift; fi
out=${1:-docs/bench}

if ! command -v gnuplot >/dev/null; then
  echo "plot_benchmarks: gnuplot is not installed (Debian 12: apt-get install -y gnuplot-nox)" >&2
  exit 1
fi
if ! $plot_only && [ ! -x "$bench" ]; then
  echo "plot_benchmarks: no $bench: build it first (cmake -S . -B build && cmake --build build -j2)," \
       "or set OUTPOST_BENCH to the binary" >&2
  exit 1
fi
mkdir -p "$out"

run() {  # run BENCH ARGS...: one outpost-bench run, its JSON line appended to OUT/BENCH.jsonl
  echo "plot_benchmarks: outpost-bench $* --json" >&2
  "$bench" "$@" --json >> "$out/$1.jsonl"
}

if ! $plot_only; then
  rm -f "$out"/*.jsonl
  echo "$(date -u +%F), commit $(git rev-parse --short HEAD), $(nproc) cores" \
       "($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1))," \
       "$(awk '/^MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo)" > "$out/machine.txt"
  for n in 10 100 1000 3000; do run pipeline --queries "$n" --rows 200000 --rounds 1; done
  for n in 100 1000 3000 10000; do run sensors --queries "$n" --seconds 3; done
  for n in 1000 3000 10000 30000; do run queries --queries "$n"; done
  for r in 1000 5000 10000 20000; do
    run e2e --rows 100000 --rate "$r" --latency-seconds 5 --backlog-mb 64
  done
fi
for f in pipeline sensors queries e2e; do
  [ -s "$out/$f.jsonl" ] || { echo "plot_benchmarks: no $out/$f.jsonl: run without --plot-only" >&2; exit 1; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
table() {  # table BENCH KEY...: per JSON line of OUT/BENCH.jsonl, the KEYs' numbers as columns
  local bench=$1; shift
  awk -v keys="$*" 'BEGIN { n = split(keys, k, " ") }
    { row = ""
      for (i = 1; i <= n; i++) {
        v = "?"  # missing: gnuplot skips it
        if (match($0, "\"" k[i] "\":-?[0-9.e+]+")) v = substr($0, RSTART + length(k[i]) + 3, RLENGTH - length(k[i]) - 3)
        row = row v " "
      }
      print row }' "$out/$bench.jsonl" > "$tmp/$bench.dat"
}
table pipeline queries rows_per_s baseline_rows_per_s
table sensors queries events_fanned_out_per_s period_s events_per_tick
table queries queries rss_bytes_per_query anon_bytes_per_query heap_bytes_per_query
table e2e rate latency_p50_ms latency_p99_ms
# The e2e run at 10,000 rows/s (else the last): its percentiles and drain curve as columns.
python3 - "$out/e2e.jsonl" "$tmp" <<'PY'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
run = next((r for r in runs if r.get("rate") == 10000), runs[-1])
for key in ("latency_percentiles_ms", "live_percentiles_ms", "drain_curve"):
    if key not in run:
        sys.exit(f"plot_benchmarks: {sys.argv[1]} has no {key}: run outpost-bench again (without --plot-only)")
with open(f"{sys.argv[2]}/e2e_cdf.dat", "w") as f:
    for p, ms in enumerate(run["latency_percentiles_ms"]):
        f.write(f"{ms} {p}\n")
with open(f"{sys.argv[2]}/e2e_live_cdf.dat", "w") as f:
    for p, ms in enumerate(run["live_percentiles_ms"]):
        f.write(f"{ms} {p}\n")
with open(f"{sys.argv[2]}/e2e_drain.dat", "w") as f:
    for s, left in run["drain_curve"]:
        f.write(f"{s} {left / 1e6}\n")
PY

note=$(cat "$out/machine.txt")
gnuplot <<EOF
set terminal svg enhanced size 760,480 font 'sans,12' background rgb 'white'
set grid
set key below
set logscale x
set autoscale xfix
set offsets graph 0.05, graph 0.05, 0, 0
set yrange [0:*]
set format y '%.1s%c'
set ylabel 'per second'
set xlabel 'queries'

set output '$out/pipeline_throughput.svg'
set title "outpost-bench pipeline: 200,000 rows of 256 bytes, sync=full, 1 round\n{/*0.8 $note; a shared machine}"
plot '$tmp/pipeline.dat' using 1:2:xtic(1) with linespoints lw 2 title 'pipeline: rows/s committed', \
     '' using 1:3 with linespoints lw 2 dt 2 title 'baseline: the bare store, same rows, same run'

set output '$out/sensors_throughput.svg'
set logscale y
set yrange [*:*]
set title "outpost-bench sensors: one shared sensor, 1 event per 0.1 s to each query, 3 s\n{/*0.8 $note; a shared machine}"
plot '$tmp/sensors.dat' using 1:2:xtic(1) with linespoints lw 2 title 'events/s committed to the buffer', \
     '' using 1:(\$1 * \$4 / \$3) with lines dt 2 title 'events/s offered (queries x events per tick / period)'

set output '$out/queries_memory.svg'
unset logscale y
set yrange [0:*]
set title "outpost-bench queries: idle clock queries (1 s period) above the agent without them\n{/*0.8 $note; a shared machine}"
set ylabel 'bytes per query'
set format y '%.0f'
plot '$tmp/queries.dat' using 1:2:xtic(1) with linespoints lw 2 title 'RSS (VmRSS)', \
     '' using 1:3 with linespoints lw 2 title 'anonymous (RssAnon)', \
     '' using 1:4 with linespoints lw 2 title "malloc'd and in use", \
     2048 with lines dt 2 title 'target: 2,048'

set output '$out/e2e_latency.svg'
set title "outpost-bench e2e (plaintext): a row's delay from its Time to the collector's file, 5 s per rate\n{/*0.8 $note; a shared machine}"
set xlabel 'rows per second'
set ylabel 'ms'
set format y '%g'
plot '$tmp/e2e.dat' using 1:2:xtic(1) with linespoints lw 2 title 'p50', \
     '' using 1:3 with linespoints lw 2 title 'p99', \
     5 with lines dt 2 title 'target: p99 < 5 ms at 10,000 rows/s'

set output '$out/e2e_latency_cdf.svg'
set title "outpost-bench e2e (plaintext): distribution of a row's delay to the collector's file\n{/*0.8 $note; a shared machine}"
set xlabel 'ms (log)'
set ylabel 'rows at or under it (%)'
set yrange [0:100]
unset xtics
set xtics
plot '$tmp/e2e_cdf.dat' using 1:2 with lines lw 2 title '10,000 rows/s, nothing else flowing', \
     '$tmp/e2e_live_cdf.dat' using 1:2 with lines lw 2 title 'live rows (10/s) while a backlog drains'

set output '$out/e2e_drain.svg'
unset logscale x
set title "outpost-bench e2e (plaintext): a backlog spooled while the collector was down, drained after it came back\n{/*0.8 $note; a shared machine}"
set xlabel 's since the collector came back'
set ylabel 'MB still buffered'
set yrange [0:*]
plot '$tmp/e2e_drain.dat' using 1:2 with lines lw 2 notitle
EOF
echo "plot_benchmarks: plots in $out/"
