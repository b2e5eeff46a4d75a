// A tiny random-weight Llama (2 layers, hidden 64) and a byte-level tokenizer for it: an
// engine that builds in milliseconds, for tests that exercise mechanics, not model quality.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include "tests/testing/model_writer.h"
#include "worker/engine/engine.h"
#include "worker/model/unicode.h"

namespace canopy::testing {

inline ModelConfig TinyConfig(const std::string& arch = "llama") {
  ModelConfig c;
  c.architecture = arch;
  c.vocab_size = 260;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.max_position = 1024;
  c.rms_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tied_embeddings = arch == "qwen2";
  c.attention_bias = arch == "qwen2";
  return c;
}

// 256 byte tokens, then <|endoftext|>, <|im_start|>, <|im_end|> (control) and one merge.
inline std::shared_ptr<Tokenizer> TinyTokenizer() {
  TokenizerSpec spec;
  for (const std::string& s : ByteLevelAlphabet()) spec.tokens.push_back(s);
  spec.token_types.assign(256, kTokenTypeNormal);
  for (const char* s : {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}) {
    spec.tokens.push_back(s);
    spec.token_types.push_back(kTokenTypeControl);
  }
  spec.tokens.push_back("\xC4\xA0t");  // "Ġt"
  spec.token_types.push_back(kTokenTypeNormal);
  spec.merges.push_back({"\xC4\xA0", "t"});
  spec.pre = "gpt2";
  spec.bos_id = 256;
  spec.eos_id = 258;
  auto t = Tokenizer::FromSpec(std::move(spec));
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return std::make_shared<Tokenizer>(std::move(*t));
}

// Writes a random model of `config` as GGUF (F32) into a temp dir and loads it back.
inline std::shared_ptr<ModelWeights> RandomModel(const ModelConfig& config, uint64_t seed) {
  std::string dir = std::filesystem::temp_directory_path() /
                    ("canopy_tiny_" + std::to_string(::getpid()) + "_" + std::to_string(seed) +
                     config.architecture + "_" + std::to_string(config.hidden_size) + "_" +
                     std::to_string(config.head_dim));
  std::filesystem::create_directories(dir);
  std::string path = dir + "/tiny.gguf";
  DenseModel dense = RandomDenseModel(config, seed);
  Status s = WriteGgufModel(dense, path, TensorType::kF32);
  EXPECT_TRUE(s.ok()) << s.ToString();
  auto m = LoadGgufModel(path);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return std::make_shared<ModelWeights>(std::move(*m));
}

inline std::shared_ptr<ModelWeights> TinyModel(uint64_t seed = 7, const std::string& arch = "llama") {
  return RandomModel(TinyConfig(arch), seed);
}

inline std::unique_ptr<Engine> TinyEngine(EngineOptions opts = {}, uint64_t seed = 7) {
  if (opts.num_kv_blocks == 0) opts.num_kv_blocks = 256;
  auto e = Engine::Create(opts, TinyModel(seed), TinyTokenizer());
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return std::move(*e);
}

}  // namespace canopy::testing
