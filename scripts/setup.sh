#!/usr/bin/env bash
# Sets up a fresh Debian machine for canopy: Debian packages, the default model, a build.
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(cmake g++ make python3 python3-pip unzip pkg-config
          libpcre2-dev libopenblas-dev nlohmann-json3-dev libxxhash-dev libcli11-dev
          libgtest-dev libgmock-dev libbenchmark-dev libboost-dev
          libcapnp-dev capnproto libopenmpi-dev openmpi-bin libssl-dev iproute2
          slurm-wlm munge curl)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

scripts/fetch_model.sh

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo ${CANOPY_CMAKE_ARGS:-} >/dev/null
cmake --build build -j"${CANOPY_BUILD_JOBS:-2}"
