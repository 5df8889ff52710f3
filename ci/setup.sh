#!/usr/bin/env bash
# Installs exactly the Debian packages qcrash needs to build, test and fuzz.
# Idempotent: only missing packages are installed, with at most one `apt-get update`.
# Works as root or through sudo; fails loudly if a package cannot be had.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config      # toolchain (g++ 12, CMake 3.25)
  clang-14 libclang-rt-14-dev                        # clang + libFuzzer/ASan runtimes (rt is only a Recommends)
  clang-format-14                                    # ci/format-check.sh (.clang-format)
  libgtest-dev libgmock-dev                          # GoogleTest
  librapidcheck-dev                                  # RapidCheck (CMake config, no version file)
  nlohmann-json3-dev                                 # nlohmann/json
  libboost-dev                                       # Boost.Interprocess (header-only)
  zlib1g-dev libzstd-dev                             # compressed clusters (zlib, zstd)
  libbenchmark-dev                                   # Google Benchmark (bench/)
  qemu-utils                                         # qemu-img / qemu-io: the reference implementation
  python3 zip                                        # test helpers, OSS-Fuzz seed zips
  chromium                                           # headless rendering of `qcrash report` pages (tests/interop/report_html_test.cc)
  python3-yaml                                       # the CI manifests' test (tests/ci/manifests_test.py)
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "ci/setup.sh: all ${#packages[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo -n)
else
  echo "ci/setup.sh: need root or sudo to install: ${missing[*]}" >&2
  exit 1
fi

echo "ci/setup.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
if ! "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
  echo "ci/setup.sh: apt-get install failed for: ${missing[*]}" >&2
  exit 1
fi

for p in "${missing[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    echo "ci/setup.sh: package $p is still not installed" >&2
    exit 1
  fi
done
echo "ci/setup.sh: done"
