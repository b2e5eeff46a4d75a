#include "cluster/slurm_env.h"

#include <cstdlib>

namespace canopy {
namespace {

// One name piece: a literal, or a bracket group's alternatives.
using Piece = std::vector<std::string>;

StatusOr<Piece> ExpandGroup(std::string_view group, size_t at) {
  Piece out;
  size_t pos = 0;
  while (pos <= group.size()) {
    size_t comma = group.find(',', pos);
    std::string_view item = group.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    auto bad = [&](const std::string& why) {
      return InvalidArgumentError("hostlist: position " + std::to_string(at + pos) + ": " + why + " in '[" +
                                  std::string(group) + "]'");
    };
    if (item.empty()) return bad("an empty range");
    size_t dash = item.find('-');
    std::string_view lo = item.substr(0, dash), hi = dash == std::string_view::npos ? lo : item.substr(dash + 1);
    auto digits = [](std::string_view s) {
      if (s.empty() || s.size() > 18) return false;
      for (char c : s) {
        if (c < '0' || c > '9') return false;
      }
      return true;
    };
    if (!digits(lo) || !digits(hi)) return bad("'" + std::string(item) + "' is not a number or a range");
    int64_t a = std::strtoll(std::string(lo).c_str(), nullptr, 10), b = std::strtoll(std::string(hi).c_str(), nullptr, 10);
    if (b < a) return bad("a descending range '" + std::string(item) + "'");
    if (b - a > (1 << 20)) return bad("a range of more than 2^20 hosts");
    for (int64_t v = a; v <= b; ++v) {
      std::string s = std::to_string(v);
      if (s.size() < lo.size()) s.insert(0, lo.size() - s.size(), '0');
      out.push_back(s);
    }
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return out;
}

}  // namespace

StatusOr<std::vector<std::string>> ExpandHostlist(std::string_view list, size_t max_hosts) {
  std::vector<std::string> hosts;
  size_t pos = 0;
  while (pos < list.size()) {
    // One host expression: up to a comma outside brackets.
    std::vector<Piece> pieces;
    std::string literal;
    size_t i = pos;
    for (; i < list.size() && list[i] != ','; ++i) {
      if (list[i] == ']') return InvalidArgumentError("hostlist: position " + std::to_string(i) + ": ']' without '['");
      if (list[i] != '[') {
        literal += list[i];
        continue;
      }
      size_t close = list.find(']', i);
      size_t next_open = list.find('[', i + 1);
      if (close == std::string_view::npos || (next_open != std::string_view::npos && next_open < close)) {
        return InvalidArgumentError("hostlist: position " + std::to_string(i) + ": '[' without ']'");
      }
      pieces.push_back({literal});
      literal.clear();
      CANOPY_ASSIGN_OR_RETURN(Piece group, ExpandGroup(list.substr(i + 1, close - i - 1), i + 1));
      pieces.push_back(std::move(group));
      i = close;
    }
    pieces.push_back({literal});
    if (!(pieces.size() == 1 && pieces[0][0].empty())) {  // skip empty items ("a,,b")
      std::vector<std::string> names = {""};
      for (const Piece& p : pieces) {
        if (names.size() * p.size() > max_hosts) {
          return InvalidArgumentError("hostlist: more than " + std::to_string(max_hosts) + " hosts");
        }
        std::vector<std::string> next;
        for (const std::string& n : names) {
          for (const std::string& s : p) next.push_back(n + s);
        }
        names = std::move(next);
      }
      for (std::string& n : names) hosts.push_back(std::move(n));
      if (hosts.size() > max_hosts) return InvalidArgumentError("hostlist: more than " + std::to_string(max_hosts) + " hosts");
    }
    pos = i + 1;
  }
  return hosts;
}

StatusOr<std::optional<SlurmEnv>> ReadSlurmEnv(const std::function<const char*(const char*)>& getenv_fn) {
  auto get = [&](const char* name) -> const char* { return getenv_fn ? getenv_fn(name) : std::getenv(name); };
  const char* job = get("SLURM_JOB_ID");
  if (!job) return std::optional<SlurmEnv>();
  SlurmEnv env;
  env.job_id = job;
  auto read_int = [&](const char* name, int64_t* out) -> Status {
    const char* v = get(name);
    if (!v) return Status::Ok();
    char* end = nullptr;
    long long x = std::strtoll(v, &end, 10);
    if (*v == '\0' || *end != '\0' || x < 0) {
      return InvalidArgumentError(std::string(name) + "='" + v + "' is not a non-negative integer");
    }
    *out = x;
    return Status::Ok();
  };
  CANOPY_RETURN_IF_ERROR(read_int("SLURM_PROCID", &env.proc_id));
  CANOPY_RETURN_IF_ERROR(read_int("SLURM_LOCALID", &env.local_id));
  CANOPY_RETURN_IF_ERROR(read_int("SLURM_NODEID", &env.node_id));
  CANOPY_RETURN_IF_ERROR(read_int("SLURM_NTASKS", &env.num_tasks));
  const char* nodelist = get("SLURM_JOB_NODELIST");
  if (!nodelist) nodelist = get("SLURM_NODELIST");
  if (!nodelist) return InvalidArgumentError("SLURM_JOB_ID is set but SLURM_JOB_NODELIST is not");
  StatusOr<std::vector<std::string>> nodes = ExpandHostlist(nodelist);
  if (!nodes.ok()) return nodes.status().WithContext("SLURM_JOB_NODELIST");
  if (nodes->empty()) return InvalidArgumentError("SLURM_JOB_NODELIST is empty");
  env.nodes = std::move(*nodes);
  if (const char* g = get("SLURM_STEP_GPUS")) {
    env.step_gpus = g;
  } else if (const char* jg = get("SLURM_JOB_GPUS")) {
    env.step_gpus = jg;
  }
  if (const char* r = get("SLURM_RESTART_COUNT")) env.restart_count = r;
  if (env.proc_id >= env.num_tasks) {
    return InvalidArgumentError("SLURM_PROCID=" + std::to_string(env.proc_id) + " is not below SLURM_NTASKS=" +
                                std::to_string(env.num_tasks));
  }
  return std::optional<SlurmEnv>(std::move(env));
}

}  // namespace canopy
