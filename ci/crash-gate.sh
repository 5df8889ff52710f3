#!/usr/bin/env bash
# The regression gate for spec and ordering changes: runs the explorer over
# every policy x built-in workload x enumerator, plus every bug switch, and
# compares with ci/crash-baseline.json (see ci/crash_gate.py); then runs the
# default exploration suite for 90 s (CRASH_GATE_SUITE_SECONDS), which must
# find nothing.
#   ci/crash-gate.sh            compare (exit 1 on a new violation or an uncaught switch)
#   ci/crash-gate.sh --update   rewrite the baseline after an intended change
# JUnit XML of the matrix goes to build/crash-gate.xml (--junit FILE elsewhere).
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
python3 ci/crash_gate.py --qcrash "$qcrash" --baseline ci/crash-baseline.json --out build/crash-gate.json \
  --junit build/crash-gate.xml "$@" || status=$?
# The default exploration at a larger size: the suite (built-in and generated
# workloads under every safe policy) must find nothing.
if [ "${1:-}" != "--update" ]; then
  suite_dir=$(mktemp -d)
  if ! "$qcrash" explore --budget "${CRASH_GATE_SUITE_SECONDS:-90}" --states 5000 --report "$suite_dir/suite.json" \
      --reproducers build/crash-gate-suite-reproducers > "$suite_dir/suite.txt" 2>&1; then
    cat "$suite_dir/suite.txt"
    echo "crash-gate: FAIL the suite found failing cells (reproducers in build/crash-gate-suite-reproducers)"
    status=1
  else
    grep -E "^qcrash explore: suite|failing cells" "$suite_dir/suite.txt" || true
  fi
  rm -rf "$suite_dir"
fi
echo "crash-gate: $(( $(date +%s) - start )) s"
exit "$status"
