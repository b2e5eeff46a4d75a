// libFuzzer target: ParseHfConfig on arbitrary text. See tests/fuzz/README.md.
#include <cstddef>
#include <cstdint>
#include <string>

#include "worker/model/hf_config.h"
#include "worker/model/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto c = canopy::ParseHfConfig(text, "fuzz/config.json");
  if (!c.ok()) {
    if (c.status().message().empty()) __builtin_trap();
    return 0;
  }
  // What parses must be usable to size a model, within the limits on model files
  // (worker/model/model.h: context, sizes, finite positive RoPE base and RMS epsilon).
  if (c->num_heads <= 0 || c->num_kv_heads <= 0 || c->num_heads % c->num_kv_heads != 0 ||
      c->head_dim <= 0 || c->head_dim % 2 != 0 || !canopy::ValidateConfig(*c).ok()) {
    __builtin_trap();
  }
  (void)canopy::HfConfigToJson(*c);
  return 0;
}
