#!/usr/bin/env bash
# Builds the fuzz targets the way OSS-Fuzz and ClusterFuzzLite expect
# (their build.sh calls this): compiler and flags from $CC, $CXX, $CFLAGS,
# $CXXFLAGS, the engine from $LIB_FUZZING_ENGINE, results in $OUT: one
# binary per target, TARGET_seed_corpus.zip, TARGET.dict, TARGET.options.
# The canary is left out: it fails by design.
#
# Local test (libFuzzer + ASan, as OSS-Fuzz's address build):
#   CC=clang CXX=clang++ CFLAGS="-O1 -gline-tables-only -fsanitize=address,fuzzer-no-link" \
#   CXXFLAGS="$CFLAGS" LIB_FUZZING_ENGINE=-fsanitize=fuzzer OUT=/tmp/oss-out ci/oss-fuzz-build.sh
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
: "${CXX:?set CXX}" "${LIB_FUZZING_ENGINE:?set LIB_FUZZING_ENGINE}" "${OUT:?set OUT}"
build=${WORK:-$src/build}/oss-fuzz
mkdir -p "$OUT" "$build"

# Sanitizer and coverage flags come from CXXFLAGS: QCRASH_SANITIZE and
# QCRASH_FUZZ_INSTRUMENT stay off so nothing is added twice.
cmake -S "$src" -B "$build" -G Ninja \
  -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_CXX_FLAGS="${CXXFLAGS:-}" \
  -DCMAKE_BUILD_TYPE=Release -DQCRASH_TESTS=OFF -DQCRASH_BENCH=OFF \
  -DQCRASH_FUZZ=ON -DQCRASH_FUZZ_ENGINE="$LIB_FUZZING_ENGINE" -DQCRASH_FUZZ_INSTRUMENT=OFF \
  -DQCRASH_SANITIZE=

targets=$(sed -n 's/^QCRASH_FUZZ_TARGET_LIST:INTERNAL=//p' "$build/CMakeCache.txt" | tr ';' ' ')
targets=${targets//canary_fuzzer/}
# shellcheck disable=SC2086
cmake --build "$build" --target $targets

dict_for() {
  case "$1" in
    write_log_fuzzer) echo write_log.dict ;;
    dm_log_fuzzer) echo dm_log.dict ;;
    crash_id_fuzzer) echo crash_id.dict ;;
    workload_crash_fuzzer) echo "" ;;
    *) echo qcow2.dict ;;
  esac
}

for target in $targets; do
  cp "$build/fuzz/$target" "$OUT/"
  rm -f "$OUT/${target}_seed_corpus.zip"
  if [ -d "$src/corpus/$target" ]; then
    (cd "$src/corpus/$target" && zip -q -r -j "$OUT/${target}_seed_corpus.zip" .)
  fi
  dict=$(dict_for "$target")
  {
    echo "[libfuzzer]"
    echo "rss_limit_mb = 2560"
    echo "timeout = 25"
    if [ -n "$dict" ]; then
      cp "$src/fuzz/dicts/$dict" "$OUT/$target.dict"
      echo "dict = $target.dict"
    fi
    [ "$target" = workload_crash_fuzzer ] && echo "max_len = 128"
  } > "$OUT/$target.options"
done
echo "oss-fuzz-build: $(echo $targets | wc -w) targets in $OUT"
