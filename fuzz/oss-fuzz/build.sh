#!/bin/bash -eu
# OSS-Fuzz / ClusterFuzzLite entry point: the build lives in ci/oss-fuzz-build.sh.
"$SRC/qcrash/ci/oss-fuzz-build.sh"
