#include "transport/auth.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace canopy {
namespace {

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

// Closes a file descriptor on every path.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

std::string Hmac(const std::string& secret, const std::string& label, const std::string& a,
                 const std::string& b) {
  std::string data = label + a + b;
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int out_len = 0;
  const unsigned char* ok =
      HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &out_len);
  CANOPY_CHECK(ok != nullptr && out_len == kProofBytes) << "HMAC-SHA256 failed";
  return std::string(reinterpret_cast<const char*>(out), out_len);
}

}  // namespace

StatusOr<std::string> RandomBytes(size_t n) {
  Fd fd(::open("/dev/urandom", O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return IoError(Errno("/dev/urandom"));
  std::string out(n, '\0');
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::read(fd.get(), out.data() + done, n - done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return IoError(Errno("/dev/urandom: read"));
    done += static_cast<size_t>(r);
  }
  return out;
}

StatusOr<std::string> GenerateJobSecret() {
  CANOPY_ASSIGN_OR_RETURN(std::string bytes, RandomBytes(32));
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : bytes) {
    hex.push_back(kHex[c >> 4]);
    hex.push_back(kHex[c & 15]);
  }
  return hex;
}

Status WriteSecretFile(const std::string& path, const std::string& secret, Env* env) {
  auto file = env->NewPrivateFile(path);
  if (!file.ok()) return file.status().WithContext("secret file");
  Status s = (*file)->Append(secret + "\n");
  if (Status c = (*file)->Close(); s.ok()) s = c;
  if (!s.ok()) {
    (void)env->RemoveFile(path);  // best effort; the error that matters is `s`
    return s.WithContext("secret file");
  }
  return Status::Ok();
}

StatusOr<std::string> ReadSecretFile(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (fd.get() < 0) return IoError(Errno("secret file " + path));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return IoError(Errno("secret file " + path + ": stat"));
  if (!S_ISREG(st.st_mode))
    return FailedPreconditionError("secret file " + path + ": not a regular file");
  if (st.st_uid != ::geteuid()) {
    return FailedPreconditionError("secret file " + path + ": owned by uid " +
                                   std::to_string(st.st_uid) + ", not by this user");
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return FailedPreconditionError("secret file " + path + ": mode " + mode +
                                   " lets others read it; chmod 600 it");
  }
  std::string secret;
  char buf[4096];
  while (true) {
    ssize_t r = ::read(fd.get(), buf, sizeof(buf));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return IoError(Errno("secret file " + path + ": read"));
    if (r == 0) break;
    secret.append(buf, static_cast<size_t>(r));
    if (secret.size() > 65536) return InvalidArgumentError("secret file " + path + ": too large");
  }
  while (!secret.empty() && std::strchr(" \t\r\n", secret.back()) != nullptr) secret.pop_back();
  if (secret.size() < kMinSecretChars) {
    return InvalidArgumentError("secret file " + path + ": secret shorter than " +
                                std::to_string(kMinSecretChars) + " characters");
  }
  return secret;
}

StatusOr<std::string> LoadJobSecret(const std::string& file, const char* var) {
  if (const char* env = std::getenv(var); env != nullptr && env[0] != '\0') {
    std::string secret(env);
    if (secret.size() < kMinSecretChars) {
      return InvalidArgumentError(std::string(var) + ": secret shorter than " +
                                  std::to_string(kMinSecretChars) + " characters");
    }
    return secret;
  }
  if (!file.empty()) return ReadSecretFile(file);
  return NotFoundError(std::string("no job secret: set ") + var + " or pass a secret file");
}

std::string ClientProof(const std::string& secret, const std::string& server_nonce,
                        const std::string& client_nonce) {
  return Hmac(secret, "canopy-client-v1", server_nonce, client_nonce);
}

std::string ServerProof(const std::string& secret, const std::string& server_nonce,
                        const std::string& client_nonce) {
  return Hmac(secret, "canopy-server-v1", client_nonce, server_nonce);
}

bool ProofsEqual(const std::string& expected, const std::string& received) {
  if (expected.size() != received.size()) return false;  // sizes are public (32)
  return CRYPTO_memcmp(expected.data(), received.data(), expected.size()) == 0;
}

}  // namespace canopy
