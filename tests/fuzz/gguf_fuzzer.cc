// libFuzzer target: GgufFile::Parse on arbitrary bytes. See tests/fuzz/README.md.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "worker/model/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // An exact-size copy so ASan sees any read past the end.
  std::vector<uint8_t> buf(data, data + size);
  auto r = canopy::GgufFile::Parse(buf.data(), buf.size(), "fuzz.gguf");
  if (!r.ok()) {
    if (r.status().message().empty()) __builtin_trap();
    return 0;
  }
  // Touch every byte the parser claims is tensor data, and read the metadata back.
  volatile uint8_t sink = 0;
  for (const canopy::GgufTensorInfo& t : (*r)->tensors()) {
    if (t.data < buf.data() || t.nbytes > static_cast<uint64_t>(buf.data() + buf.size() - t.data)) {
      __builtin_trap();
    }
    if (t.nbytes > 0) sink = sink + t.data[0] + t.data[t.nbytes - 1];
    (void)t.num_elements();
  }
  for (const auto& [key, value] : (*r)->metadata()) {
    (void)(*r)->GetString(key);
    (void)(*r)->GetFloat(key);
    (void)(*r)->GetStringArray(key);
  }
  return 0;
}
