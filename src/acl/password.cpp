#include "enjin/acl/password.hpp"

#include <sodium.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "sodium.hpp"

namespace enjin::acl {
namespace {

constexpr size_t kMaxHashChars = 511;
static_assert(crypto_pwhash_STRBYTES <= kMaxHashChars + 1);

// Code points: every byte that is not a UTF-8 continuation byte (10xxxxxx) starts one.
size_t codePoints(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) {
    if ((c & 0xC0) != 0x80) ++n;
  }
  return n;
}

// Consumes "<literal>" from the front of `s`.
bool eat(std::string_view& s, std::string_view literal) {
  if (s.substr(0, literal.size()) != literal) return false;
  s.remove_prefix(literal.size());
  return true;
}

// Consumes 1..10 decimal digits.
bool eatDigits(std::string_view& s) {
  size_t n = 0;
  while (n < s.size() && s[n] >= '0' && s[n] <= '9') ++n;
  if (n == 0 || n > 10) return false;
  s.remove_prefix(n);
  return true;
}

// Consumes one or more characters of unpadded standard base64 (what libsodium's argon2 writes).
bool eatBase64(std::string_view& s) {
  size_t n = 0;
  while (n < s.size()) {
    char c = s[n];
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/';
    if (!ok) break;
    ++n;
  }
  if (n == 0) return false;
  s.remove_prefix(n);
  return true;
}

}  // namespace

Status checkPasswordPolicy(std::string_view password) {
  if (password.size() > kMaxPasswordBytes) {
    return Error{"password: longer than 1024 bytes", 400};
  }
  if (password.find('\0') != std::string_view::npos) {
    return Error{"password: contains a NUL", 400};
  }
  if (codePoints(password) < kMinPasswordLength) {
    return Error{"password: at least 12 characters", 400};
  }
  return {};
}

Result<std::string> hashPassword(std::string_view password) {
  detail::ensureSodium();
  char out[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str_alg(
          out, password.data(), password.size(), crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE,
          crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE, crypto_pwhash_ALG_ARGON2ID13) != 0) {
    return Error{"password: hashing failed (out of memory)", 500};
  }
  return std::string(out);
}

bool verifyPassword(std::string_view hash, std::string_view password) {
  // crypto_pwhash_str_verify reads a NUL-terminated string of at most STRBYTES - 1 characters.
  if (hash.size() >= crypto_pwhash_STRBYTES || hash.find('\0') != std::string_view::npos) {
    return false;
  }
  detail::ensureSodium();
  char buf[crypto_pwhash_STRBYTES] = {};
  std::memcpy(buf, hash.data(), hash.size());
  return crypto_pwhash_str_verify(buf, password.data(), password.size()) == 0;
}

bool verifyAgainstDummy(std::string_view password) {
  static std::once_flag once;
  static std::string dummy;
  std::call_once(once, [] {
    // The password is irrelevant: the result is thrown away. What matters is that the hash has
    // the costs of a real one, so the time taken matches a known user's failed login.
    auto h = hashPassword("enjin dummy password for unknown users");
    if (!h) {
      std::fputs("enjin: cannot make the dummy password hash\n", stderr);
      std::abort();
    }
    dummy = std::move(*h);
  });
  (void)verifyPassword(dummy, password);
  return false;
}

bool isPasswordHash(std::string_view s) {
  if (s.size() > kMaxHashChars) return false;
  return eat(s, "$argon2id$v=19$m=") && eatDigits(s) && eat(s, ",t=") && eatDigits(s) &&
         eat(s, ",p=") && eatDigits(s) && eat(s, "$") && eatBase64(s) && eat(s, "$") &&
         eatBase64(s) && s.empty();
}

}  // namespace enjin::acl
