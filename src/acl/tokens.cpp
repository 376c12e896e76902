#include "enjin/acl/tokens.hpp"

#include <sodium.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "enjin/base/hex.hpp"
#include "sodium.hpp"

namespace enjin::acl {
namespace detail {

void ensureSodium() {
  static const bool ok = [] { return sodium_init() >= 0; }();
  if (!ok) {
    std::fputs("enjin: libsodium failed to initialise\n", stderr);
    std::abort();
  }
}

}  // namespace detail

namespace {
constexpr size_t kTokenBytes = 32;
constexpr size_t kTokenChars = 43;  // base64 of 32 bytes, no padding
}  // namespace

std::string newToken() {
  detail::ensureSodium();
  std::array<uint8_t, kTokenBytes> bytes;
  randombytes_buf(bytes.data(), bytes.size());
  constexpr int kVariant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
  char out[sodium_base64_ENCODED_LEN(kTokenBytes, kVariant)];
  sodium_bin2base64(out, sizeof out, bytes.data(), bytes.size(), kVariant);
  sodium_memzero(bytes.data(), bytes.size());
  std::string token(out);
  sodium_memzero(out, sizeof out);
  return token;
}

std::string tokenHash(std::string_view token) {
  detail::ensureSodium();
  std::array<uint8_t, crypto_generichash_BYTES> digest;
  static_assert(crypto_generichash_BYTES == 32);
  crypto_generichash(digest.data(), digest.size(), reinterpret_cast<const uint8_t*>(token.data()),
                     token.size(), nullptr, 0);
  return toHex(digest);
}

bool constantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  detail::ensureSodium();
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool looksLikeToken(std::string_view s) {
  if (s.size() != kTokenChars) return false;
  for (char c : s) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace enjin::acl
