#!/usr/bin/env bash
# Fails when a C++ file of the tree differs from what clang-format makes of it
# (.clang-format: Google style, 100 columns). `ci/format-check.sh --fix`
# formats them in place instead.
set -euo pipefail
cd "$(dirname "$0")/.."
format=$(command -v clang-format-14 || command -v clang-format || true)
if [ -z "$format" ]; then
  echo "ci/format-check.sh: clang-format not found (bash ci/setup.sh installs clang-format-14)" >&2
  exit 2
fi
mapfile -t files < <(git ls-files '*.cc' '*.h')
if [ "${1:-}" = "--fix" ]; then
  "$format" -i "${files[@]}"
  echo "ci/format-check.sh: formatted ${#files[@]} files"
  exit 0
fi
bad=()
for f in "${files[@]}"; do
  "$format" --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -ne 0 ]; then
  printf 'ci/format-check.sh: not formatted: %s\n' "${bad[@]}" >&2
  echo "ci/format-check.sh: run 'bash ci/format-check.sh --fix'" >&2
  exit 1
fi
echo "ci/format-check.sh: ${#files[@]} files formatted"
