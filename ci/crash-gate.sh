#!/usr/bin/env bash
# The regression gate for spec and ordering changes: runs the explorer over
# every policy x built-in workload x enumerator, plus every bug switch, and
# compares with ci/crash-baseline.json (see ci/crash_gate.py).
#   ci/crash-gate.sh            compare (exit 1 on a new violation or an uncaught switch)
#   ci/crash-gate.sh --update   rewrite the baseline after an intended change
# QCRASH=path/to/qcrash overrides the binary (default: the ci preset's build).
set -euo pipefail
cd "$(dirname "$0")/.."
qcrash=${QCRASH:-build/ci/qcrash}
if [ ! -x "$qcrash" ]; then
  cmake --preset ci >/dev/null
  cmake --build --preset ci --target qcrash
fi
start=$(date +%s)
status=0
python3 ci/crash_gate.py --qcrash "$qcrash" --baseline ci/crash-baseline.json --out build/crash-gate.json "$@" || status=$?
echo "crash-gate: $(( $(date +%s) - start )) s"
exit "$status"
