// CUDA devices visible to this process. Safe to call where there is no GPU or no driver.
#pragma once

#include <string>
#include <vector>

namespace canopy::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0, compute_minor = 0;
  size_t total_bytes = 0, free_bytes = 0;
  int multiprocessors = 0;
};

// The devices, or an empty list with `why` set (no driver, no device, ...).
std::vector<DeviceInfo> ListDevices(std::string* why);

}  // namespace canopy::cuda
