// ctest-labels: unit
// ParseHfConfig on config.json texts as published for real checkpoints.
#include "worker/model/hf_config.h"

#include <gtest/gtest.h>

namespace canopy {
namespace {

// HuggingFaceTB/SmolLM2-135M
constexpr char kSmolLm2[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 0,
  "eos_token_id": 0,
  "hidden_act": "silu",
  "hidden_size": 576,
  "initializer_range": 0.041666666666666664,
  "intermediate_size": 1536,
  "is_llama_config": true,
  "max_position_embeddings": 8192,
  "model_type": "llama",
  "num_attention_heads": 9,
  "num_hidden_layers": 30,
  "num_key_value_heads": 3,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_interleaved": false,
  "rope_scaling": null,
  "rope_theta": 100000,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.40.1",
  "use_cache": true,
  "vocab_size": 49152
})";

// Qwen/Qwen2.5-Math-PRM-7B: the Qwen2 backbone under a process-reward class (remote code;
// the class fixes num_labels = 2, so the config carries none); no lm_head in the checkpoint.
constexpr char kQwen25MathPrm7B[] = R"({
  "architectures": ["Qwen2ForProcessRewardModel"],
  "attention_dropout": 0.0,
  "auto_map": {
    "AutoConfig": "configuration_qwen2_rm.Qwen2RMConfig",
    "AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel"
  },
  "bos_token_id": 151643,
  "eos_token_id": 151645,
  "hidden_act": "silu",
  "hidden_size": 3584,
  "initializer_range": 0.02,
  "intermediate_size": 18944,
  "max_position_embeddings": 4096,
  "max_window_layers": 28,
  "model_type": "qwen2",
  "num_attention_heads": 28,
  "num_hidden_layers": 28,
  "num_key_value_heads": 4,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "sliding_window": 131072,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.37.0",
  "use_cache": true,
  "use_mrope": false,
  "use_sliding_window": false,
  "vocab_size": 152064
})";

// Qwen/Qwen2.5-0.5B
constexpr char kQwen25[] = R"({
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151643,
  "hidden_act": "silu",
  "hidden_size": 896,
  "initializer_range": 0.02,
  "intermediate_size": 4864,
  "max_position_embeddings": 32768,
  "max_window_layers": 24,
  "model_type": "qwen2",
  "num_attention_heads": 14,
  "num_hidden_layers": 24,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 32768,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.40.1",
  "use_cache": true,
  "use_mrope": false,
  "use_sliding_window": false,
  "vocab_size": 151936
})";

// meta-llama/Llama-3.2-1B
constexpr char kLlama32[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": 128001,
  "head_dim": 64,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 8192,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 16,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})";

// The same model as saved by transformers v5 (RoPE in rope_parameters).
constexpr char kLlama32NewStyle[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "dtype": "bfloat16",
  "head_dim": 64,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "intermediate_size": 8192,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 16,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_parameters": {
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rope_type": "llama3"
  },
  "tie_word_embeddings": true,
  "transformers_version": "5.0.0",
  "vocab_size": 128256
})";

// mistralai/Mistral-7B-v0.1
constexpr char kMistral01[] = R"({
  "architectures": ["MistralForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 32768,
  "model_type": "mistral",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "sliding_window": 4096,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.34.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
})";

// mistralai/Mistral-7B-Instruct-v0.3
constexpr char kMistral03[] = R"({
  "architectures": ["MistralForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 32768,
  "model_type": "mistral",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_theta": 1000000.0,
  "sliding_window": null,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.42.0.dev0",
  "use_cache": true,
  "vocab_size": 32768
})";

ModelConfig MustParse(const std::string& text) {
  auto c = ParseHfConfig(text, "config.json");
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? *c : ModelConfig();
}

// Replaces the first occurrence of `from` (which must be there).
std::string Edit(std::string text, const std::string& from, const std::string& to) {
  size_t pos = text.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  if (pos != std::string::npos) text.replace(pos, from.size(), to);
  return text;
}

TEST(HfConfigTest, SmolLm2) {
  ModelConfig c = MustParse(kSmolLm2);
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.num_heads, 9);
  EXPECT_EQ(c.num_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.max_position, 8192);
  EXPECT_EQ(c.rms_eps, 1e-5);
  EXPECT_EQ(c.rope_theta, 100000.0);
  EXPECT_EQ(c.rope_scaling.kind, RopeScaling::Kind::kNone);
  EXPECT_EQ(c.rope_style, RopeStyle::kHalf);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_FALSE(c.attention_bias);
}

TEST(HfConfigTest, Qwen25TiedWithBias) {
  ModelConfig c = MustParse(kQwen25);
  EXPECT_EQ(c.architecture, "qwen2");
  EXPECT_EQ(c.hidden_size, 896);
  EXPECT_EQ(c.num_heads, 14);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab_size, 151936);
  EXPECT_EQ(c.rms_eps, 1e-6);
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.max_position, 32768);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_TRUE(c.attention_bias);
  EXPECT_EQ(c.rope_style, RopeStyle::kHalf);

  auto specs = HfTensorSpecs(c);
  // embed + 24 * (2 norms + 4 proj + 3 biases + 3 mlp) + norm; no lm_head.
  EXPECT_EQ(specs.size(), 1u + 24 * 12 + 1);
  EXPECT_EQ(specs.back().name, "model.norm.weight");
  EXPECT_EQ(specs[5].name, "model.layers.0.self_attn.q_proj.bias");
  EXPECT_EQ(specs[6].shape, (std::vector<int64_t>{128}));
}

