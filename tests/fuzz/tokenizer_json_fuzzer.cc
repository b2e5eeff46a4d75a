// libFuzzer target: a Hugging Face tokenizer.json text (Tokenizer::SpecFromHfJsonText) and
// the tokenizer built from it (Tokenizer::FromSpec). See tests/fuzz/README.md.
#include <cstddef>
#include <cstdint>
#include <string>

#include "worker/model/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto spec = canopy::Tokenizer::SpecFromHfJsonText(text, "fuzz/tokenizer.json");
  if (!spec.ok()) {
    if (spec.status().message().empty()) __builtin_trap();
    return 0;
  }
  // Ids are bounded by the entries (docs/engine.md "Limits on model files"): the table is
  // at most twice what the file lists, and the file lists at most one entry per 4 bytes.
  if (spec->tokens.size() > 2 * size || spec->tokens.size() != spec->token_types.size()) {
    __builtin_trap();
  }
  auto tokenizer = canopy::Tokenizer::FromSpec(std::move(spec).value());
  if (!tokenizer.ok()) {
    if (tokenizer.status().message().empty()) __builtin_trap();
    return 0;
  }
  // Whatever loads encodes to ids inside its vocabulary and decodes them.
  const std::string probe = text.substr(0, 64) + " hello <|im_end|> 123";
  for (int32_t id : tokenizer->Encode(probe, true)) {
    if (id < 0 || id >= tokenizer->vocab_size()) __builtin_trap();
  }
  (void)tokenizer->Decode(tokenizer->Encode(probe, false));
  return 0;
}
