// canopy: the command-line entry point. Each subcommand lives in its own file.
#include <cstdio>
#include <cstring>
#include <string>

namespace canopy {
int GenerateMain(int argc, char** argv);
int DevicesMain(int argc, char** argv);
int SolveMain(int argc, char** argv, bool coordinator_command);
int LabelMain(int argc, char** argv);
int WorkerMain(int argc, char** argv);
int SubmitMain(int argc, char** argv);
int MergeMain(int argc, char** argv);
int StatusMain(int argc, char** argv);
int TrainPrmMain(int argc, char** argv);
int TuneMain(int argc, char** argv);
}  // namespace canopy

namespace {

void Usage() {
  std::fprintf(stderr,
               "usage: canopy <command> [options]\n"
               "\n"
               "commands:\n"
               "  solve        batch-solve a dataset with a search strategy (the main job)\n"
               "  coordinator  the same job, with worker processes that connect over TCP\n"
               "  label        label the steps of sampled solutions by rollouts (PRM training data)\n"
               "  worker       serve expansions for a coordinator\n"
               "  submit       write and submit a Slurm batch script for a job\n"
               "  merge        join the shards of a job array\n"
               "  status       a job's progress, from its folder\n"
               "  train-prm    train a value head on step labels (for --scorer policy-head)\n"
               "  tune         the strategy table of solve --strategy auto, from a development set\n"
               "  generate     sample continuations of a prompt from a model\n"
               "  devices      list the CPU threads and CUDA devices canopy can use\n"
               "\n"
               "Run `canopy <command> --help` for a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    Usage();
    return argc < 2 ? 2 : 0;
  }
  std::string cmd = argv[1];
  if (cmd == "solve") return canopy::SolveMain(argc - 1, argv + 1, false);
  if (cmd == "coordinator") return canopy::SolveMain(argc - 1, argv + 1, true);
  if (cmd == "label") return canopy::LabelMain(argc - 1, argv + 1);
  if (cmd == "worker") return canopy::WorkerMain(argc - 1, argv + 1);
  if (cmd == "submit") return canopy::SubmitMain(argc - 1, argv + 1);
  if (cmd == "merge") return canopy::MergeMain(argc - 1, argv + 1);
  if (cmd == "status") return canopy::StatusMain(argc - 1, argv + 1);
  if (cmd == "train-prm") return canopy::TrainPrmMain(argc - 1, argv + 1);
  if (cmd == "tune") return canopy::TuneMain(argc - 1, argv + 1);
  if (cmd == "generate") return canopy::GenerateMain(argc - 1, argv + 1);
  if (cmd == "devices") return canopy::DevicesMain(argc - 1, argv + 1);
  std::fprintf(stderr, "canopy: unknown command '%s'\n", cmd.c_str());
  Usage();
  return 2;
}
