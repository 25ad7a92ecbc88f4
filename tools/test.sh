#!/usr/bin/env bash
# Builds txtcls (Release, ccache) and runs the default test suite: everything except the
# labels "slow" (accuracy runs on real data) and "cuda" (needs a GPU).
#   tools/test.sh                 default suite
#   tools/test.sh -L slow         only the slow accuracy runs (any ctest arguments pass through)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${TXTCLS_BUILD_DIR:-build}
jobs=$(nproc)
# Tests run one at a time: each already uses every core (OpenMP, Eigen's GEMM), and Eigen's GEMM
# threads spin-wait, so two multi-threaded tests sharing the cores slow each other down many-fold.
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTXTCLS_BUILD_BENCH=${TXTCLS_BUILD_BENCH:-OFF} >/dev/null
cmake --build "$build" -j"$jobs"
if (($#)); then
  ctest --test-dir "$build" --output-on-failure "$@"
else
  ctest --test-dir "$build" --output-on-failure -LE "slow|cuda"
fi