TEST(HfConfigTest, Qwen25MathPrmIsQwen2) {
  ModelConfig c = MustParse(kQwen25MathPrm7B);
  EXPECT_EQ(c.architecture, "qwen2");
  EXPECT_EQ(c.hidden_size, 3584);
  EXPECT_EQ(c.intermediate_size, 18944);
  EXPECT_EQ(c.num_layers, 28);
  EXPECT_EQ(c.num_heads, 28);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.vocab_size, 152064);
  EXPECT_EQ(c.max_position, 4096);  // sliding_window is unused (use_sliding_window false)
  EXPECT_EQ(c.rms_eps, 1e-5);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_TRUE(c.attention_bias);
  // HfTensorSpecs still lists lm_head.weight (untied); the loader may go without it
  // (ModelLoadOptions::needs_lm_head). Written back, it is a causal LM.
  EXPECT_EQ(HfTensorSpecs(c).back().name, "lm_head.weight");
  EXPECT_EQ(HfArchitectureName("qwen2"), "Qwen2ForCausalLM");
}

TEST(HfConfigTest, Llama32OldPlaceRopeScaling) {
  ModelConfig c = MustParse(kLlama32);
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.max_position, 131072);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.kind, RopeScaling::Kind::kLlama3);
  EXPECT_EQ(c.rope_scaling.factor, 32.0);
  EXPECT_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position, 8192);
  EXPECT_TRUE(c.tied_embeddings);
}

TEST(HfConfigTest, Llama32NewPlaceRopeParameters) {
  ModelConfig c = MustParse(kLlama32NewStyle);
  ModelConfig old = MustParse(kLlama32);
  EXPECT_EQ(c.rope_theta, old.rope_theta);
  EXPECT_EQ(c.rope_scaling.kind, RopeScaling::Kind::kLlama3);
  EXPECT_EQ(c.rope_scaling.factor, old.rope_scaling.factor);
  EXPECT_EQ(c.rope_scaling.original_max_position, old.rope_scaling.original_max_position);
  EXPECT_EQ(c.hidden_size, old.hidden_size);

  // rope_parameters with the default type and the old "type" key spelling.
  ModelConfig d =
      MustParse(Edit(kQwen25, R"("rope_theta": 1000000.0,)",
                     R"("rope_parameters": {"rope_theta": 250000.0, "rope_type": "default"},)"));
  EXPECT_EQ(d.rope_theta, 250000.0);
  EXPECT_EQ(d.rope_scaling.kind, RopeScaling::Kind::kNone);
  ModelConfig e = MustParse(Edit(kLlama32, R"("rope_type": "llama3")", R"("type": "llama3")"));
  EXPECT_EQ(e.rope_scaling.kind, RopeScaling::Kind::kLlama3);
}

TEST(HfConfigTest, Mistral) {
  ModelConfig v01 = MustParse(kMistral01);
  EXPECT_EQ(v01.architecture, "mistral");
  EXPECT_EQ(v01.hidden_size, 4096);
  EXPECT_EQ(v01.intermediate_size, 14336);
  EXPECT_EQ(v01.head_dim, 128);
  EXPECT_FALSE(v01.tied_embeddings);
  EXPECT_FALSE(v01.attention_bias);
  EXPECT_EQ(v01.max_position, 4096);  // capped at the sliding window
  ModelConfig v03 = MustParse(kMistral03);
  EXPECT_EQ(v03.max_position, 32768);
  EXPECT_EQ(v03.rope_theta, 1e6);
  EXPECT_EQ(v03.vocab_size, 32768);
  EXPECT_EQ(HfTensorSpecs(v03).back().name, "lm_head.weight");
}

TEST(HfConfigTest, Defaults) {
  ModelConfig c = MustParse(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
      "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
      "num_key_value_heads": null, "head_dim": null, "vocab_size": 100})");
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rms_eps, 1e-6);
  EXPECT_EQ(c.max_position, 2048);
  EXPECT_FALSE(c.tied_embeddings);
}

TEST(HfConfigTest, RoundTripThroughJson) {
  for (const char* text : {kSmolLm2, kQwen25, kLlama32, kMistral03}) {
    ModelConfig c = MustParse(text);
    c.name = "x";
    ModelConfig back = MustParse(HfConfigToJson(c));
    EXPECT_EQ(back.architecture, c.architecture);
    EXPECT_EQ(back.name, "x");
    EXPECT_EQ(back.hidden_size, c.hidden_size);
    EXPECT_EQ(back.num_kv_heads, c.num_kv_heads);
    EXPECT_EQ(back.head_dim, c.head_dim);
    EXPECT_EQ(back.rms_eps, c.rms_eps);
    EXPECT_EQ(back.rope_theta, c.rope_theta);
    EXPECT_EQ(back.rope_scaling.kind, c.rope_scaling.kind);
    EXPECT_EQ(back.rope_scaling.factor, c.rope_scaling.factor);
    EXPECT_EQ(back.tied_embeddings, c.tied_embeddings);
    EXPECT_EQ(back.attention_bias, c.attention_bias);
    EXPECT_EQ(back.max_position, c.max_position);
  }
}

