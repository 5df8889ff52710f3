#!/usr/bin/env bash
# ops_bench.sh: the image operations of `qcrash` against `qemu-img` on the
# same file system, written to bench/results/ops.json.
#
#   bench/ops_bench.sh [QCRASH_BINARY] [SCRATCH_DIR]
#
# QCRASH_BINARY defaults to build/ci/qcrash (build it first); SCRATCH_DIR to
# a fresh directory under /tmp, removed at the end. Environment: IMAGE_MIB (default 1024: the
# disk), DATA_MIB (default 256: data written into it, in 64 KiB runs every
# 256 KiB), REPS (best of N, default 3), OUT (default bench/results/ops.json).
#
# Each operation starts from a fresh copy of the same image made by qemu-io,
# so both tools do the same work; the timing covers the whole process (the
# copy is not timed). Operations: compare (identical images, every cluster
# read), measure, convert to raw and to qcow2, amend refcount_bits=64 and
# compat=0.10, resize --shrink to half, commit into a raw base, rebase -b ""
# (a flatten). An operation a binary does not have is recorded as null.
# The host is shared: run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."

qcrash=$(realpath "${1:-build/ci/qcrash}")
scratch=${2:-$(mktemp -d /tmp/qcrash-ops-bench.XXXXXX)}
trap 'rm -rf "$scratch"' EXIT
image_mib=${IMAGE_MIB:-1024}
data_mib=${DATA_MIB:-256}
reps=${REPS:-3}
out=$(realpath -m "${OUT:-bench/results/ops.json}")
[[ -x "$qcrash" ]] || { echo "ops_bench.sh: no qcrash binary at $qcrash" >&2; exit 1; }
command -v qemu-img >/dev/null || { echo "ops_bench.sh: qemu-img not found" >&2; exit 1; }
mkdir -p "$scratch" "$(dirname "$out")"
cd "$scratch"

# The image: data in 64 KiB runs every 256 KiB over the first 4*DATA_MIB MiB.
args=()
for ((off = 0; off < data_mib * 4 * 1024; off += 256)); do args+=(-c "write -P 0x5a ${off}k 64k"); done
qemu-img create -q -f qcow2 base.qcow2 "${image_mib}M"
qemu-io "${args[@]}" base.qcow2 >/dev/null
qemu-img create -q -f raw base.raw "${image_mib}M"
qemu-img create -q -f qcow2 -b base.raw -F raw top.qcow2
qemu-io "${args[@]}" top.qcow2 >/dev/null

now() { date +%s.%N; }
# time_op TOOL NAME SETUP COMMAND...: best of REPS wall seconds, or null.
time_op() {
  local tool=$1 name=$2 setup=$3; shift 3
  local best=""
  for ((r = 0; r < reps; ++r)); do
    eval "$setup"
    local t0 t1
    t0=$(now)
    if ! "$@" >/dev/null 2>&1; then best=null; break; fi
    t1=$(now)
    best=$(python3 -c "import sys; a='$best'; b=$t1-$t0; print(b if a=='' else min(float(a), b))")
  done
  printf '    "%s": %s' "$name" "${best:-null}"
}

fresh='cp base.qcow2 w.qcow2'
fresh_chain='cp base.raw b.raw && cp top.qcow2 t.qcow2 && qemu-img rebase -q -u -b b.raw -F raw t.qcow2'
run_tool() {  # TOOL BINARY
  local tool=$1 bin=$2
  echo "  \"$tool\": {"
  {
    time_op "$tool" compare "$fresh" "$bin" compare base.qcow2 w.qcow2; echo ","
    time_op "$tool" measure ":" "$bin" measure -O qcow2 base.qcow2; echo ","
    time_op "$tool" convert_raw "rm -f o.raw" "$bin" convert -O raw base.qcow2 o.raw; echo ","
    time_op "$tool" convert_qcow2 "rm -f o.qcow2" "$bin" convert -O qcow2 base.qcow2 o.qcow2; echo ","
    time_op "$tool" amend_refcount_bits_64 "$fresh" "$bin" amend -o refcount_bits=64 w.qcow2; echo ","
    time_op "$tool" amend_compat_0_10 "$fresh" "$bin" amend -o compat=0.10 w.qcow2; echo ","
    time_op "$tool" resize_shrink_half "$fresh" "$bin" resize --shrink w.qcow2 "$((image_mib / 2))M"; echo ","
    time_op "$tool" commit_to_raw "$fresh_chain" "$bin" commit t.qcow2; echo ","
    time_op "$tool" rebase_flatten "$fresh_chain" "$bin" rebase -b "" t.qcow2; echo
  }
  echo -n "  }"
}

{
  echo "{"
  echo "  \"image_mib\": $image_mib, \"data_mib\": $data_mib, \"reps\": $reps,"
  echo "  \"seconds\": \"best wall-clock seconds of reps, whole process; null: the tool has no such operation\","
  run_tool qemu-img qemu-img; echo ","
  run_tool qcrash "$qcrash"; echo
  echo "}"
} > "$out.tmp"
mv "$out.tmp" "$out"
python3 -m json.tool "$out" >/dev/null
cat "$out"
