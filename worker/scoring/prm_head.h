// The classification head of a Qwen2.5-Math-PRM-style process reward model, read from the
// checkpoint's safetensors beside the Qwen2 backbone (which LoadHfModel loads and whose
// extra tensors it ignores):
//
//   h [hidden] ─► score.0 (Linear hidden→hidden, bias) ─► ReLU ─► score.2 (Linear hidden→2,
//   bias) ─► softmax ─► [P(bad), P(good)]
//
// The tensor names are those of transformers' / vLLM's Qwen2ForProcessRewardModel
// (`self.score = nn.Sequential(Linear, ReLU, Linear)`): score.0.weight [hidden][hidden],
// score.0.bias [hidden], score.2.weight [2][hidden], score.2.bias [2]; F32, F16 or BF16.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace canopy {

class PrmHead {
 public:
  // Reads the head from `dir`/model.safetensors, or from the shards that
  // `dir`/model.safetensors.index.json names. Errors name the missing or mis-shaped tensor
  // and its file.
  static StatusOr<PrmHead> Load(const std::string& dir, int64_t hidden_size);

  // P(good) = softmax(score.2(relu(score.0(h))))[1] for one final-normed hidden state.
  double Score(std::span<const float> h) const;

  int64_t hidden_size() const { return hidden_; }

 private:
  int64_t hidden_ = 0;
  std::vector<float> w0_, b0_, w2_, b2_;  // row-major [out][in]
};

}  // namespace canopy
