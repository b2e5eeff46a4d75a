// Watching a job: the coordinator's status as JSON (what `/status` serves, what
// OUTPUT/status.json holds for `canopy status`), Prometheus text for `/metrics`, and a
// small HTTP server on loopback (by default) that serves them.
//
//   GET /healthz  -> 200 "ok" (no authentication)
//   GET /status   -> 200 JSON      } need "Authorization: Bearer <job secret>"
//   GET /metrics  -> 200 text/plain} (401 without it, 404 for other paths)
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace canopy {

// The latest status, set by the coordinator's thread, read by the server's.
class StatusBoard {
 public:
  void Set(nlohmann::json status) {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = std::move(status);
  }
  nlohmann::json Get() const {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }

 private:
  mutable std::mutex mu_;
  nlohmann::json status_ = nlohmann::json::object();
};

// Prometheus text exposition of a status JSON (counters and gauges named canopy_*).
std::string MetricsText(const nlohmann::json& status);

class StatusServer {
 public:
  // Listens on address:port (port 0: any; see port()). An empty secret refuses everything
  // but /healthz.
  static StatusOr<std::unique_ptr<StatusServer>> Start(const std::string& address, uint16_t port,
                                                       const std::string& secret, const StatusBoard* board);
  ~StatusServer();
  uint16_t port() const;

 private:
  struct Impl;
  explicit StatusServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace canopy
