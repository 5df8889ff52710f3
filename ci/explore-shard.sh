#!/usr/bin/env bash
# One shard of a sharded `qcrash explore --workload ...`, as the Kubernetes
# Indexed Job (ci/k8s/explore-indexed-job.yaml) and the GitHub workflow
# (.github/workflows/explore-shards.yml) run it; docs/sharding.md.
#   ci/explore-shard.sh OUT_DIR EXPLORE_OPTIONS...
# Writes OUT_DIR/shard-I.json (the report), OUT_DIR/shard-I.xml (JUnit) and
# OUT_DIR/shard-I.reproducers/. The shard is QCRASH_SHARD=i/N when set, else
# qcrash takes it from the runner's environment (JOB_COMPLETION_INDEX with
# QCRASH_SHARD_COUNT, or SLURM_ARRAY_TASK_ID with SLURM_ARRAY_TASK_COUNT).
# Exits 0 when the shard ran, violations or not: the verdict is the merge's
# (ci/explore-merge.sh), so that one shard's violation does not stop the
# others or make a Job retry it. QCRASH=path/to/qcrash (default: on PATH).
set -euo pipefail
qcrash=${QCRASH:-qcrash}
out=${1:?usage: ci/explore-shard.sh OUT_DIR EXPLORE_OPTIONS...}
shift
shard=()
if [ -n "${QCRASH_SHARD:-}" ]; then
  index=${QCRASH_SHARD%%/*}
  shard=(--shard "$QCRASH_SHARD")
elif [ -n "${JOB_COMPLETION_INDEX:-}" ]; then
  index=$JOB_COMPLETION_INDEX
elif [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
  index=$SLURM_ARRAY_TASK_ID
else
  echo "explore-shard.sh: no shard: set QCRASH_SHARD=i/N, or run as a Kubernetes Indexed Job" \
    "or a Slurm array task" >&2
  exit 2
fi
mkdir -p "$out"
rc=0
"$qcrash" explore "$@" "${shard[@]}" --report "$out/shard-$index.json" \
  --junit "$out/shard-$index.xml" --reproducers "$out/shard-$index.reproducers" || rc=$?
if [ "$rc" -gt 1 ]; then
  echo "explore-shard.sh: shard $index: qcrash explore exited $rc" >&2
  exit "$rc"
fi
echo "explore-shard.sh: shard $index: $out/shard-$index.json ($([ "$rc" -eq 0 ] && echo clean || echo violations))"
