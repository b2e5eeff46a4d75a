#include "worker/scoring/value_head.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "common/env.h"
#include "worker/model/safetensors.h"
#include "worker/scoring/head_math.h"

namespace canopy {
namespace {

static_assert(std::endian::native == std::endian::little,
              "value heads are written as little-endian F32 by memcpy");

constexpr const char* kMean = "head.norm.mean";
constexpr const char* kStd = "head.norm.std";
constexpr const char* kW0 = "head.0.weight";
constexpr const char* kB0 = "head.0.bias";
constexpr const char* kW2 = "head.2.weight";
constexpr const char* kB2 = "head.2.bias";
constexpr const char* kFormat = "canopy.value_head";

struct TensorSpec {
  const char* name;
  std::vector<int64_t> shape;
  std::vector<float> ValueHeadWeights::*values;
};

// The tensors of `w` in file order, with the shapes its sizes imply.
std::vector<TensorSpec> Specs(const ValueHeadWeights& w) {
  const int64_t H = w.hidden_size;
  const bool mlp = w.kind == ValueHeadKind::kMlp;
  const int64_t out0 = mlp ? w.hidden_units : 1;
  std::vector<TensorSpec> specs = {{kMean, {H}, &ValueHeadWeights::mean},
                                   {kStd, {H}, &ValueHeadWeights::stddev},
                                   {kW0, {out0, H}, &ValueHeadWeights::w0},
                                   {kB0, {out0}, &ValueHeadWeights::b0}};
  if (mlp) {
    specs.push_back({kW2, {1, w.hidden_units}, &ValueHeadWeights::w2});
    specs.push_back({kB2, {1}, &ValueHeadWeights::b2});
  }
  return specs;
}

int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Empty when `w` is a usable head; otherwise what is wrong, naming the tensor.
std::string Validate(const ValueHeadWeights& w) {
  if (w.hidden_size < 1) return "hidden size " + std::to_string(w.hidden_size) + " < 1";
  if (w.kind == ValueHeadKind::kMlp && w.hidden_units < 1) {
    return "mlp head with " + std::to_string(w.hidden_units) + " hidden units";
  }
  if (w.kind == ValueHeadKind::kLogistic &&
      (w.hidden_units != 0 || !w.w2.empty() || !w.b2.empty())) {
    return "logistic head with a second layer (" + std::string(kW2) + ", " + kB2 + ")";
  }
  for (const TensorSpec& s : Specs(w)) {
    const std::vector<float>& values = w.*s.values;
    const int64_t n = NumElements(s.shape);
    if (static_cast<int64_t>(values.size()) != n) {
      return "tensor '" + std::string(s.name) + "' has " + std::to_string(values.size()) +
             " values, shape " + ShapeToString(s.shape) + " needs " + std::to_string(n);
    }
    for (int64_t i = 0; i < n; ++i) {
      const float v = values[i];
      if (!std::isfinite(v)) {
        return "tensor '" + std::string(s.name) + "' element " + std::to_string(i) + " is " +
               (std::isnan(v) ? "NaN" : "infinite");
      }
      if (s.values == &ValueHeadWeights::stddev && !(v > 0)) {
        return "tensor '" + std::string(s.name) + "' element " + std::to_string(i) + " is " +
               std::to_string(v) + " (a standard deviation must be > 0)";
      }
    }
  }
  return "";
}

void AppendLe64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

}  // namespace

const char* ValueHeadKindName(ValueHeadKind kind) {
  return kind == ValueHeadKind::kMlp ? "mlp" : "logistic";
}

StatusOr<ValueHeadKind> ParseValueHeadKind(const std::string& name) {
  if (name == "logistic") return ValueHeadKind::kLogistic;
  if (name == "mlp") return ValueHeadKind::kMlp;
  return InvalidArgumentError("unknown value head kind '" + name + "' (logistic, mlp)");
}

StatusOr<ValueHead> ValueHead::Create(ValueHeadWeights weights, const std::string& what) {
  const std::string problem = Validate(weights);
  if (!problem.empty()) return InvalidArgumentError(what + ": " + problem);
  return ValueHead(std::move(weights));
}

StatusOr<ValueHead> ValueHead::Load(const std::string& path) {
  auto file_or = SafetensorsFile::Open(path);
  if (!file_or.ok()) return file_or.status().WithContext("value head");
  const SafetensorsFile& file = **file_or;
  const std::string where = "value head: " + path;

  const std::set<std::string> known = {kMean, kStd, kW0, kB0, kW2, kB2};
  for (const SafetensorsTensor& t : file.tensors()) {
    if (!known.count(t.name)) {
      return DataLossError(where + ": unexpected tensor '" + t.name + "' (a value head has " +
                           kMean + ", " + kStd + ", " + kW0 + ", " + kB0 + " and for mlp " + kW2 +
                           ", " + kB2 + ")");
    }
  }
  // Present and F32; the shape is checked below against the others.
  auto get = [&](const char* name) -> StatusOr<const SafetensorsTensor*> {
    const SafetensorsTensor* t = file.FindTensor(name);
    if (t == nullptr) return DataLossError(where + ": missing tensor '" + name + "'");
    if (t->dtype != "F32") {
      return DataLossError(where + ": tensor '" + name + "' has dtype " + t->dtype +
                           ", a value head is F32");
    }
    return t;
  };
  CANOPY_ASSIGN_OR_RETURN(const SafetensorsTensor* mean, get(kMean));
  CANOPY_ASSIGN_OR_RETURN(const SafetensorsTensor* w0, get(kW0));
  if (mean->shape.size() != 1 || mean->shape[0] < 1) {
    return DataLossError(where + ": tensor '" + kMean + "' has shape " +
                         ShapeToString(mean->shape) + ", expected [hidden] with hidden >= 1");
  }
  if (w0->shape.size() != 2 || w0->shape[0] < 1) {
    return DataLossError(where + ": tensor '" + kW0 + "' has shape " + ShapeToString(w0->shape) +
                         ", expected [1 or units, hidden]");
  }
  ValueHeadWeights w;
  w.hidden_size = mean->shape[0];
  w.kind =
      file.FindTensor(kW2) || file.FindTensor(kB2) ? ValueHeadKind::kMlp : ValueHeadKind::kLogistic;
  if (w.kind == ValueHeadKind::kMlp) w.hidden_units = w0->shape[0];
  for (const TensorSpec& s : Specs(w)) {
    CANOPY_ASSIGN_OR_RETURN(const SafetensorsTensor* t, get(s.name));
    if (t->shape != s.shape) {
      return DataLossError(where + ": tensor '" + s.name + "' has shape " +
                           ShapeToString(t->shape) + ", expected " + ShapeToString(s.shape) +
                           " for a " + ValueHeadKindName(w.kind) + " head of hidden size " +
                           std::to_string(w.hidden_size) + " (from " + kMean + ")");
    }
    std::vector<float>& dst = w.*s.values;
    dst.resize(NumElements(s.shape));
    // Copy: the format does not promise alignment. nbytes == 4 * elements (the reader
    // checked it against the shape).
    if (t->nbytes > 0) std::memcpy(dst.data(), t->data, t->nbytes);
  }
  const std::string problem = Validate(w);
  if (!problem.empty()) return DataLossError(where + ": " + problem);
  return ValueHead(std::move(w));
}

std::string ValueHead::Serialize() const {
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", kFormat}, {"kind", ValueHeadKindName(w_.kind)}};
  uint64_t offset = 0;
  const std::vector<TensorSpec> specs = Specs(w_);
  for (const TensorSpec& s : specs) {
    const uint64_t nbytes = (w_.*s.values).size() * sizeof(float);
    header[s.name] = {
        {"dtype", "F32"}, {"shape", s.shape}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  // nlohmann::json keeps object keys sorted: the text depends on the values alone.
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');  // data 8-byte aligned
  std::string out;
  out.reserve(8 + text.size() + offset);
  AppendLe64(&out, text.size());
  out += text;
  for (const TensorSpec& s : specs) {
    const std::vector<float>& values = w_.*s.values;
    out.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  }
  return out;
}

Status ValueHead::Save(const std::string& path) const {
  return WriteFileAtomically(path, Serialize());
}

double ValueHead::Logit(std::span<const float> h) const {
  CANOPY_CHECK_EQ(static_cast<int64_t>(h.size()), w_.hidden_size);
  std::vector<float> x(w_.hidden_size);
  std::vector<float> z(w_.hidden_units);
  head_math::Standardize(h.data(), w_.mean.data(), w_.stddev.data(), x.data(), w_.hidden_size);
  return head_math::Logit(x.data(), w_.hidden_size, w_.hidden_units, w_.w0.data(), w_.b0.data(),
                          w_.w2.data(), w_.b2.data(), z.data());
}

double ValueHead::Score(std::span<const float> h) const { return head_math::Sigmoid(Logit(h)); }

}  // namespace canopy
