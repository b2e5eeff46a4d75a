#include "slurm/sbatch.h"

#include <sstream>

namespace canopy {

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\"'\"'";
    else out += c;
  }
  return out + "'";
}

std::vector<std::string> WorkerArgs(const std::vector<std::string>& a) {
  static const char* kValued[] = {"--model", "--kv-cache-mb", "--prm-model", "--verifier"};
  std::vector<std::string> out;
  for (size_t i = 0; i < a.size(); ++i) {
    const std::string flag = a[i].substr(0, a[i].find('='));
    if (flag == "--batch-invariant") {
      out.push_back(a[i]);
      continue;
    }
    for (const char* v : kValued) {
      if (flag != v) continue;
      out.push_back(a[i]);
      if (a[i].find('=') == std::string::npos && i + 1 < a.size()) out.push_back(a[++i]);
    }
  }
  return out;
}

std::string SbatchScript(const SubmitSpec& s) {
  const int workers_per_node = s.gpus_per_node > 0 ? s.gpus_per_node : s.workers_per_node;
  const bool array = s.shards > 1;
  std::ostringstream o;
  o << "#!/bin/bash\n"
    << "# A canopy job, written by `canopy submit`; submit it again with `sbatch` on this file.\n"
    << "# The coordinator runs here in the batch shell (on the first node); the workers run in one\n"
    << "# srun step, one per " << (s.gpus_per_node > 0 ? "GPU" : "worker slot") << " on each node.\n"
    << "#\n";
  auto opt = [&](const std::string& flag, const std::string& comment) {
    std::string line = "#SBATCH " + flag;
    if (line.size() < 44) line.resize(44, ' ');
    o << line << " # " << comment << "\n";
  };
  opt("--job-name=" + s.job_name, "the name squeue shows");
  opt("--nodes=" + std::to_string(s.nodes), "machines");
  opt("--ntasks-per-node=" + std::to_string(workers_per_node), "worker processes per machine");
  if (s.gpus_per_node > 0) opt("--gpus-per-node=" + std::to_string(s.gpus_per_node), "one worker per GPU");
  if (s.cpus_per_worker > 0) opt("--cpus-per-task=" + std::to_string(s.cpus_per_worker), "CPU threads per worker");
  if (!s.partition.empty()) opt("--partition=" + s.partition, "the partition (queue)");
  if (!s.time.empty()) opt("--time=" + s.time, "the time limit");
  if (!s.account.empty()) opt("--account=" + s.account, "the account charged");
  if (!s.qos.empty()) opt("--qos=" + s.qos, "quality of service");
  if (!s.mem.empty()) opt("--mem=" + s.mem, "memory per node");
  opt("--output=" + s.output_dir + (array ? "/slurm-%A_%a.out" : "/slurm-%j.out"), "the job's log, in its output folder");
  opt("--open-mode=append", "a requeued job appends to the same log");
  opt("--signal=B:USR1@" + std::to_string(s.signal_seconds),
      "warn the batch shell this many seconds before the time limit");
  opt("--requeue", "the job may go back to the queue (the coordinator asks when work remains)");
  if (array) opt("--array=0-" + std::to_string(s.shards - 1), "one array task per shard of the dataset");
  for (const std::string& extra : s.sbatch_extra) opt(extra, "given to canopy submit --sbatch");
  o << "\n"
    << "set -uo pipefail\n"
    << "CANOPY=" << ShellQuote(s.canopy) << "              # the canopy binary\n"
    << "BASE=" << ShellQuote(s.output_dir) << "              # everything the job writes\n"
    << "SECRET_FILE=" << ShellQuote(s.secret_file) << "  # the job secret (mode 0600), never on a command line\n";
  if (array) {
    o << "OUT=\"$BASE/shard-$SLURM_ARRAY_TASK_ID\"   # this shard's results\n"
      << "SHARD=(--shard \"$SLURM_ARRAY_TASK_ID\" --num-shards " << s.shards << ")\n"
      << "JOB=\"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"\n";
  } else {
    o << "OUT=\"$BASE\"\n"
      << "SHARD=()\n"
      << "JOB=\"$SLURM_JOB_ID\"\n";
  }
  o << "mkdir -p \"$OUT\"\n"
    << "# CPU threads per worker: what Slurm gave each task.\n"
    << "[ -n \"${SLURM_CPUS_PER_TASK:-}\" ] && export OMP_NUM_THREADS=\"$SLURM_CPUS_PER_TASK\"\n"
    << "# The coordinator listens on the first node, on a port the system picks, and writes\n"
    << "# HOST:PORT to $ADDR (in the shared output folder), where the workers read it.\n"
    << "HEAD=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)\n"
    << "ADDR=\"$OUT/coordinator.addr\"\n"
    << "rm -f \"$ADDR\"\n"
    << "WORKERS=$(( SLURM_JOB_NUM_NODES * " << workers_per_node << " ))\n"
    << "echo \"canopy job $JOB (restart ${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NODELIST: coordinator on $HEAD, $WORKERS workers\"\n"
    << "\n"
    << "# Workers: one srun step; --kill-on-bad-exit=0 keeps the others going when one fails, and\n"
    << "# they retry the coordinator until it is up (and after a restart).\n"
    << "srun --kill-on-bad-exit=0 --no-kill --overlap --ntasks-per-node=" << workers_per_node
    << (s.gpus_per_node > 0 ? " --gpus-per-task=1" : "")
    << " \\\n    \"$CANOPY\" worker --connect-file \"$ADDR\" --secret-file \"$SECRET_FILE\" --reconnect-seconds 120";
  for (const std::string& a : s.worker_args) o << " " << ShellQuote(a);
  o << " &\n"
    << "WORKER_STEP=$!\n"
    << "\n"
    << "# The coordinator (all `canopy " << s.command << "` options); it resumes from $OUT on a restart.\n"
    << "\"$CANOPY\" " << (s.command == "label" ? "label --launcher listen" : "coordinator")
    << " --listen \"$HEAD:0\" --address-file \"$ADDR\" --workers \"$WORKERS\" --secret-file \"$SECRET_FILE\" \\\n"
    << "    --dataset " << ShellQuote(s.dataset) << " --output \"$OUT\" \"${SHARD[@]}\" --max-restarts " << s.max_restarts;
  for (const std::string& a : s.solve_args) o << " " << ShellQuote(a);
  o << " &\n"
    << "COORD=$!\n"
    << "# The time-limit warning goes to the coordinator: it stops dispatching, flushes its\n"
    << "# results and journal, and requeues the job while work remains. scancel/preemption: TERM.\n"
    << "trap 'kill -USR1 $COORD 2>/dev/null' USR1\n"
    << "trap 'kill -TERM $COORD 2>/dev/null' TERM\n"
    << "while kill -0 \"$COORD\" 2>/dev/null; do wait \"$COORD\"; RC=$?; done\n"
    << "wait \"$COORD\" 2>/dev/null; RC=${RC:-$?}\n"
    << "# Workers leave on the coordinator's shutdown; give them a moment, then end the step.\n"
    << "for _ in $(seq 30); do kill -0 \"$WORKER_STEP\" 2>/dev/null || break; sleep 1; done\n"
    << "kill \"$WORKER_STEP\" 2>/dev/null\n"
    << "exit \"$RC\"\n";
  return o.str();
}

}  // namespace canopy
