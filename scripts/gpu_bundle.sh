#!/usr/bin/env bash
# Builds the GPU pieces here (CUDA toolkit, no GPU needed) and packs what a bare GPU machine
# needs to run them (docs/gpu.md):
#   .gpu/bundle.tar.xz   bin/: the GPU tests and benchmarks, stripped of debug info;
#                 lib/: the shared libraries they need that such a machine lacks (Cap'n Proto,
#                 ...): not glibc, the driver, cuBLAS (the CUDA toolkit is there), NCCL or
#                 OpenBLAS, nor the C++ runtime (the machine's is newer, and tools that run
#                 under the same LD_LIBRARY_PATH, such as compute-sanitizer, need it). About
#                 4 MB compressed, so that with a model half beside it a call stays under the
#                 64 MiB carry limit.
#   .gpu/gpu_check.sh    what runs there (it unpacks the bundle once per machine)
#   .gpu-model-a/, .gpu-model-b/   the default model in two halves (each call carries at
#                 most 64 MiB; the first call stores half a, the second brings half b)
# All three are ignored by git (.git/info/exclude).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${CANOPY_GPU_BUILD:-build-cuda}
jobs=${CANOPY_BUILD_JOBS:-2}
targets="cuda_parity_test cuda_model_parity_test cuda_sampling_test attention_plan_test nccl_page_channel_test gpu_bench canopy"
cmake -S . -B "$build" -DCANOPY_CUDA=ON -DCANOPY_BENCH=ON -DCANOPY_TESTS=ON >/dev/null
cmake --build "$build" -j"$jobs" --target $targets
for d in .gpu .gpu-model-a .gpu-model-b; do
  grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude
done
rm -rf .gpu .gpu-model-a .gpu-model-b
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p .gpu "$stage/bin" "$stage/lib" .gpu-model-a .gpu-model-b
for t in $targets; do
  cp "$(find "$build" -name "$t" -type f -perm -u+x | head -1)" "$stage/bin/"
  strip --strip-debug "$stage/bin/$t"
done
cp scripts/gpu_check.sh .gpu/
skip='^(libc|libm|libdl|libpthread|librt|ld-linux|libcuda|libnvidia|libcublas|libcublasLt|libopenblas|libblas|liblapack|libgfortran|libquadmath|libnccl|libstdc\+\+|libgcc_s|libgomp)\.'
for b in "$stage"/bin/*; do
  ldd "$b" | awk '/=> \//{print $3}'
done | sort -u | while read -r lib; do
  name=$(basename "$lib")
  [[ "$name" =~ $skip ]] && continue
  cp -L "$lib" "$stage/lib/"
done
tar -C "$stage" -cf - bin lib | xz -T"$jobs" -6 > .gpu/bundle.tar.xz
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
if [[ -f $model ]]; then
  split -n 2 -d "$model" .gpu-model-x
  mv .gpu-model-x00 .gpu-model-a/part && mv .gpu-model-x01 .gpu-model-b/part
fi
du -sh .gpu .gpu-model-a .gpu-model-b
