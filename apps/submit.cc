// canopy submit: write a commented sbatch script into the job's output folder and submit it.
//
//   canopy submit --dataset FILE --nodes 2 --gpus-per-node 8 --time 04:00:00 --partition gpu
//       [--shards 4] [--dry-run] -- --strategy beam --n 16 --beam-width 4
//
// Everything after `--` goes to the coordinator (`canopy solve` options; with --label the job
// is `canopy label` and they are its options). The job secret is written to
// OUTPUT/job.secret (mode 0600) and only its path appears in the script.
#include <sys/wait.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "coordinator/results.h"
#include "slurm/sbatch.h"
#include "transport/auth.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;

int Fail(const std::string& msg) {
  std::fprintf(stderr, "canopy submit: %s\n", msg.c_str());
  return 1;
}

// Runs `cmd`, returning its exit status and its stdout.
int Capture(const std::string& cmd, std::string* out) {
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out->append(buf, n);
  int rc = pclose(p);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

}  // namespace

int SubmitMain(int argc, char** argv) {
  CLI::App app{"Write an sbatch script for a canopy job and submit it", "canopy submit"};
  SubmitSpec spec;
  std::string dataset, output;
  bool dry_run = false;
  app.add_option("--dataset", dataset, "JSONL problems")->required();
  app.add_option("--output,-o", output, "the job's folder (default runs/<dataset>-<time>)");
  app.add_option("--job-name", spec.job_name, "the Slurm job name");
  app.add_option("--nodes", spec.nodes, "machines");
  app.add_option("--gpus-per-node", spec.gpus_per_node, "GPUs per machine, one worker each (0: CPU workers)");
  app.add_option("--workers-per-node", spec.workers_per_node, "CPU workers per machine (without GPUs)");
  app.add_option("--cpus-per-worker", spec.cpus_per_worker, "CPU threads per worker");
  app.add_option("--partition", spec.partition);
  app.add_option("--time", spec.time, "time limit, e.g. 04:00:00");
  app.add_option("--account", spec.account);
  app.add_option("--qos", spec.qos);
  app.add_option("--mem", spec.mem, "memory per node");
  app.add_option("--shards", spec.shards, "split the dataset over a job array of this many tasks (canopy merge joins them)");
  app.add_option("--signal-seconds", spec.signal_seconds, "the time-limit warning, seconds before the end");
  app.add_option("--max-restarts", spec.max_restarts, "requeues the job may ask for");
  app.add_option("--sbatch", spec.sbatch_extra, "another sbatch option, verbatim (repeatable)");
  bool label = false;
  app.add_flag("--label", label, "the job labels steps (canopy label, its options after --) instead of solving");
  app.add_flag("--dry-run", dry_run, "print the script; write and submit nothing");
  app.add_option("solve_options", spec.solve_args, "after --: canopy solve (or label) options for the coordinator");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (spec.nodes < 1 || spec.shards < 1 || spec.gpus_per_node < 0 || spec.workers_per_node < 1) {
    return Fail("--nodes, --shards and --workers-per-node must be at least 1, --gpus-per-node at least 0");
  }
  static const std::set<std::string> kOwn = {"--dataset", "--output", "-o", "--listen", "--launcher", "--workers",
                                             "--secret-file", "--shard", "--num-shards", "--max-restarts"};
  for (const std::string& a : spec.solve_args) {
    std::string flag = a.substr(0, a.find('='));
    if (kOwn.count(flag)) return Fail(flag + " is set by canopy submit; give it to submit itself (or drop it)");
  }
  if (!fs::exists(dataset)) return Fail(dataset + ": no such file");
  spec.dataset = fs::absolute(dataset).lexically_normal().string();
  if (label) spec.command = "label";
  if (output.empty()) {
    auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    char stamp[32];
    std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", std::localtime(&now));
    output = "runs/" + fs::path(dataset).stem().string() + (label ? "-label-" : "-") + stamp;
  }
  spec.output_dir = fs::absolute(output).lexically_normal().string();
  spec.secret_file = spec.output_dir + "/job.secret";
  spec.worker_args = WorkerArgs(spec.solve_args);
  spec.canopy = fs::canonical("/proc/self/exe").string();
  if (spec.job_name == "canopy") spec.job_name = "canopy-" + fs::path(dataset).stem().string();
  const std::string script = SbatchScript(spec);
  if (dry_run) {
    std::fputs(script.c_str(), stdout);
    return 0;
  }
  std::error_code ec;
  fs::create_directories(spec.output_dir, ec);
  if (ec) return Fail(spec.output_dir + ": " + ec.message());
  if (!fs::exists(spec.secret_file)) {  // a resubmission keeps the job's secret
    auto secret = GenerateJobSecret();
    if (!secret.ok()) return Fail(secret.status().ToString());
    if (Status s = WriteSecretFile(spec.secret_file, *secret); !s.ok()) return Fail(s.ToString());
  }
  const std::string path = spec.output_dir + "/job.sbatch";
  if (Status s = WriteFileAtomically(path, script); !s.ok()) return Fail(s.ToString());
  fs::permissions(path, fs::perms::owner_exec, fs::perm_options::add, ec);
  std::string out;
  int rc = Capture("sbatch --parsable " + ShellQuote(path) + " 2>&1", &out);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  if (rc != 0) return Fail("sbatch failed (" + std::to_string(rc) + "): " + out + "\n(the script is " + path + ")");
  std::string job_id = out.substr(0, out.find(';'));
  nlohmann::json record = {{"job_id", job_id}, {"script", path}, {"shards", spec.shards}, {"dataset", spec.dataset}};
  (void)WriteFileAtomically(spec.output_dir + "/submit.json", record.dump(2) + "\n");
  std::printf("%s\n", job_id.c_str());
  std::fprintf(stderr, "submitted job %s; output in %s (canopy status %s)\n", job_id.c_str(), spec.output_dir.c_str(),
               spec.output_dir.c_str());
  return 0;
}

}  // namespace canopy
