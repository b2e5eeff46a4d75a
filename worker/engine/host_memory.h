// How much memory this process may still take, so that a KV pool the user asks for
// (--kv-cache-mb, EngineOptions::kv_cache_bytes) is checked before it is allocated instead
// of ending the worker with std::bad_alloc (or later, with the OOM killer). The CUDA
// backend checks device memory itself (worker/engine/cuda_runner.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace canopy {

struct HostMemory {
  int64_t available_bytes = -1;  // -1: unknown (nothing could be read)
  std::string source;            // where the number came from, for messages
};

// The least of: /proc/meminfo MemAvailable, and where this process's cgroup has a limit,
// that limit less what the cgroup uses (v2: memory.max - memory.current; v1:
// memory.limit_in_bytes - memory.usage_in_bytes).
HostMemory ReadHostMemory();

// Parsers of the files above (for tests). MemAvailable in bytes, nullopt if absent.
std::optional<int64_t> ParseMemAvailable(std::string_view meminfo);
// A cgroup byte count ("123\n"); nullopt for "max" (no limit) or anything unreadable.
std::optional<int64_t> ParseCgroupBytes(std::string_view text);

// InvalidArgument when a pool of `bytes` (what `what` says it is) exceeds `memory`, naming
// both in MiB and where the available figure came from; OK when it fits or memory is unknown.
Status CheckFitsInMemory(int64_t bytes, const HostMemory& memory, const std::string& what);

}  // namespace canopy
