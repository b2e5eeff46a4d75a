#include "worker/prm_head.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/mapped_file.h"
#include "kernels/weight.h"
#include "worker/safetensors.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Which file holds each tensor: the index's weight_map, or the single model.safetensors.
StatusOr<std::map<std::string, std::string>> HeadFiles(const std::string& dir,
                                                       const std::vector<std::string>& names) {
  std::map<std::string, std::string> file_of;
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::error_code ec;
  if (!fs::exists(index, ec)) {
    for (const std::string& n : names) file_of[n] = (fs::path(dir) / "model.safetensors").string();
    return file_of;
  }
  CANOPY_ASSIGN_OR_RETURN(std::string text, ReadFileToString(index.string()));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") ||
      !j["weight_map"].is_object()) {
    return DataLossError(index.string() + ": no 'weight_map' object");
  }
  for (const std::string& n : names) {
    auto it = j["weight_map"].find(n);
    if (it == j["weight_map"].end() || !it->is_string()) {
      return NotFoundError(index.string() + ": no tensor '" + n +
                           "' in weight_map (is this a Qwen2.5-Math-PRM-style checkpoint?)");
    }
    std::string shard = it->get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "..") {
      return DataLossError(index.string() + ": weight_map['" + n + "'] is not a file name");
    }
    file_of[n] = (fs::path(dir) / shard).string();
  }
  return file_of;
}

}  // namespace

StatusOr<PrmHead> PrmHead::Load(const std::string& dir, int64_t hidden_size) {
  const int64_t H = hidden_size;
  const std::vector<std::pair<std::string, std::vector<int64_t>>> specs = {
      {"score.0.weight", {H, H}},
      {"score.0.bias", {H}},
      {"score.2.weight", {2, H}},
      {"score.2.bias", {2}}};
  std::vector<std::string> names;
  for (const auto& s : specs) names.push_back(s.first);
  CANOPY_ASSIGN_OR_RETURN(auto file_of, HeadFiles(dir, names));

  std::map<std::string, std::unique_ptr<SafetensorsFile>> files;
  PrmHead head;
  head.hidden_ = H;
  std::vector<float>* dst[] = {&head.w0_, &head.b0_, &head.w2_, &head.b2_};
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& [name, shape] = specs[i];
    const std::string& path = file_of.at(name);
    if (!files.count(path)) {
      CANOPY_ASSIGN_OR_RETURN(files[path], SafetensorsFile::Open(path));
    }
    StatusOr<const SafetensorsTensor*> t = files[path]->GetTensor(name);
    if (!t.ok()) {
      return t.status().WithContext("prm-head: the PRM's classification head");
    }
    if ((*t)->shape != shape) {
      return InvalidArgumentError(path + ": PRM head tensor '" + name + "' has shape " +
                                  ShapeString((*t)->shape) + ", expected " + ShapeString(shape));
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
