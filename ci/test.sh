#!/usr/bin/env bash
# The README's test command: installs what is missing, configures the `ci`
# preset (gcc, RelWithDebInfo, -Werror), builds everything and runs the whole
# ctest suite (labels unit, property, interop, fuzz-regression).
# Exits non-zero on any failure. CTEST_ARGS adds ctest options, e.g. "-L unit".
set -euo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
bash ci/setup.sh

preset=${QCRASH_PRESET:-ci}
cmake --preset "$preset"
cmake --build --preset "$preset" -j "$(nproc)"

# ctest prints its own summary ("N% tests passed, M tests failed out of T")
# and a per-label time table; a failure is shown with its output.
status=0
ctest --preset "$preset" -j "$(nproc)" --timeout 900 ${CTEST_ARGS:-} || status=$?

echo "ci/test.sh: preset $preset, exit $status, $(( $(date +%s) - start )) s"
exit "$status"
