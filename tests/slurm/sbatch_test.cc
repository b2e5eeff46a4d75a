// The sbatch script `canopy submit` writes: valid bash (bash -n), the options asked for,
// the coordinator and workers wired through the address file, the secret only by path,
// arguments quoted so that any text survives, and the workers given the options they need.
// ctest-labels: unit
#include "slurm/sbatch.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>

#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace canopy {
namespace {

int BashCheck(const std::string& script) {
  const testing::ScopedTempDir dir("sbatch_test");
  const std::string p = dir.Path("job.sh");
  testing::WriteStringToFile(p, script);
  return std::system(("bash -n " + p).c_str());
}

// What bash makes of a quoted word.
std::string Echo(const std::string& quoted) {
  return testing::Capture("bash -c 'printf %s \"$1\"' _ " + quoted, nullptr, /*stderr_too=*/false);
}

SubmitSpec Spec() {
  SubmitSpec s;
  s.job_name = "canopy-test";
  s.canopy = "/opt/canopy/bin/canopy";
  s.output_dir = "/scratch/run 1";
  s.secret_file = "/scratch/run 1/job.secret";
  s.dataset = "/data/gsm8k.jsonl";
  s.nodes = 4;
  s.gpus_per_node = 8;
  s.time = "04:00:00";
  s.partition = "gpu";
  s.solve_args = {"--strategy", "beam", "--system-prompt", "it's \"$HOME\" `x` \\n", "--model", "/m/q.gguf",
                  "--batch-invariant", "--kv-cache-mb=4096", "--n", "16"};
  s.worker_args = WorkerArgs(s.solve_args);
  return s;
}

TEST(SbatchTest, ShellQuoteSurvivesBash) {
  for (std::string s : {"plain", "it's", "\"$HOME\"", "`rm -rf /`", "a b\tc", "", "'''", "$(x)"}) {
    EXPECT_EQ(Echo(ShellQuote(s)), s) << s;
  }
}

TEST(SbatchTest, WorkerArgsAreTheEngineOptions) {
  EXPECT_EQ(WorkerArgs(Spec().solve_args),
            (std::vector<std::string>{"--model", "/m/q.gguf", "--batch-invariant", "--kv-cache-mb=4096"}));
  EXPECT_TRUE(WorkerArgs({"--strategy", "beam"}).empty());
}

TEST(SbatchTest, MultiNodeGpuScript) {
  const std::string s = SbatchScript(Spec());
  EXPECT_EQ(BashCheck(s), 0) << s;
  for (const char* line : {"#SBATCH --nodes=4 ", "#SBATCH --ntasks-per-node=8 ", "#SBATCH --gpus-per-node=8 ",
                           "#SBATCH --time=04:00:00 ", "#SBATCH --partition=gpu ", "#SBATCH --signal=B:USR1@120 ",
                           "#SBATCH --requeue ", "#SBATCH --output=/scratch/run 1/slurm-%j.out "}) {
    EXPECT_NE(s.find(line), std::string::npos) << line << "\n" << s;
  }
  EXPECT_EQ(s.find("--array"), std::string::npos);
  EXPECT_NE(s.find("srun --kill-on-bad-exit=0 --no-kill --overlap --ntasks-per-node=8 --gpus-per-task=1"),
            std::string::npos);  // a worker per GPU, bound to it
  EXPECT_NE(s.find("worker --connect-file \"$ADDR\" --secret-file \"$SECRET_FILE\""), std::string::npos);
  EXPECT_NE(s.find("'--model' '/m/q.gguf' '--batch-invariant' '--kv-cache-mb=4096' &"), std::string::npos) << s;
  EXPECT_NE(s.find("coordinator --listen \"$HEAD:0\" --address-file \"$ADDR\""), std::string::npos);
  EXPECT_NE(s.find("trap 'kill -USR1 $COORD"), std::string::npos);
  EXPECT_NE(s.find(ShellQuote("it's \"$HOME\" `x` \\n")), std::string::npos);
  // Every #SBATCH line carries a comment.
  size_t pos = 0;
  while ((pos = s.find("#SBATCH", pos)) != std::string::npos) {
    size_t end = s.find('\n', pos);
    EXPECT_NE(s.substr(pos, end - pos).find(" # "), std::string::npos) << s.substr(pos, end - pos);
    pos = end;
  }
}

// A label job: `canopy label --launcher listen` coordinates, with the same wiring and options.
TEST(SbatchTest, LabelJobRunsCanopyLabelAsTheCoordinator) {
  SubmitSpec spec = Spec();
  spec.command = "label";
  spec.solve_args = {"--method", "binary", "--samples", "8", "--rollouts", "4", "--model", "/m/q.gguf"};
  spec.worker_args = WorkerArgs(spec.solve_args);
  const std::string s = SbatchScript(spec);
  EXPECT_EQ(BashCheck(s), 0) << s;
  EXPECT_NE(s.find("\"$CANOPY\" label --launcher listen --listen \"$HEAD:0\" --address-file \"$ADDR\" --workers \"$WORKERS\""),
            std::string::npos)
      << s;
  EXPECT_EQ(s.find("\" coordinator "), std::string::npos) << s;
  EXPECT_NE(s.find("'--method' 'binary' '--samples' '8' '--rollouts' '4' '--model' '/m/q.gguf'"), std::string::npos);
  EXPECT_NE(s.find("worker --connect-file \"$ADDR\" --secret-file \"$SECRET_FILE\" --reconnect-seconds 120 '--model' "
                   "'/m/q.gguf' &"),
            std::string::npos)
      << s;
}

TEST(SbatchTest, ArrayScriptShards) {
  SubmitSpec spec = Spec();
  spec.shards = 5;
  spec.gpus_per_node = 0;
  spec.workers_per_node = 2;
  spec.cpus_per_worker = 4;
  const std::string s = SbatchScript(spec);
  EXPECT_EQ(BashCheck(s), 0) << s;
  EXPECT_NE(s.find("#SBATCH --array=0-4 "), std::string::npos);
  EXPECT_NE(s.find("#SBATCH --ntasks-per-node=2 "), std::string::npos);
  EXPECT_NE(s.find("#SBATCH --cpus-per-task=4 "), std::string::npos);
  EXPECT_EQ(s.find("--gpus-per-node"), std::string::npos);
  EXPECT_EQ(s.find("--gpus-per-task"), std::string::npos);
  EXPECT_NE(s.find("slurm-%A_%a.out"), std::string::npos);
  EXPECT_NE(s.find("--num-shards 5"), std::string::npos);
  EXPECT_NE(s.find("OUT=\"$BASE/shard-$SLURM_ARRAY_TASK_ID\""), std::string::npos);
}

}  // namespace
}  // namespace canopy
