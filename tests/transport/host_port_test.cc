// ctest-labels: unit
// HOST:PORT parsing (transport/host_port.h): what is accepted, and that every refusal is an
// InvalidArgument naming the flag and the text.
#include "transport/host_port.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <utility>

#include "tests/testing/temp_dir.h"

namespace canopy {
namespace {

std::pair<std::string, uint16_t> Parsed(const std::string& text) {
  auto hp = ParseHostPort(text, "--connect");
  EXPECT_TRUE(hp.ok()) << text << ": " << hp.status().ToString();
  return hp.ok() ? *hp : std::pair<std::string, uint16_t>{};
}

// The error message for `text`, after checking it is an InvalidArgument naming "--connect".
std::string Refusal(const std::string& text) {
  auto hp = ParseHostPort(text, "--connect");
  EXPECT_FALSE(hp.ok()) << "'" << text << "' was accepted";
  if (hp.ok()) return "";
  EXPECT_EQ(hp.status().code(), StatusCode::kInvalidArgument) << text;
  EXPECT_EQ(hp.status().message().rfind("--connect: ", 0), 0u) << hp.status().message();
  return hp.status().message();
}

TEST(HostPortTest, AcceptsNamesAddressesAndTheWholePortRange) {
  EXPECT_EQ(Parsed("127.0.0.1:7000"), std::make_pair(std::string("127.0.0.1"), uint16_t{7000}));
  EXPECT_EQ(Parsed("node-3.cluster:80"), std::make_pair(std::string("node-3.cluster"), uint16_t{80}));
  EXPECT_EQ(Parsed("localhost:0"), std::make_pair(std::string("localhost"), uint16_t{0}));
  EXPECT_EQ(Parsed("h:65535"), std::make_pair(std::string("h"), uint16_t{65535}));
  EXPECT_EQ(Parsed("h:00080"), std::make_pair(std::string("h"), uint16_t{80}));
}

TEST(HostPortTest, Ipv6InBracketsOrSplitAtTheLastColon) {
  EXPECT_EQ(Parsed("[::1]:7000"), std::make_pair(std::string("::1"), uint16_t{7000}));
  EXPECT_EQ(Parsed("[fe80::1%eth0]:9"), std::make_pair(std::string("fe80::1%eth0"), uint16_t{9}));
  // How the coordinator's address file and a worker's kv_endpoint write an IPv6 address.
  EXPECT_EQ(Parsed("::1:7000"), std::make_pair(std::string("::1"), uint16_t{7000}));
}

TEST(HostPortTest, RefusesPortsOutOfRange) {
  EXPECT_NE(Refusal("host:70000").find("port 70000 is out of range (0-65535)"), std::string::npos);
  EXPECT_NE(Refusal("host:65536").find("port 65536 is out of range"), std::string::npos);
  EXPECT_NE(Refusal("host:99999999999999999999").find("out of range"), std::string::npos);
}

TEST(HostPortTest, RefusesAMissingHostOrPort) {
  EXPECT_EQ(Refusal(""), "--connect: '' is not HOST:PORT");
  EXPECT_EQ(Refusal("host"), "--connect: 'host' is not HOST:PORT");
  EXPECT_EQ(Refusal("host:"), "--connect: 'host:' has no port after the ':'");
  EXPECT_EQ(Refusal(":80"), "--connect: ':80' has no host before the ':'");
  EXPECT_EQ(Refusal(":"), "--connect: ':' has no host before the ':'");
}

TEST(HostPortTest, RefusesPortsThatAreNotPlainDigits) {
  EXPECT_EQ(Refusal("host:8x"), "--connect: port '8x' is not a decimal number");
  for (const char* text : {"host:-1", "host:+80", "host: 80", "host:80 ", "host:0x50", "host:8.0"}) {
    EXPECT_NE(Refusal(text).find("is not a decimal number"), std::string::npos) << text;
  }
}

TEST(HostPortTest, RefusesBadHosts) {
  EXPECT_NE(Refusal("my host:80").find("contains a blank"), std::string::npos);
  EXPECT_NE(Refusal("[::1:80").find("unbalanced or empty brackets"), std::string::npos);
  EXPECT_NE(Refusal("::1]:80").find("unbalanced or empty brackets"), std::string::npos);
  EXPECT_NE(Refusal("[]:80").find("unbalanced or empty brackets"), std::string::npos);
  EXPECT_NE(Refusal("[a]b]:80").find("bracket inside"), std::string::npos);
}

TEST(HostPortTest, NamesWhatWasParsed) {
  auto hp = ParseHostPort("x:y", "coordinator address");
  ASSERT_FALSE(hp.ok());
  EXPECT_EQ(hp.status().message(), "coordinator address: port 'y' is not a decimal number");
}

// The coordinator's address file (apps/solve.cc writes "HOST:PORT\n" atomically).
class HostPortFileTest : public ::testing::Test {
 protected:
  void Write(const std::string& text) { testing::WriteStringToFile(path_, text); }

  const testing::ScopedTempDir dir_{"host_port_test"};
  const std::filesystem::path path_ = dir_.path() / "address";
};

TEST_F(HostPortFileTest, ReadsTheFirstLineIgnoringBlanks) {
  Write("10.1.2.3:7000\nsomething else\n");
  auto hp = ReadHostPortFile(path_.string());
  ASSERT_TRUE(hp.ok()) << hp.status().ToString();
  EXPECT_EQ(*hp, std::make_pair(std::string("10.1.2.3"), uint16_t{7000}));
  Write("  node-1:80 \r\n");
  hp = ReadHostPortFile(path_.string());
  ASSERT_TRUE(hp.ok()) << hp.status().ToString();
  EXPECT_EQ(*hp, std::make_pair(std::string("node-1"), uint16_t{80}));
}

TEST_F(HostPortFileTest, AMissingFileIsNotFoundAndABadOneNamesTheFile) {
  EXPECT_EQ(ReadHostPortFile(path_.string()).status().code(), StatusCode::kNotFound);
  Write("node-1:70000\n");
  auto hp = ReadHostPortFile(path_.string());
  ASSERT_FALSE(hp.ok());
  EXPECT_EQ(hp.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(hp.status().message(), "address file " + path_.string() + ": port 70000 is out of range (0-65535)");
  Write("\n");
  EXPECT_EQ(ReadHostPortFile(path_.string()).status().code(), StatusCode::kInvalidArgument);
}

TEST(HostPortTest, FormattedAddressesParseBack) {
  EXPECT_EQ(FormatHostPort("10.0.0.1", 7000), "10.0.0.1:7000");
  EXPECT_EQ(FormatHostPort("::1", 7000), "[::1]:7000");
  for (const char* host : {"10.0.0.1", "node-3", "::1", "fe80::1"}) {
    auto back = ParseHostPort(FormatHostPort(host, 1), "test");
    ASSERT_TRUE(back.ok()) << host << ": " << back.status().ToString();
    EXPECT_EQ(back->first, host);
    EXPECT_EQ(back->second, 1);
  }
}

}  // namespace
}  // namespace canopy
