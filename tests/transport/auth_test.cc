// ctest-labels: unit
// The job secret (generation, files readable only by the user, the environment) and the
// handshake proofs.
#include "transport/auth.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>

#include "tests/testing/fault_env.h"
#include "tests/testing/temp_dir.h"

namespace canopy {
namespace {

class SecretFileTest : public ::testing::Test {
 protected:
  std::string Path(const std::string& name) const { return dir_.Path(name); }

  const testing::ScopedTempDir dir_{"auth_test"};
};

TEST(AuthTest, GeneratedSecretsAreHexAndDiffer) {
  StatusOr<std::string> a = GenerateJobSecret();
  StatusOr<std::string> b = GenerateJobSecret();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->size(), 64u);
  EXPECT_EQ(a->find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_NE(*a, *b);
  StatusOr<std::string> nonce = RandomBytes(kNonceBytes);
  ASSERT_TRUE(nonce.ok());
  EXPECT_EQ(nonce->size(), kNonceBytes);
}

TEST_F(SecretFileTest, WriteThenReadWithMode0600) {
  std::string secret = *GenerateJobSecret();
  const std::string path = Path("secret");
  ASSERT_TRUE(WriteSecretFile(path, secret).ok());
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  StatusOr<std::string> read = ReadSecretFile(path);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(*read, secret);
  // Never overwrites.
  EXPECT_EQ(WriteSecretFile(path, secret).code(), StatusCode::kIoError);
}

TEST_F(SecretFileTest, AFailedWriteLeavesNoHalfSecretBehind) {
  const std::string path = Path("secret");
  const std::string secret(64, 'c');
  ::canopy::testing::FaultInjectionEnv env;
  env.ShortWrite(1, 20);
  env.Fail(::canopy::testing::FaultOp::kWrite, 2, ENOSPC);
  Status s = WriteSecretFile(path, secret, &env);
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_EQ(s.message(), "secret file: " + path + ": write: No space left on device");
  // Not 20 characters of a secret that a worker would read as the job's, and no file that
  // makes the next try fail with "File exists".
  EXPECT_FALSE(std::filesystem::exists(path));
  ASSERT_TRUE(WriteSecretFile(path, secret, &env).ok());
  EXPECT_EQ(*ReadSecretFile(path), secret);
}

TEST_F(SecretFileTest, Mode0600WhateverTheUmaskAndNeverThroughALink) {
  const mode_t old = ::umask(0277);
  const Status s = WriteSecretFile(Path("strict_umask"), std::string(64, 'd'));
  ::umask(old);
  ASSERT_TRUE(s.ok()) << s.ToString();
  struct stat st {};
  ASSERT_EQ(::stat(Path("strict_umask").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::filesystem::create_symlink(Path("nowhere"), Path("link"));
  EXPECT_EQ(WriteSecretFile(Path("link"), std::string(64, 'd')).code(), StatusCode::kIoError);
  EXPECT_FALSE(std::filesystem::exists(Path("nowhere")));
}

TEST_F(SecretFileTest, FileOthersCanReadIsRefused) {
  const std::string path = Path("open_secret");
  ASSERT_TRUE(WriteSecretFile(path, std::string(64, 'a')).ok());
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  StatusOr<std::string> read = ReadSecretFile(path);
  EXPECT_EQ(read.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(read.status().message().find("0644"), std::string::npos) << read.status().message();
  ASSERT_EQ(::chmod(path.c_str(), 0640), 0);
  EXPECT_EQ(ReadSecretFile(path).status().code(), StatusCode::kFailedPrecondition);
  ASSERT_EQ(::chmod(path.c_str(), 0400), 0);
  EXPECT_TRUE(ReadSecretFile(path).ok());
}

TEST_F(SecretFileTest, SymlinkShortAndMissingAreRefused) {
  const std::string target = Path("target");
  ASSERT_TRUE(WriteSecretFile(target, std::string(64, 'b')).ok());
  const std::string link = Path("link");
  std::filesystem::create_symlink(target, link);
  EXPECT_FALSE(ReadSecretFile(link).ok());
  const std::string short_path = Path("short");
  ASSERT_TRUE(WriteSecretFile(short_path, "tooshort").ok());
  EXPECT_EQ(ReadSecretFile(short_path).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadSecretFile(Path("missing")).status().code(), StatusCode::kIoError);
}

TEST_F(SecretFileTest, EnvironmentWinsOverFile) {
  const std::string path = Path("secret");
  ASSERT_TRUE(WriteSecretFile(path, std::string(40, 'f')).ok());
  const char* var = "CANOPY_AUTH_TEST_SECRET";
  ::unsetenv(var);
  EXPECT_EQ(*LoadJobSecret(path, var), std::string(40, 'f'));
  EXPECT_EQ(LoadJobSecret("", var).status().code(), StatusCode::kNotFound);
  ::setenv(var, std::string(48, 'e').c_str(), 1);
  EXPECT_EQ(*LoadJobSecret(path, var), std::string(48, 'e'));
  ::setenv(var, "short", 1);
  EXPECT_EQ(LoadJobSecret(path, var).status().code(), StatusCode::kInvalidArgument);
  ::unsetenv(var);
}

TEST(AuthTest, ProofsBindSecretNoncesAndDirection) {
  const std::string secret(64, 's');
  const std::string sn(kNonceBytes, '\x01');
  const std::string cn(kNonceBytes, '\x02');
  std::string client = ClientProof(secret, sn, cn);
  EXPECT_EQ(client.size(), kProofBytes);
  EXPECT_EQ(client, ClientProof(secret, sn, cn));
  EXPECT_NE(client, ServerProof(secret, sn, cn));
  EXPECT_NE(client, ClientProof(std::string(64, 't'), sn, cn));
  EXPECT_NE(client, ClientProof(secret, cn, sn));
  EXPECT_NE(client, ClientProof(secret, sn, std::string(kNonceBytes, '\x03')));
  EXPECT_TRUE(ProofsEqual(client, ClientProof(secret, sn, cn)));
  std::string flipped = client;
  flipped[31] ^= 1;
  EXPECT_FALSE(ProofsEqual(client, flipped));
  EXPECT_FALSE(ProofsEqual(client, client.substr(0, 31)));
  EXPECT_FALSE(ProofsEqual(client, ""));
}

std::string Hex(const std::string& bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

TEST(AuthTest, ProofsAreHmacSha256OfTheDocumentedMessage) {
  // Expected values from Python: hmac.new(b"k" * 40, b"canopy-client-v1" + sn + cn,
  // hashlib.sha256) and hmac.new(b"k" * 40, b"canopy-server-v1" + cn + sn, hashlib.sha256).
  std::string sn, cn;
  for (int i = 0; i < 32; ++i) {
    sn.push_back(static_cast<char>(i));
    cn.push_back(static_cast<char>(32 + i));
  }
  const std::string secret(40, 'k');
  EXPECT_EQ(Hex(ClientProof(secret, sn, cn)),
            "df4fa6f72c5a73b54d25e33347981377eb0e5f06583ff1a8c7b5fd708051f7db");
  EXPECT_EQ(Hex(ServerProof(secret, sn, cn)),
            "161c5ec3b545e492c836e0f3afe169449768863567ba8e9dad714c8e8cc83c0d");
}

}  // namespace
}  // namespace canopy
