#!/usr/bin/env bash
# Merges the shards ci/explore-shard.sh wrote into OUT_DIR: OUT_DIR/merged.json
# (what the unsharded run's report would be) and OUT_DIR/merged.xml (JUnit).
#   ci/explore-merge.sh OUT_DIR
# Exit as `qcrash report merge`: 0 clean, 1 a violation, 2 shards missing,
# repeated or of different runs. QCRASH=path/to/qcrash (default: on PATH).
set -euo pipefail
qcrash=${QCRASH:-qcrash}
out=${1:?usage: ci/explore-merge.sh OUT_DIR}
shopt -s nullglob
shards=("$out"/shard-*.json)
if [ ${#shards[@]} -eq 0 ]; then
  echo "explore-merge.sh: no shard-*.json in $out" >&2
  exit 2
fi
exec "$qcrash" report merge "${shards[@]}" -o "$out/merged.json" --junit "$out/merged.xml"
