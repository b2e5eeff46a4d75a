#include "worker/engine/host_memory.h"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>
#include <utility>

namespace canopy {
namespace {

// The whole of a small (pseudo-)file, or "" when it cannot be read.
std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::optional<int64_t> ParseInt(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end == s.data() || v < 0) return std::nullopt;
  return v;
}

// Limit less usage of one cgroup, when it has a limit.
std::optional<int64_t> CgroupRoom(const std::string& limit_path, const std::string& usage_path) {
  std::optional<int64_t> limit = ParseCgroupBytes(Slurp(limit_path));
  // cgroup v1 writes "no limit" as a huge number (PAGE_COUNTER_MAX pages).
  if (!limit || *limit >= (int64_t{1} << 60)) return std::nullopt;
  const int64_t usage = ParseCgroupBytes(Slurp(usage_path)).value_or(0);
  return std::max<int64_t>(0, *limit - usage);
}

// This process's cgroup v2 directory ("0::/path" in /proc/self/cgroup), "" at the root.
std::string CgroupV2Dir() {
  std::istringstream lines(Slurp("/proc/self/cgroup"));
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("0::", 0) == 0) return line.substr(3) == "/" ? "" : line.substr(3);
  }
  return "";
}

}  // namespace

std::optional<int64_t> ParseMemAvailable(std::string_view meminfo) {
  constexpr std::string_view kKey = "MemAvailable:";
  const size_t at = meminfo.find(kKey);
  if (at == std::string_view::npos) return std::nullopt;
  std::string_view rest = meminfo.substr(at + kKey.size());
  rest = rest.substr(0, rest.find('\n'));
  std::optional<int64_t> kib = ParseInt(rest);
  if (!kib || *kib > (int64_t{1} << 52)) return std::nullopt;
  return *kib * 1024;  // "kB" in /proc/meminfo is KiB
}

std::optional<int64_t> ParseCgroupBytes(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  if (text.empty() || text == "max") return std::nullopt;
  return ParseInt(text);
}

HostMemory ReadHostMemory() {
  HostMemory m;
  if (std::optional<int64_t> avail = ParseMemAvailable(Slurp("/proc/meminfo"))) {
    m.available_bytes = *avail;
    m.source = "MemAvailable in /proc/meminfo";
  }
  const std::string v2 = "/sys/fs/cgroup" + CgroupV2Dir();
  const std::pair<std::string, std::string> cgroups[] = {
      {v2 + "/memory.max", v2 + "/memory.current"},
      {"/sys/fs/cgroup/memory/memory.limit_in_bytes",
       "/sys/fs/cgroup/memory/memory.usage_in_bytes"}};
  for (const auto& [limit, usage] : cgroups) {
    std::optional<int64_t> room = CgroupRoom(limit, usage);
    if (room && (m.available_bytes < 0 || *room < m.available_bytes)) {
      m.available_bytes = *room;
      m.source = "the cgroup limit " + limit + " less its usage";
    }
  }
  return m;
}

Status CheckFitsInMemory(int64_t bytes, const HostMemory& memory, const std::string& what) {
  if (memory.available_bytes < 0 || bytes <= memory.available_bytes) return Status::Ok();
  return InvalidArgumentError(what + " of " + std::to_string(bytes >> 20) +
                              " MiB does not fit in the " +
                              std::to_string(memory.available_bytes >> 20) +
                              " MiB of memory available (" + memory.source + ")");
}

}  // namespace canopy
