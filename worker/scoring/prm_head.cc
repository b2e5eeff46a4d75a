#include "worker/scoring/prm_head.h"

#include <cmath>
#include <cstring>
#include <memory>

#include "common/check.h"
#include "common/mapped_file.h"
#include "kernels/weight.h"
#include "worker/model/safetensors.h"

namespace canopy {

StatusOr<PrmHead> PrmHead::Load(const std::string& dir, int64_t hidden_size) {
  const int64_t H = hidden_size;
  const std::vector<std::pair<std::string, std::vector<int64_t>>> specs = {
      {"score.0.weight", {H, H}},
      {"score.0.bias", {H}},
      {"score.2.weight", {2, H}},
      {"score.2.bias", {2}}};
  SafetensorsCheckpoint ckpt;
  CANOPY_RETURN_IF_ERROR(ckpt.Open(dir));
  PrmHead head;
  head.hidden_ = H;
  std::vector<float>* dst[] = {&head.w0_, &head.b0_, &head.w2_, &head.b2_};
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& [name, shape] = specs[i];
    const SafetensorsFile* file = nullptr;
    StatusOr<const SafetensorsTensor*> t = ckpt.Find(name, &file);
    if (!t.ok()) {
      return t.status().WithContext("prm-head: the PRM's classification head");
    }
    if ((*t)->shape != shape) {
      return InvalidArgumentError(file->path() + ": PRM head tensor '" + name + "' has shape " +
                                  ShapeToString((*t)->shape) + ", expected " + ShapeToString(shape));
    }
    // Copy first: the format does not promise alignment.
    auto bytes = std::make_shared<std::vector<uint8_t>>((*t)->data, (*t)->data + (*t)->nbytes);
    Weight w;
    w.type = *(*t)->type;
    w.rows = shape.size() == 2 ? shape[0] : 1;
    w.cols = shape.back();
    w.owned = bytes;
    w.data = bytes->data();
    *dst[i] = ToF32(w);
  }
  return head;
}

double PrmHead::Score(std::span<const float> h) const {
  CANOPY_CHECK_EQ(static_cast<int64_t>(h.size()), hidden_);
  const int64_t H = hidden_;
  std::vector<double> z(H);
  for (int64_t o = 0; o < H; ++o) {
    double acc = b0_[o];
    const float* row = w0_.data() + o * H;
    for (int64_t i = 0; i < H; ++i) acc += double{row[i]} * h[i];
    z[o] = acc > 0 ? acc : 0;
  }
  double l[2];
  for (int64_t o = 0; o < 2; ++o) {
    double acc = b2_[o];
    const float* row = w2_.data() + o * H;
    for (int64_t i = 0; i < H; ++i) acc += double{row[i]} * z[i];
    l[o] = acc;
  }
  return 1.0 / (1.0 + std::exp(l[0] - l[1]));
}

}  // namespace canopy
