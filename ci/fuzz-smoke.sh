#!/usr/bin/env bash
# Fuzz smoke test: builds the `fuzz` preset (clang, libFuzzer, ASan + UBSan)
# and runs every fuzz target for a while on a scratch copy of its seed
# corpus, with -rss_limit_mb and -timeout set. Prints one JSON object with
# exec/s and coverage per target. Exits non-zero on any crash, leak,
# timeout or OOM, and also when the canary target does NOT fail: the canary
# runs an engine with a known bug switched on and must be caught.
#
#   ci/fuzz-smoke.sh [SECONDS_PER_TARGET]      (or FUZZ_SECONDS=10; default 60)
#   FUZZ_TARGETS="header_fuzzer read_fuzzer"    only these targets
#   FUZZ_EXCLUDE="repair_fuzzer"                all but these (e.g. while an engine bug is open)
#   FUZZ_BUILD_DIR=build/fuzz-dev               an already configured tree to build and use
#   FUZZ_SKIP_BUILD=1                           use the binaries as they are (with FUZZ_BUILD_DIR)
#   FUZZ_OUT=dir                                keep logs and artifacts there
#   FUZZ_SEED=N FUZZ_RUNS=M                     deterministic: seed N, at most M inputs per target
#                                               (CI uses these, so a gate run cannot stumble on a
#                                               new bug by luck; long random runs go without them)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-${FUZZ_SECONDS:-60}}
rss_limit_mb=${FUZZ_RSS_LIMIT_MB:-2048}
timeout_s=${FUZZ_TIMEOUT:-10}
canary_budget=${FUZZ_CANARY_SECONDS:-60}

if [ -n "${FUZZ_BUILD_DIR:-}" ]; then
  build=$FUZZ_BUILD_DIR
  [ -n "${FUZZ_SKIP_BUILD:-}" ] || cmake --build "$build" >&2
else
  build=build/fuzz
  cmake --preset fuzz >&2
  cmake --build --preset fuzz >&2
fi

out=${FUZZ_OUT:-$(mktemp -d)}
mkdir -p "$out"
targets=${FUZZ_TARGETS:-$(cd "$build/fuzz" && ls -- *_fuzzer | sort)}
for excluded in ${FUZZ_EXCLUDE:-}; do
  targets=$(printf '%s\n' $targets | grep -vx "$excluded" || true)
done

dict_for() {
  case "$1" in
    write_log_fuzzer) echo fuzz/dicts/write_log.dict ;;
    dm_log_fuzzer) echo fuzz/dicts/dm_log.dict ;;
    crash_id_fuzzer) echo fuzz/dicts/crash_id.dict ;;
    workload_crash_fuzzer | canary_fuzzer) echo "" ;;
    *) echo fuzz/dicts/qcow2.dict ;;
  esac
}

# Reads libFuzzer's last status line: "#N DONE cov: C ft: F corp: K/... exec/s: E".
field() {  # field LOG NAME
  grep -E '^#[0-9]+' "$1" | tail -1 | sed -n "s/.* $2: \([0-9]*\).*/\1/p"
}

failed=0
json_targets=()
for target in $targets; do
  binary="$build/fuzz/$target"
  log="$out/$target.log"
  corpus="$out/corpus-$target"
  rm -rf "$corpus" && mkdir -p "$corpus"
  args=(-rss_limit_mb="$rss_limit_mb" -timeout="$timeout_s" -print_final_stats=1
        -artifact_prefix="$out/$target-")
  [ -n "${FUZZ_SEED:-}" ] && args+=(-seed="$FUZZ_SEED")
  dict=$(dict_for "$target")
  [ -n "$dict" ] && args+=(-dict="$dict")
  if [ "$target" = canary_fuzzer ]; then
    # From nothing: the canary must find the bug by itself within its budget.
    args+=(-max_total_time="$canary_budget" -max_len=64 -len_control=0)
  else
    args+=(-max_total_time="$seconds")
    [ -n "${FUZZ_RUNS:-}" ] && args+=(-runs="$FUZZ_RUNS")
    [ -d "corpus/$target" ] && find "corpus/$target" -maxdepth 1 -type f -exec cp {} "$corpus/" \;
    case "$target" in workload_crash_fuzzer) args+=(-max_len=128 -len_control=0) ;; esac
  fi
  start=$(date +%s)
  rc=0
  "$binary" "${args[@]}" "$corpus" >"$log" 2>&1 || rc=$?
  elapsed=$(( $(date +%s) - start ))
  artifacts=$(find "$out" -maxdepth 1 -name "$target-*" -type f | wc -l)
  if [ "$target" = canary_fuzzer ]; then
    if [ "$rc" -ne 0 ] && grep -q "PROPERTY FAILED: (canary, expected)" "$log"; then
      status=canary-caught
    else
      status=canary-missed; failed=1
    fi
  elif [ "$rc" -ne 0 ] || [ "$artifacts" -ne 0 ]; then
    status=$(grep -oE "PROPERTY FAILED: .*|ERROR: libFuzzer: .*|ERROR: LeakSanitizer.*|ERROR: AddressSanitizer: [a-z-]+|runtime error: .*" "$log" | head -1 | tr -d "\"\\\\" | cut -c1-160 || true)
    status=${status:-"exit $rc"}; failed=1
  else
    status=ok
  fi
  runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)
  exec_s=$(grep -E '^stat::average_exec_per_sec' "$log" | awk '{print $2}' || true)
  json_targets+=("$(printf '{"target":"%s","status":"%s","seconds":%s,"runs":%s,"exec_per_sec":%s,"coverage":%s,"features":%s,"corpus":%s}' \
    "$target" "$status" "$elapsed" "${runs:-0}" "${exec_s:-0}" "$(field "$log" cov)" "$(field "$log" ft)" \
    "$(field "$log" corp)" | sed 's/:,/:0,/g; s/:}/:0}/g')")
  echo "fuzz-smoke: $target: $status (${elapsed} s, log $log)" >&2
done

printf '{"seconds_per_target":%s,"rss_limit_mb":%s,"timeout":%s,"ok":%s,"targets":[' \
  "$seconds" "$rss_limit_mb" "$timeout_s" "$([ $failed -eq 0 ] && echo true || echo false)"
(IFS=,; printf '%s' "${json_targets[*]}")
printf ']}\n'
exit $failed