void ExpectError(const std::string& text, StatusCode code, const std::string& needle) {
  SCOPED_TRACE(needle);
  auto c = ParseHfConfig(text, "some/dir/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), code) << c.status().ToString();
  EXPECT_NE(c.status().message().find(needle), std::string::npos) << c.status().ToString();
  EXPECT_NE(c.status().message().find("some/dir/config.json"), std::string::npos);
}

TEST(HfConfigTest, Errors) {
  ExpectError(Edit(kSmolLm2, "LlamaForCausalLM", "GPT2LMHeadModel"), StatusCode::kUnimplemented,
              "GPT2LMHeadModel");
  ExpectError(Edit(kQwen25MathPrm7B, R"(["Qwen2ForProcessRewardModel"])",
                   R"(["Qwen2ForRewardModel"])"),
              StatusCode::kUnimplemented, "Qwen2ForRewardModel");
  ExpectError(Edit(kQwen25MathPrm7B, R"("use_sliding_window": false)",
                   R"("use_sliding_window": true)"),
              StatusCode::kUnimplemented, "use_sliding_window");
  ExpectError(Edit(kSmolLm2, R"("hidden_size": 576,)", ""), StatusCode::kInvalidArgument,
              "hidden_size");
  ExpectError(Edit(kSmolLm2, R"("vocab_size": 49152)", R"("vocab_size": "many")"),
              StatusCode::kInvalidArgument, "vocab_size");
  ExpectError(Edit(kSmolLm2, R"("num_hidden_layers": 30,)", R"("num_hidden_layers": -3,)"),
              StatusCode::kInvalidArgument, "num_hidden_layers");
  ExpectError(Edit(kSmolLm2, R"("num_key_value_heads": 3,)", R"("num_key_value_heads": 4,)"),
              StatusCode::kInvalidArgument, "num_key_value_heads");
  ExpectError(Edit(kLlama32, R"("rope_type": "llama3")", R"("rope_type": "yarn")"),
              StatusCode::kUnimplemented, "yarn");
  ExpectError(Edit(kLlama32NewStyle, R"("rope_type": "llama3")", R"("rope_type": "longrope")"),
              StatusCode::kUnimplemented, "longrope");
  ExpectError(Edit(kLlama32, R"("factor": 32.0,)", ""), StatusCode::kInvalidArgument,
              "rope_scaling.factor");
  ExpectError(Edit(kSmolLm2, R"("hidden_act": "silu")", R"("hidden_act": "gelu")"),
              StatusCode::kUnimplemented, "gelu");
  ExpectError(Edit(kSmolLm2, R"("attention_bias": false)", R"("attention_bias": true)"),
              StatusCode::kUnimplemented, "attention_bias");
  ExpectError(Edit(kQwen25, R"("use_sliding_window": false)", R"("use_sliding_window": true)"),
              StatusCode::kUnimplemented, "use_sliding_window");
  // Limits on model files (docs/engine.md): sizes that would size allocations, and
  // hyper-parameters that would make garbage.
  ExpectError(Edit(kSmolLm2, R"("max_position_embeddings": 8192)",
                   R"("max_position_embeddings": 2147483647)"),
              StatusCode::kInvalidArgument, "'max_position_embeddings' = 2147483647");
  ExpectError(
      Edit(kSmolLm2, R"("max_position_embeddings": 8192)", R"("max_position_embeddings": 1e8)"),
      StatusCode::kInvalidArgument, "'max_position_embeddings' = 100000000");
  ExpectError(Edit(kSmolLm2, R"("rope_theta": 100000)", R"("rope_theta": 0)"),
              StatusCode::kInvalidArgument, "rope_theta");
  ExpectError(Edit(kSmolLm2, R"("rms_norm_eps": 1e-05)", R"("rms_norm_eps": 0)"),
              StatusCode::kInvalidArgument, "rms_norm_eps");
  ExpectError(Edit(kSmolLm2, R"("rms_norm_eps": 1e-05)", R"("rms_norm_eps": 3.5)"),
              StatusCode::kInvalidArgument, "rms_norm_eps");
  ExpectError(Edit(kLlama32, R"("original_max_position_embeddings": 8192)",
                   R"("original_max_position_embeddings": 4294967296)"),
              StatusCode::kInvalidArgument, "original_max_position_embeddings");
  ExpectError(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64)",
              StatusCode::kInvalidArgument, "bad JSON");
  ExpectError("[1, 2, 3]", StatusCode::kInvalidArgument, "not a JSON object");
  ExpectError("{}", StatusCode::kInvalidArgument, "architectures");
  ExpectError(R"({"architectures": "LlamaForCausalLM"})", StatusCode::kInvalidArgument,
              "architectures");
}

}  // namespace
}  // namespace canopy
