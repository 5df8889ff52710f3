#!/bin/bash
# Times `qcrash check` against `qemu-img check` on the same files and writes
# bench/results/check.json:
#   scattered: 16 GiB virtual, 4 GiB allocated in scattered 64 KiB clusters
#              (bench/make_scattered_qcow2.py: sparse, no guest data written)
#   full:      1 GiB fully allocated (qemu-img create -o preallocation=metadata)
# usage: bench/check_bench.sh [QCRASH_BINARY] [RUNS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
qcrash=${1:-$here/../build/check/qcrash}
runs=${2:-15}
scratch=$(mktemp -d /tmp/qcrash-check-bench.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$here/results"

python3 "$here/make_scattered_qcow2.py" "$scratch/scattered.qcow2" $((16 << 30)) $((4 << 30)) 1
qemu-img create -q -f qcow2 -o preallocation=metadata "$scratch/full.qcow2" 1G
for image in scattered full; do
  qemu-img check -q "$scratch/$image.qcow2"   # both images must be clean
  "$qcrash" check -q "$scratch/$image.qcow2"
done

python3 - "$qcrash" "$runs" "$scratch" "$here/results/check.json" <<'PY'
import json, statistics, subprocess, sys, time
qcrash, runs, scratch, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

def timed(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)  # warm-up (page cache)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return {"median_s": statistics.median(samples), "min_s": min(samples), "runs": runs}

results = {}
for image, label in (("scattered", "16 GiB virtual, 4 GiB allocated in scattered 64 KiB clusters"),
                     ("full", "1 GiB fully allocated (preallocation=metadata)")):
    path = f"{scratch}/{image}.qcow2"
    ours = timed([qcrash, "check", path])
    qemu = timed(["qemu-img", "check", path])
    results[image] = {"image": label, "qcrash": ours, "qemu-img": qemu,
                      "ratio_median": ours["median_s"] / qemu["median_s"]}
    print(f"{image}: qcrash {ours['median_s']*1000:.1f} ms, qemu-img {qemu['median_s']*1000:.1f} ms,"
          f" ratio {results[image]['ratio_median']:.2f}")
with open(out, "w") as f:
    json.dump({"benchmark": "check", "target_ratio_max": 1.0, "results": results}, f, indent=2)
    f.write("\n")
PY
