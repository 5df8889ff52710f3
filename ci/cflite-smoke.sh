#!/usr/bin/env bash
# ClusterFuzzLite's build contract, exercised here: runs
# .clusterfuzzlite/build.sh as the ClusterFuzzLite/OSS-Fuzz builder would
# (CC, CXX, CFLAGS, CXXFLAGS, LIB_FUZZING_ENGINE, OUT, SRC, WORK set; clang
# with ASan and libFuzzer), then runs every target it put in $OUT for a few
# inputs on its seed corpus, with its dictionary and options. Exits non-zero
# when the build fails, a target is missing its seed corpus or options, or a
# target fails on its seeds.
#   ci/cflite-smoke.sh                 (CFLITE_RUNS=100 inputs per target, CFLITE_SEED=1)
#   CFLITE_KEEP=dir ci/cflite-smoke.sh  keep OUT and the logs in dir
# SRC and WORK (the build tree) are under build/cflite, kept between runs:
# a first run is a full clang ASan build (about 5 minutes on 2 loaded
# cores), a rerun rebuilds only what changed (CFLITE_WORK elsewhere).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${CFLITE_RUNS:-100}
scratch=${CFLITE_KEEP:-$(mktemp -d)}
mkdir -p "$scratch"
[ -n "${CFLITE_KEEP:-}" ] || trap 'rm -rf "$scratch"' EXIT

# The builder's layout: the project at $SRC/qcrash (the Dockerfile's COPY).
# SRC stays the same path from run to run, so the kept build tree (made for
# that source directory) stays valid.
cache=${CFLITE_WORK:-$root/build/cflite}
export SRC=$cache/src OUT=$scratch/out WORK=$cache/work
mkdir -p "$SRC" "$OUT" "$WORK"
ln -sfn "$root" "$SRC/qcrash"
export CC=${CFLITE_CC:-clang-14} CXX=${CFLITE_CXX:-clang++-14}
export CFLAGS="-O1 -fno-omit-frame-pointer -gline-tables-only -fsanitize=address,fuzzer-no-link"
export CXXFLAGS="$CFLAGS"
export LIB_FUZZING_ENGINE=-fsanitize=fuzzer
# ccache, when there is one, makes a second run cheap (CMake reads these).
if command -v ccache >/dev/null; then
  export CMAKE_CXX_COMPILER_LAUNCHER=ccache CMAKE_C_COMPILER_LAUNCHER=ccache
fi
start=$(date +%s)
bash "$root/.clusterfuzzlite/build.sh" >"$scratch/build.log" 2>&1 || {
  tail -30 "$scratch/build.log"
  echo "cflite-smoke: .clusterfuzzlite/build.sh failed (log $scratch/build.log)" >&2
  exit 1
}
built=$(( $(date +%s) - start ))

failed=0
count=0
for binary in "$OUT"/*_fuzzer; do
  target=$(basename "$binary")
  count=$((count + 1))
  if [ ! -f "$OUT/$target.options" ] || [ ! -f "$OUT/${target}_seed_corpus.zip" ]; then
    echo "cflite-smoke: $target: no ${target}_seed_corpus.zip or $target.options in OUT" >&2
    failed=1
    continue
  fi
  corpus=$scratch/corpus-$target
  rm -rf "$corpus" && mkdir -p "$corpus"
  unzip -q -o "$OUT/${target}_seed_corpus.zip" -d "$corpus"
  # The [libfuzzer] section of TARGET.options, as the runner passes it.
  args=()
  while IFS=' =' read -r key value; do
    [ -n "$value" ] && args+=("-$key=$value")
  done < <(grep -v '^\[' "$OUT/$target.options")
  log=$scratch/$target.log
  if (cd "$OUT" && "./$target" "${args[@]}" -seed="${CFLITE_SEED:-1}" -runs="$runs" "$corpus") \
    >"$log" 2>&1; then
    echo "cflite-smoke: $target: ok ($(grep -c . <(ls "$corpus")) seeds, $runs runs)"
  else
    tail -20 "$log"
    echo "cflite-smoke: $target: FAILED (log $log)" >&2
    failed=1
  fi
done
if [ "$count" -eq 0 ]; then
  echo "cflite-smoke: no *_fuzzer in $OUT" >&2
  exit 1
fi
echo "cflite-smoke: $count targets built in ${built} s and run $runs inputs each: $([ $failed -eq 0 ] && echo ok || echo FAILED)"
exit $failed
