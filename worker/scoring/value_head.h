// A learned step-value head (issue 16): a small classifier on the frozen hidden state of a
// base model at a step's last token, giving P(the step leads to the gold answer). It is
// trained by worker/scoring/head_trainer.h on Monte Carlo rollout labels and saved as one
// safetensors file.
//
//   h [hidden] ─► (h - mean) / std ─► logistic:  head.0 (Linear hidden→1) ─────────────► sigmoid
//                                     mlp:       head.0 (Linear hidden→units) ─► ReLU ─►
//                                                head.2 (Linear units→1) ──────────────► sigmoid
//
// NOTE: the file (all F32, little-endian, row-major; [out][in] as torch.nn.Linear)
//
//   head.norm.mean  [hidden]          per-feature mean of the training split
//   head.norm.std   [hidden]          per-feature standard deviation, every one > 0
//   head.0.weight   [1|units, hidden]
//   head.0.bias     [1|units]
//   head.2.weight   [1, units]        mlp only
//   head.2.bias     [1]               mlp only
//
// The kind is what the tensors say (head.2.* present: mlp). `__metadata__` carries
// {"format": "canopy.value_head", "kind": ...} for people; the reader does not need it.
// Other tensors in the file are refused, so a PRM checkpoint or a typo is not taken
// for a head.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace canopy {

enum class ValueHeadKind { kLogistic, kMlp };

const char* ValueHeadKindName(ValueHeadKind kind);  // "logistic", "mlp"
// InvalidArgument naming `name` and the kinds there are.
StatusOr<ValueHeadKind> ParseValueHeadKind(const std::string& name);

// The parameters of a head, laid out as in the file. A plain value; ValueHead::Create
// checks it.
struct ValueHeadWeights {
  ValueHeadKind kind = ValueHeadKind::kLogistic;
  int64_t hidden_size = 0;
  int64_t hidden_units = 0;   // mlp: width of the hidden layer; logistic: 0
  std::vector<float> mean;    // [hidden_size]
  std::vector<float> stddev;  // [hidden_size], > 0
  std::vector<float> w0, b0;  // [out0][hidden_size], [out0]; out0 = 1 or hidden_units
  std::vector<float> w2, b2;  // mlp: [1][hidden_units], [1]; logistic: empty
};

// Immutable once built; Score is const and safe to call from several threads.
class ValueHead {
 public:
  // InvalidArgument naming the tensor when a size does not fit hidden_size/hidden_units, a
  // value is not finite, or a std is not > 0. `what` prefixes the message (a file name).
  static StatusOr<ValueHead> Create(ValueHeadWeights weights,
                                    const std::string& what = "value head");

  // Reads a head written by Save (or by anything writing the layout above). Every error is
  // a Status naming `path` and the tensor: a missing, truncated or unparsable file, a
  // missing or mis-shaped tensor, a dtype other than F32, a NaN or infinite value, a std
  // <= 0, an unknown tensor.
  static StatusOr<ValueHead> Load(const std::string& path);

  // Writes the safetensors file atomically (common/env.h WriteFileAtomically). The bytes
  // depend on the weights only: the same head gives the same file.
  Status Save(const std::string& path) const;
  // The file's bytes, as Save writes them.
  std::string Serialize() const;

  // P(good) for one hidden state; h.size() must be hidden_size() (CHECKed).
  double Score(std::span<const float> h) const;
  // The logit before the sigmoid.
  double Logit(std::span<const float> h) const;

  ValueHeadKind kind() const { return w_.kind; }
  int64_t hidden_size() const { return w_.hidden_size; }
  int64_t hidden_units() const { return w_.hidden_units; }
  const ValueHeadWeights& weights() const { return w_; }

 private:
  explicit ValueHead(ValueHeadWeights w) : w_(std::move(w)) {}
  ValueHeadWeights w_;
};

}  // namespace canopy
