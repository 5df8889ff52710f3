#!/bin/sh
# Runs the crash-view benchmark on one core and writes its JSON report.
#   bench/run_sim_bench.sh [build-dir] [out.json]
set -eu
build_dir=${1:-build/default}
out=${2:-sim_bench.json}
exec taskset -c 0 "$build_dir/bench/sim_bench" --benchmark_format=json \
  --benchmark_out="$out" --benchmark_out_format=json --benchmark_repetitions=3 \
  --benchmark_report_aggregates_only=true
