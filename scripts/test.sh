#!/usr/bin/env bash
# Runs the whole test suite (builds first if needed). Extra arguments go to ctest, e.g.
# scripts/test.sh -L unit
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/CMakeCache.txt ] || scripts/setup.sh
cmake --build build -j"${CANOPY_BUILD_JOBS:-2}"
ctest --test-dir build --output-on-failure -j2 "$@"
