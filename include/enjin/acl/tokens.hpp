// Bearer tokens: random, handed to a client once; only their hash is stored.
#pragma once

#include <string>
#include <string_view>

namespace enjin::acl {

// 32 random bytes (randombytes_buf) as base64url without padding (43 chars).
std::string newToken();

// The stored form of a token: hex of crypto_generichash (32 bytes) of it. Only this is stored.
std::string tokenHash(std::string_view token);

// Constant time for equal lengths (sodium_memcmp); different lengths are unequal.
bool constantTimeEquals(std::string_view a, std::string_view b);

// Whether `s` has the shape newToken() makes (43 chars of [A-Za-z0-9_-]).
bool looksLikeToken(std::string_view s);

}  // namespace enjin::acl
