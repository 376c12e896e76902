// Passwords: the policy a new one must meet, and argon2id hashes (libsodium) to store and check.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "enjin/base/result.hpp"

namespace enjin::acl {

inline constexpr size_t kMinPasswordLength = 12;  // characters (UTF-8 code points)
inline constexpr size_t kMaxPasswordBytes = 1024;

// Error code 400: "password: at least 12 characters" / "password: longer than 1024 bytes" /
// "password: contains a NUL".
Status checkPasswordPolicy(std::string_view password);

// libsodium argon2id, crypto_pwhash_str_alg with crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE and
// MEMLIMIT_INTERACTIVE (slow: ~50-100 ms; never call it on a reactor thread). "$argon2id$..."
Result<std::string> hashPassword(std::string_view password);

// crypto_pwhash_str_verify; false for a malformed hash. As slow as hashPassword.
bool verifyPassword(std::string_view hash, std::string_view password);

// Costs what verifyPassword costs, against a fixed hash made once (thread-safe, std::call_once):
// called for an unknown user so a login reveals nothing by its timing. Always false.
bool verifyAgainstDummy(std::string_view password);

// A string that looks like what hashPassword makes ("$argon2id$v=19$m=...,t=...,p=...$salt$hash"),
// for hashes delivered from elsewhere (a parent's spec). Bounded length (< 512).
bool isPasswordHash(std::string_view s);

}  // namespace enjin::acl
