// Writes seed inputs for the fuzzers: a small GGUF (with tokenizer metadata), a small
// safetensors file, a config.json, a tokenizer.json and one transport frame per message
// kind.
// Usage: seed_corpus OUT_DIR (see README.md).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/testing/model_writer.h"
#include "tests/transport/sample_envelopes.h"
#include "transport/codec.h"
#include "worker/model/hf_config.h"
#include "worker/model/unicode.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  namespace fs = std::filesystem;
  const fs::path out = argv[1];
  canopy::ModelConfig c;
  c.architecture = "qwen2";
  c.vocab_size = 8;
  c.hidden_size = 8;
  c.intermediate_size = 8;
  c.num_layers = 1;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 4;
  c.max_position = 32;
  c.attention_bias = true;
  c.tied_embeddings = true;
  canopy::DenseModel m = canopy::RandomDenseModel(c, 1);
  for (const char* sub : {"gguf", "safetensors", "hf_config", "tokenizer_json", "frame"})
    fs::create_directories(out / sub);
  auto tokenizer = [](canopy::GgufWriter& w) {
    w.AddString("tokenizer.ggml.model", "gpt2");
    w.AddStringArray("tokenizer.ggml.tokens", {"a", "b", "c", "d", "e", "f", "g", "h"});
    w.AddInt32Array("tokenizer.ggml.token_type", {1, 1, 1, 1, 1, 1, 1, 3});
    w.AddBool("tokenizer.ggml.add_bos_token", false);
  };
  bool ok = canopy::WriteGgufModel(m, (out / "gguf" / "seed.gguf").string(),
                                   canopy::TensorType::kF16, tokenizer)
                .ok();
  c.architecture = "llama";
  c.attention_bias = false;
  ok =
      ok && canopy::WriteGgufModel(canopy::RandomDenseModel(c, 2),
                                   (out / "gguf" / "llama.gguf").string(), canopy::TensorType::kF32)
                .ok();
  ok =
      ok &&
      canopy::WriteSafetensorsModel(m, (out / "st_model").string(), canopy::TensorType::kBF16).ok();
  if (!ok) return 1;
  fs::copy_file(out / "st_model" / "model.safetensors", out / "safetensors" / "seed.safetensors",
                fs::copy_options::overwrite_existing);
  fs::copy_file(out / "st_model" / "config.json", out / "hf_config" / "config.json",
                fs::copy_options::overwrite_existing);
  fs::remove_all(out / "st_model");
  // tokenizer_json_fuzzer: the byte alphabet, two merges, two added tokens, SmolLM's
  // pre-tokenizer.
  nlohmann::json vocab = nlohmann::json::object();
  for (int id = 0; id < 256; ++id) vocab[canopy::ByteLevelAlphabet()[id]] = id;
  vocab["ab"] = 256;
  vocab["abc"] = 257;
  const nlohmann::json tokenizer_json = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"a b", {"ab", "c"}}}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Digits"}, {"individual_digits", true}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}}}}},
      {"added_tokens",
       {{{"id", 258}, {"content", "<|im_start|>"}, {"special", true}},
        {{"id", 259}, {"content", "<|im_end|>"}, {"special", true}}}}};
  std::ofstream(out / "tokenizer_json" / "tokenizer.json") << tokenizer_json.dump();
  // frame_fuzzer: one frame of every envelope kind, read in 64-byte chunks (first byte 63).
  for (const canopy::Envelope& e : canopy::testing_transport::SampleEnvelopes()) {
    std::vector<uint8_t> bytes = canopy::EncodeFrame(e);
    bytes.insert(bytes.begin(), 63);
    std::ofstream f(out / "frame" / (std::string(canopy::EnvelopeKindName(e)) + ".bin"),
                    std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
    if (!f) return 1;
  }
  return 0;
}
