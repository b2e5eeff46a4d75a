#!/usr/bin/env bash
# Builds the file-parser tests with AddressSanitizer + UBSan (abort on any finding) and runs
# them: every truncation and thousands of bit flips of GGUF, safetensors and config files
# must give a clean error, never a crash or an out-of-bounds read. The search, the solve
# loop, dataset and results readers, the scorers (verifier replies), the dispatcher, KV page
# import, the wire codec, the engine scheduler, the step labeller and the value head run
# under it too, and so do checkpoints (strategy states and their files, with truncated,
# flipped and noisy ones), early stopping, the job's allocator and strategy tables (policy
# files, malformed ones included).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCANOPY_ASAN=ON -DCANOPY_CUDA=OFF \
      -DCANOPY_BENCH=OFF >/dev/null
targets=(model_files_corrupt_test safetensors_test tokenizer_test block_pool_test kv_cache_manager_test engine_test
         strategy_test solve_job_test dataset_test results_test scorer_test dispatcher_test kv_pages_test
         codec_test scheduler_test labeler_test value_head_test head_trainer_test strategy_state_test checkpoint_test
         early_stop_test allocation_test policy_test)
cmake --build build-asan -j"${CANOPY_BUILD_JOBS:-2}" --target "${targets[@]}"
for t in "${targets[@]}"; do
  ASAN_OPTIONS=detect_leaks=1 build-asan/tests/"$t" --gtest_brief=1
done
