#!/usr/bin/env bash
# io_bench.sh: guest-write throughput of `qcrash io` against `qemu-io` on the
# same file system, written to bench/results/io.json.
#
#   bench/io_bench.sh [QCRASH_BINARY] [SCRATCH_DIR]
#
# QCRASH_BINARY defaults to build/cli/qcrash (build it first); SCRATCH_DIR
# defaults to bench/results/scratch (both tools write their images there, so
# they share the file system). Environment: POLICIES (default "ordered"),
# REPS (best of N runs, default 1), SEQ_MIB (default 256), RAND_OPS (4096),
# RAND_IMAGE_GIB (1), OUT (default bench/results/io.json).
#
# Workloads, each with and without a flush after every write:
#   seq   sequential allocating writes of 1 MiB over a fresh SEQ_MIB image
#   rand  RAND_OPS random 4 KiB writes (fixed seed) over a fresh RAND_IMAGE_GIB image
# Both tools run every write as one -c command in a single process and close
# the image cleanly; the timing covers the whole process. qcrash's engine
# counters (`qcrash io --stats`: device flushes, metadata writes, allocations)
# are recorded beside its timing, so each policy's price in flushes shows.
# The host is shared: run it on a quiet machine, timings swing widely when
# other processes flush.
set -euo pipefail
cd "$(dirname "$0")/.."

qcrash=$(realpath "${1:-build/cli/qcrash}")
scratch=${2:-bench/results/scratch}
policies=${POLICIES:-ordered}
reps=${REPS:-1}
seq_mib=${SEQ_MIB:-256}
rand_ops=${RAND_OPS:-4096}
rand_gib=${RAND_IMAGE_GIB:-1}
out=${OUT:-bench/results/io.json}
[[ -x "$qcrash" ]] || { echo "io_bench.sh: no qcrash binary at $qcrash (build it first)" >&2; exit 1; }
command -v qemu-io >/dev/null || { echo "io_bench.sh: qemu-io not found" >&2; exit 1; }
mkdir -p "$scratch" "$(dirname "$out")"

# One argument file per workload: "-c" "write ..." pairs, shared by both tools.
make_args() {  # kind flush -> file of arguments, one per line
  local kind=$1 flush=$2 file="$scratch/args-$1-$2"
  if [[ $kind == seq ]]; then
    for ((i = 0; i < seq_mib; i++)); do
      printf -- '-c\nwrite -P 0x%02x %d 1M\n' $((i % 251 + 1)) $((i << 20))
      [[ $flush == 1 ]] && printf -- '-c\nflush\n'
    done >"$file"
  else
    python3 - "$rand_ops" "$rand_gib" "$flush" >"$file" <<'PY'
import random, sys
ops, gib, flush = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
rng = random.Random(20101)  # fixed seed: both tools write the same offsets
blocks = (gib << 30) // 4096
for i in range(ops):
    print("-c"); print("write -P 0x%02x %d 4k" % (i % 251 + 1, rng.randrange(blocks) * 4096))
    if flush:
        print("-c"); print("flush")
PY
  fi
  echo "$file"
}

now() { date +%s.%N; }

# run_tool TOOL KIND FLUSH POLICY -> seconds (best of $reps), fresh image each time
run_tool() {
  local tool=$1 kind=$2 flush=$3 policy=$4 args_file=$5 size best="" img="$scratch/bench.qcow2"
  if [[ $kind == seq ]]; then size="${seq_mib}M"; else size="${rand_gib}G"; fi
  for ((r = 0; r < reps; r++)); do
    rm -f "$img"
    qemu-img create -q -f qcow2 "$img" "$size"
    sync -f "$scratch"
    local -a args=()
    mapfile -t args <"$args_file"
    local start end
    start=$(now)
    if [[ $tool == qcrash ]]; then
      "$qcrash" io --stats --policy "$policy" "${args[@]}" "$img" | grep '^stats: ' \
        | sed 's/^stats: //' >"$scratch/stats.json"
    else
      qemu-io -f qcow2 "${args[@]}" "$img" >/dev/null
    fi
    end=$(now)
    # qemu-img check must be clean; the journal area is a leak to QEMU (exit 3).
    local check=0
    qemu-img check -q "$img" >/dev/null 2>&1 || check=$?
    if [[ $check != 0 && ! ($check == 3 && $policy == journal) ]]; then
      echo "io_bench.sh: $tool left a bad image ($kind, policy $policy, qemu-img check exit $check)" >&2
      exit 1
    fi
    local seconds
    seconds=$(python3 -c "print(f'{$end - $start:.4f}')")
    if [[ -z $best ]] || python3 -c "import sys; sys.exit(0 if $seconds < $best else 1)"; then best=$seconds; fi
  done
  rm -f "$img"
  echo "$best"
}

results=()
for kind in seq rand; do
  for flush in 0 1; do
    args_file=$(make_args "$kind" "$flush")
    if [[ $kind == seq ]]; then ops=$seq_mib; bytes=$((seq_mib << 20)); else ops=$rand_ops; bytes=$((rand_ops * 4096)); fi
    qemu_s=$(run_tool qemu-io "$kind" "$flush" - "$args_file")
    for policy in $policies; do
      qcrash_s=$(run_tool qcrash "$kind" "$flush" "$policy" "$args_file")
      results+=("$(python3 - "$kind" "$flush" "$policy" "$ops" "$bytes" "$qcrash_s" "$qemu_s" \
                  "$(cat "$scratch/stats.json")" <<'PY'
import json, sys
kind, flush, policy, ops, nbytes, q, e, stats = sys.argv[1:]
stats = json.loads(stats)
ops, nbytes, q, e = int(ops), int(nbytes), float(q), float(e)
def tool(s):
    return {"seconds": s, "ops_per_s": round(ops / s, 1), "mib_per_s": round(nbytes / s / 2**20, 2)}
qcrash = tool(q)
qcrash["engine_stats"] = stats
qcrash["device_flushes_per_guest_write"] = round(stats["device_flushes"] / max(1, stats["guest_writes"]), 3)
print(json.dumps({"workload": kind, "flush_each_write": flush == "1", "policy": policy,
                  "ops": ops, "bytes": nbytes, "qcrash": qcrash, "qemu_io": tool(e),
                  "ratio_qcrash_over_qemu": round(e / q, 3)}))
PY
)")
      echo "io_bench: $kind flush=$flush policy=$policy qcrash ${qcrash_s}s qemu-io ${qemu_s}s" >&2
    done
    rm -f "$args_file" "$scratch/stats.json"
  done
done

python3 - "$out" "${results[@]}" <<'PY'
import json, platform, subprocess, sys
out, rows = sys.argv[1], [json.loads(r) for r in sys.argv[2:]]
qemu = subprocess.run(["qemu-io", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
doc = {"benchmark": "io_bench", "host": platform.node(), "qemu": qemu,
       "note": "ratio_qcrash_over_qemu = qemu seconds / qcrash seconds (> 1: qcrash faster)",
       "results": rows}
with open(out, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
print(json.dumps(doc, indent=2))
PY
rmdir "$scratch" 2>/dev/null || true
