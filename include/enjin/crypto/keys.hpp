// ed25519 keys (libsodium). A SecretKey lives in sodium_malloc memory (guard pages, mlock'd,
// wiped on free) and is never copied; public keys are plain values.
//
// Key files: NAME.key holds one line, the lowercase hex of the 32-byte seed, mode 0600;
// NAME.pub holds one line, the lowercase hex of the 32-byte public key. A .key readable or
// writable by group or others is refused.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "enjin/base/result.hpp"

namespace enjin::crypto {

inline constexpr size_t kPublicKeyBytes = 32;
inline constexpr size_t kSeedBytes = 32;
inline constexpr size_t kSignatureBytes = 64;

inline constexpr size_t kCurveKeyBytes = 32;

using Signature = std::array<uint8_t, kSignatureBytes>;
// An X25519 (Curve25519) public key, as CurveZMQ takes it.
using CurvePublicKey = std::array<uint8_t, kCurveKeyBytes>;

// Initialises libsodium; idempotent and thread-safe. Aborts if libsodium cannot start, since
// nothing in enjin can work without it.
void initSodium();

struct PublicKey {
  std::array<uint8_t, kPublicKeyBytes> bytes{};

  static Result<PublicKey> fromHex(std::string_view hex);
  std::string hex() const;
  // The first 8 hex digits: enough to tell keys apart in a log line.
  std::string shortHex() const;
  bool operator==(const PublicKey&) const = default;
  // The Curve25519 form of this ed25519 key (crypto_sign_ed25519_pk_to_curve25519), the key a
  // CurveZMQ peer holding the matching SecretKey presents. Fails for bytes that are not a
  // valid ed25519 point.
  Result<CurvePublicKey> toCurve() const;
};

struct PublicKeyHash {
  size_t operator()(const PublicKey& k) const noexcept;
};

class SecretKey {
 public:
  static SecretKey generate();
  static SecretKey fromSeed(std::span<const uint8_t, kSeedBytes> seed);
  // Loads NAME.key. Refuses a file whose mode grants any access to group or others.
  static Result<SecretKey> load(const std::string& path);

  SecretKey(SecretKey&& other) noexcept;
  SecretKey& operator=(SecretKey&& other) noexcept;
  SecretKey(const SecretKey&) = delete;
  SecretKey& operator=(const SecretKey&) = delete;
  ~SecretKey();

  const PublicKey& publicKey() const { return public_; }
  Signature sign(std::span<const uint8_t> message) const;
  void signInto(std::span<const uint8_t> message, uint8_t* signatureOut) const;
  // The Curve25519 secret of this key (crypto_sign_ed25519_sk_to_curve25519) into `out`, which
  // the caller wipes (sodium_memzero) when done; its public half is publicKey().toCurve().
  void curveSecretInto(uint8_t* out /* kCurveKeyBytes */) const;
  // The seed in hex, in a string the caller must wipe (used only to write the key file).
  void writeSeedHex(char* out /* 2*kSeedBytes+1 */) const;

 private:
  SecretKey();
  uint8_t* secret_ = nullptr;  // 64 bytes from sodium_malloc: seed || public key
  PublicKey public_;
};

// Verifies a detached ed25519 signature; the one verify path of enjin.
bool verify(const PublicKey& key, std::span<const uint8_t> message,
            std::span<const uint8_t, kSignatureBytes> signature);

Result<PublicKey> loadPublicKey(const std::string& path);

// Writes BASE.key (0600) and BASE.pub (0644). Refuses to replace existing files unless `force`.
Status writeKeyPair(const std::string& base, const SecretKey& key, bool force);

}  // namespace enjin::crypto
