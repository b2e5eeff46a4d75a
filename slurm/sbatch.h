// The sbatch script `canopy submit` writes: the coordinator on the job's first node (in the
// batch shell, so it gets the time-limit warning), one worker per GPU (or per
// --workers-per-node on CPU nodes) in an srun step that outlives any one worker's failure,
// the job secret in a 0600 file of the output folder (never on a command line), everything
// under one output folder, every line commented so the script can be read and reused.
//
//   #SBATCH --signal=B:USR1@120 ──► batch shell traps USR1 ──► coordinator drains, flushes,
//                                    requeues itself (scontrol requeue) while work remains
//   #SBATCH --array=0-(K-1)     ──► shard k solves problems i with i % K == k into OUT/shard-k
#pragma once

#include <string>
#include <vector>

namespace canopy {

struct SubmitSpec {
  std::string job_name = "canopy";
  std::string canopy;       // absolute path of the canopy binary
  std::string output_dir;   // absolute
  std::string secret_file;  // absolute, mode 0600
  std::string dataset;      // absolute
  int nodes = 1;
  int gpus_per_node = 0;     // 0: CPU workers
  int workers_per_node = 1;  // CPU nodes (with GPUs: one worker per GPU)
  int cpus_per_worker = 0;   // 0: Slurm's default
  std::string partition, time, account, qos, mem;
  int shards = 1;
  int signal_seconds = 120;  // warning before the time limit
  int max_restarts = 3;      // requeues the coordinator may ask for
  std::vector<std::string> sbatch_extra;  // more "#SBATCH" options, verbatim
  std::string command = "solve";         // the job: "solve" or "label" (canopy label's coordinator)
  std::vector<std::string> solve_args;    // after `--`: passed to the coordinator
  std::vector<std::string> worker_args;   // the workers' share of them (model, KV cache, ...)
};

// The options of `solve_args` that workers need too (--model, --kv-cache-mb,
// --batch-invariant, --prm-model, --verifier), in order, with their values.
std::vector<std::string> WorkerArgs(const std::vector<std::string>& solve_args);

// Single-quoted for bash ('it'"'"'s').
std::string ShellQuote(const std::string& s);

// The whole script.
std::string SbatchScript(const SubmitSpec& spec);

}  // namespace canopy
