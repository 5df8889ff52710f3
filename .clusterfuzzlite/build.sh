#!/bin/bash -eu
# ClusterFuzzLite's (and OSS-Fuzz's) build step: the contract gives CC, CXX,
# CFLAGS, CXXFLAGS, LIB_FUZZING_ENGINE, OUT, SRC (and WORK); the targets,
# their seed corpora, dictionaries and options land in $OUT.
# ci/cflite-smoke.sh runs this locally with the same variables.
# The build tree goes to $WORK when the builder gives one, else a scratch dir.
export WORK=${WORK:-$(mktemp -d)}
"$SRC/qcrash/ci/oss-fuzz-build.sh"
