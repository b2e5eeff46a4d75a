// What a process learns from Slurm's environment: its rank and local rank, the job's nodes
// (SLURM_JOB_NODELIST, a compressed hostlist), tasks and GPUs. Used by the MPI and Slurm
// launch modes to pick the coordinator's node and each worker's GPU.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace canopy {

// Expands a Slurm hostlist: "node[01-03,07],gpu5,rack[1-2]-n[1-2]" -> node01 node02 node03
// node07 gpu5 rack1-n1 rack1-n2 rack2-n1 rack2-n2. Ranges keep their zero padding; several
// bracket groups in one name give their cartesian product, as `scontrol show hostnames`
// does. InvalidArgument (naming the position) for unbalanced brackets, an empty range, a
// descending range, or a list that would exceed `max_hosts`.
StatusOr<std::vector<std::string>> ExpandHostlist(std::string_view hostlist, size_t max_hosts = 1 << 20);

struct SlurmEnv {
  std::string job_id;             // SLURM_JOB_ID
  int64_t proc_id = 0;            // SLURM_PROCID: the global rank
  int64_t local_id = 0;           // SLURM_LOCALID: the rank on this node
  int64_t node_id = 0;            // SLURM_NODEID
  int64_t num_tasks = 1;          // SLURM_NTASKS
  std::vector<std::string> nodes; // SLURM_JOB_NODELIST, expanded
  std::string step_gpus;          // SLURM_STEP_GPUS or SLURM_JOB_GPUS ("" when none)
  std::string restart_count;      // SLURM_RESTART_COUNT ("" when never requeued)
  // The first node of the job: where the coordinator runs.
  const std::string& head_node() const { return nodes.front(); }
};

// Reads the variables through `getenv` (the real environment when empty). nullopt when not
// inside a Slurm job (no SLURM_JOB_ID); an error naming the variable when one is present but
// malformed.
StatusOr<std::optional<SlurmEnv>> ReadSlurmEnv(
    const std::function<const char*(const char*)>& getenv = {});

}  // namespace canopy
