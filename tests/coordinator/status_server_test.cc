// The coordinator's status endpoint over real HTTP: /healthz for anyone, /status and
// /metrics only with the job secret, the metrics in Prometheus text format.
// ctest-labels: unit
#include "coordinator/status_server.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "tests/testing/subprocess.h"

namespace canopy {
namespace {

// curl's status code and body.
std::pair<int, std::string> Get(uint16_t port, const std::string& path, const std::string& auth = "") {
  std::string cmd = "curl -s -m 5 -w '\\n%{http_code}' ";
  if (!auth.empty()) cmd += "-H 'Authorization: " + auth + "' ";
  cmd += "http://127.0.0.1:" + std::to_string(port) + path;
  std::string out = testing::Capture(cmd, nullptr, /*stderr_too=*/false);
  size_t nl = out.rfind('\n');
  if (nl == std::string::npos) return {0, out};
  return {std::atoi(out.c_str() + nl + 1), out.substr(0, nl)};
}

TEST(StatusServerTest, HealthForAllStatusWithTheSecret) {
  ASSERT_EQ(std::system("command -v curl > /dev/null"), 0) << "curl missing (scripts/setup.sh installs it)";
  StatusBoard board;
  board.Set({{"state", "running"}, {"total", 10}, {"done", 4}, {"correct", 3}, {"accuracy", 0.75},
             {"tokens", 1234}, {"tokens_per_second", 56.5}, {"kv_hit_rate", 0.5},
             {"workers", {{{"worker", 1}, {"outstanding", 3}}, {{"worker", 2}, {"outstanding", 0}}}}});
  const std::string secret(64, 'a');
  auto server = StatusServer::Start("127.0.0.1", 0, secret, &board);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const uint16_t port = (*server)->port();
  EXPECT_EQ(Get(port, "/healthz"), std::make_pair(200, std::string("ok\n")));
  EXPECT_EQ(Get(port, "/status").first, 401);
  EXPECT_EQ(Get(port, "/status", "Bearer wrong").first, 401);
  EXPECT_EQ(Get(port, "/metrics", "Bearer " + std::string(63, 'a')).first, 401);
  auto [code, body] = Get(port, "/status", "Bearer " + secret);
  EXPECT_EQ(code, 200);
  nlohmann::json j = nlohmann::json::parse(body);
  EXPECT_EQ(j["done"], 4);
  EXPECT_EQ(j["workers"].size(), 2u);
  auto [mcode, metrics] = Get(port, "/metrics", "Bearer " + secret);
  EXPECT_EQ(mcode, 200);
  EXPECT_NE(metrics.find("# TYPE canopy_problems_done counter\ncanopy_problems_done 4\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("canopy_accuracy 0.75\n"), std::string::npos);
  EXPECT_NE(metrics.find("canopy_worker_outstanding{worker=\"1\"} 3\n"), std::string::npos);
  EXPECT_NE(metrics.find("canopy_workers_alive 2\n"), std::string::npos);
  EXPECT_EQ(Get(port, "/nope", "Bearer " + secret).first, 404);
  // The scheme is case-insensitive (RFC 7235); another scheme is not a bearer token.
  EXPECT_EQ(Get(port, "/status", "bearer " + secret).first, 200);
  EXPECT_EQ(Get(port, "/status", "BEARER  " + secret).first, 200);
  EXPECT_EQ(Get(port, "/status", "Basic " + secret).first, 401);
  EXPECT_EQ(Get(port, "/status", "Bearer" + secret).first, 401);
  // An ungraded job has no accuracy metric (not a 0).
  board.Set({{"done", 2}, {"accuracy", nullptr}});
  EXPECT_EQ(Get(port, "/metrics", "Bearer " + secret).second.find("canopy_accuracy"), std::string::npos);
  // The board's latest value is what is served.
  board.Set({{"done", 9}});
  EXPECT_EQ(nlohmann::json::parse(Get(port, "/status", "Bearer " + secret).second)["done"], 9);
}

TEST(StatusServerTest, CheckpointMetricsFollowTheStatus) {
  nlohmann::json st = {{"done", 1},
                       {"checkpoints", {{"written", 12}, {"bytes", 34567}, {"write_seconds", 0.25}, {"restored", 3},
                                        {"expansions_restored", 41}, {"tokens_restored", 5120}}}};
  const std::string m = MetricsText(st);
  EXPECT_NE(m.find("# TYPE canopy_checkpoints_written counter\ncanopy_checkpoints_written 12\n"), std::string::npos) << m;
  EXPECT_NE(m.find("canopy_checkpoint_bytes 34567\n"), std::string::npos) << m;
  EXPECT_NE(m.find("canopy_checkpoint_write_seconds 0.25\n"), std::string::npos) << m;
  EXPECT_NE(m.find("canopy_problems_restored 3\n"), std::string::npos) << m;
  EXPECT_NE(m.find("canopy_expansions_restored 41\n"), std::string::npos) << m;
  EXPECT_NE(m.find("canopy_tokens_restored 5120\n"), std::string::npos) << m;
  EXPECT_EQ(MetricsText({{"done", 1}}).find("checkpoint"), std::string::npos);  // none without them
}

TEST(StatusServerTest, NoSecretServesOnlyHealth) {
  ASSERT_EQ(std::system("command -v curl > /dev/null"), 0) << "curl missing (scripts/setup.sh installs it)";
  StatusBoard board;
  auto server = StatusServer::Start("127.0.0.1", 0, "", &board);
  ASSERT_TRUE(server.ok());
  EXPECT_EQ(Get((*server)->port(), "/healthz").first, 200);
  EXPECT_EQ(Get((*server)->port(), "/status", "Bearer ").first, 401);
}

}  // namespace
}  // namespace canopy
