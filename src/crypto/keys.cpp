#include "enjin/crypto/keys.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "enjin/base/file.hpp"
#include "enjin/base/hex.hpp"
#include "enjin/base/unique_fd.hpp"

namespace enjin::crypto {
namespace {

constexpr size_t kSecretBytes = crypto_sign_SECRETKEYBYTES;
static_assert(crypto_sign_PUBLICKEYBYTES == kPublicKeyBytes);
static_assert(crypto_sign_SEEDBYTES == kSeedBytes);
static_assert(crypto_sign_BYTES == kSignatureBytes);

// Reads a short one-line file into `buf` (wiped by the caller), returning the length without the
// trailing newline, or an error naming the file.
Result<size_t> readLine(int fd, const std::string& path, char* buf, size_t cap) {
  size_t len = 0;
  while (len < cap) {
    ssize_t n = ::read(fd, buf + len, cap - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errnoError("read " + path, errno);
    if (n == 0) break;
    len += static_cast<size_t>(n);
  }
  if (len == cap) return Error{path + ": file is too long for a key file"};
  while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) --len;
  return len;
}

}  // namespace

void initSodium() {
  static const bool ok = [] { return sodium_init() >= 0; }();
  if (!ok) {
    std::fputs("enjin: libsodium failed to initialise\n", stderr);
    std::abort();
  }
}

Result<PublicKey> PublicKey::fromHex(std::string_view hex) {
  PublicKey k;
  if (hex.size() != 2 * kPublicKeyBytes || !enjin::fromHex(hex, k.bytes)) {
    return Error{"a public key is 64 hex digits"};
  }
  return k;
}

std::string PublicKey::hex() const { return toHex(bytes); }
std::string PublicKey::shortHex() const { return hex().substr(0, 8); }

Result<CurvePublicKey> PublicKey::toCurve() const {
  initSodium();
  CurvePublicKey out{};
  if (crypto_sign_ed25519_pk_to_curve25519(out.data(), bytes.data()) != 0) {
    return Error{"public key " + shortHex() + ": not a valid ed25519 point"};
  }
  return out;
}

size_t PublicKeyHash::operator()(const PublicKey& k) const noexcept {
  size_t h;
  std::memcpy(&h, k.bytes.data(), sizeof h);  // keys are uniformly distributed
  return h;
}

SecretKey::SecretKey() {
  initSodium();
  secret_ = static_cast<uint8_t*>(sodium_malloc(kSecretBytes));
  if (secret_ == nullptr) {
    std::fputs("enjin: sodium_malloc failed for a secret key\n", stderr);
    std::abort();
  }
}

SecretKey::SecretKey(SecretKey&& other) noexcept
    : secret_(std::exchange(other.secret_, nullptr)), public_(other.public_) {}

SecretKey& SecretKey::operator=(SecretKey&& other) noexcept {
  if (this != &other) {
    if (secret_ != nullptr) sodium_free(secret_);
    secret_ = std::exchange(other.secret_, nullptr);
    public_ = other.public_;
  }
  return *this;
}

SecretKey::~SecretKey() {
  if (secret_ != nullptr) sodium_free(secret_);  // sodium_free wipes before unmapping
}

SecretKey SecretKey::generate() {
  SecretKey k;
  crypto_sign_keypair(k.public_.bytes.data(), k.secret_);
  return k;
}

SecretKey SecretKey::fromSeed(std::span<const uint8_t, kSeedBytes> seed) {
  SecretKey k;
  crypto_sign_seed_keypair(k.public_.bytes.data(), k.secret_, seed.data());
  return k;
}

Result<SecretKey> SecretKey::load(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return errnoError("open " + path, errno);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return errnoError("stat " + path, errno);
  if (!S_ISREG(st.st_mode)) return Error{"key file " + path + " is not a regular file"};
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Error{"key file " + path + " has mode " + mode +
                 "; a secret key must not be accessible to group or others (chmod 600 " + path +
                 ")"};
  }
  SecretKey k;
  // The hex seed passes through secure memory only.
  constexpr size_t kCap = 2 * kSeedBytes + 4;
  auto* buf = static_cast<char*>(sodium_malloc(kCap + kSeedBytes));
  if (buf == nullptr) return Error{"sodium_malloc failed while loading " + path};
  auto* seed = reinterpret_cast<uint8_t*>(buf + kCap);
  auto len = readLine(fd.get(), path, buf, kCap);
  Status status;
  if (!len.ok()) {
    status = len.error();
  } else if (*len != 2 * kSeedBytes ||
             !enjin::fromHex(std::string_view(buf, *len), std::span<uint8_t>(seed, kSeedBytes))) {
    status = Error{"key file " + path + " does not hold a 64-hex-digit ed25519 seed"};
  } else {
    crypto_sign_seed_keypair(k.public_.bytes.data(), k.secret_, seed);
  }
  sodium_free(buf);
  if (!status.ok()) return status.error();
  return k;
}

Signature SecretKey::sign(std::span<const uint8_t> message) const {
  Signature sig;
  signInto(message, sig.data());
  return sig;
}

void SecretKey::signInto(std::span<const uint8_t> message, uint8_t* signatureOut) const {
  crypto_sign_detached(signatureOut, nullptr, message.data(), message.size(), secret_);
}

void SecretKey::curveSecretInto(uint8_t* out) const {
  crypto_sign_ed25519_sk_to_curve25519(out, secret_);
}

void SecretKey::writeSeedHex(char* out) const {
  sodium_bin2hex(out, 2 * kSeedBytes + 1, secret_, kSeedBytes);
}

bool verify(const PublicKey& key, std::span<const uint8_t> message,
            std::span<const uint8_t, kSignatureBytes> signature) {
  return crypto_sign_verify_detached(signature.data(), message.data(), message.size(),
                                     key.bytes.data()) == 0;
}

Result<PublicKey> loadPublicKey(const std::string& path) {
  // A .pub file may go on with trust-file lines ("allow PREFIX"); the key is the first line.
  auto text = readFile(path);
  if (!text.ok()) return text.error();
  std::string_view first(*text);
  first = first.substr(0, first.find('\n'));
  if (!first.empty() && first.back() == '\r') first.remove_suffix(1);
  auto key = PublicKey::fromHex(first);
  if (!key.ok()) return key.error().wrap("public key file " + path);
  return key;
}

Status writeKeyPair(const std::string& base, const SecretKey& key, bool force) {
  const std::string keyPath = base + ".key";
  const std::string pubPath = base + ".pub";
  const Replace replace = force ? Replace::kYes : Replace::kNo;
  if (!force) {
    // Checked up front for a clear message; link(2) in writeFileAtomic still refuses a race.
    for (const auto* p : {&keyPath, &pubPath}) {
      if (::access(p->c_str(), F_OK) == 0) {
        return Error{*p + " already exists; pass --force to replace it"};
      }
    }
  }
  auto* line = static_cast<char*>(sodium_malloc(2 * kSeedBytes + 2));
  if (line == nullptr) return Error{"sodium_malloc failed while writing " + keyPath};
  key.writeSeedHex(line);
  line[2 * kSeedBytes] = '\n';
  Status st =
      writeFileAtomic(keyPath, std::string_view(line, 2 * kSeedBytes + 1), 0600, replace);
  sodium_free(line);
  if (!st.ok()) return st;
  return writeFileAtomic(pubPath, key.publicKey().hex() + "\n", 0644, replace);
}

}  // namespace enjin::crypto
