#include "common/block_hash.h"

#include <xxhash.h>

#include <cstring>
#include <vector>

namespace canopy {

BlockHash ChainBlockHash(BlockHash parent, std::span<const int32_t> tokens) {
  // Little-endian serialization; every target we build for is little-endian.
  static_assert(std::endian::native == std::endian::little);
  uint8_t stack_buf[8 + 4 * 64];
  std::vector<uint8_t> heap_buf;
  size_t n = 8 + 4 * tokens.size();
  uint8_t* buf = stack_buf;
  if (n > sizeof(stack_buf)) {
    heap_buf.resize(n);
    buf = heap_buf.data();
  }
  std::memcpy(buf, &parent, 8);
  std::memcpy(buf + 8, tokens.data(), 4 * tokens.size());
  return XXH3_64bits_withSeed(buf, n, kBlockHashSeed);
}

}  // namespace canopy
