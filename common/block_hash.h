// The chained hash that names a full KV block by its token prefix. The coordinator and
// every worker must agree on it, so it is fixed and versioned: a change to the function
// bumps kBlockHashVersion, and peers with different versions refuse each other.
//
//   hash(block i) = XXH3_64(seed = kBlockHashSeed, bytes = hash(block i-1) ‖ tokens of block i)
//
// with hash(block -1) = kRootBlockHash, integers little-endian (u64 parent, u32 tokens).
#pragma once

#include <bit>
#include <cstdint>
#include <span>

namespace canopy {

inline constexpr uint32_t kBlockHashVersion = 1;
inline constexpr uint64_t kBlockHashSeed = 0x63616e6f70790001ULL;  // "canopy" ‖ version
inline constexpr uint64_t kRootBlockHash = 0;

using BlockHash = uint64_t;

BlockHash ChainBlockHash(BlockHash parent, std::span<const int32_t> tokens);

}  // namespace canopy
