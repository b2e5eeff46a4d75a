#!/usr/bin/env bash
# Runs the whole test suite (builds first if needed). Extra arguments go to ctest, e.g.
# scripts/test.sh -L unit
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/CMakeCache.txt ] || scripts/setup.sh
cmake --build build -j"${CANOPY_BUILD_JOBS:-2}"
# The `slurm` tests run jobs through a real single-host Slurm: start one when none answers
# (as root; tests/slurm/slurm_cluster.sh stop ends it).
if ! sinfo >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  tests/slurm/slurm_cluster.sh start
fi
ctest --test-dir build --output-on-failure -j2 "$@"
