// libFuzzer target: SafetensorsFile::Parse on arbitrary bytes. See tests/fuzz/README.md.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "worker/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> buf(data, data + size);
  auto r = canopy::SafetensorsFile::Parse(buf.data(), buf.size(), "fuzz.safetensors");
  if (!r.ok()) {
    if (r.status().message().empty()) __builtin_trap();
    return 0;
  }
  volatile uint8_t sink = 0;
  for (const canopy::SafetensorsTensor& t : (*r)->tensors()) {
    if (t.data < buf.data() || t.nbytes > static_cast<uint64_t>(buf.data() + buf.size() - t.data)) {
      __builtin_trap();
    }
    if (t.nbytes > 0) sink = sink + t.data[0] + t.data[t.nbytes - 1];
    (void)t.num_elements();
    (void)(*r)->GetTensor(t.name);
  }
  return 0;
}
