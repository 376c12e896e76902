// Wire format v1 (proto/envelope.md is the normative text). A message is three ZeroMQ frames:
//   topic   1-255 bytes, see topic.hpp
//   payload {"v":1,"from":"<hex key>","seq":N,"ts":MS,"type":"T","body":{...}}
//   auth    32-byte sender public key || 64-byte ed25519 signature of
//           "enjin-v1" 0x00 topic 0x00 payload
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "enjin/crypto/keys.hpp"

namespace enjin::bus {

inline constexpr int kWireVersion = 1;
inline constexpr std::string_view kSignatureDomain{"enjin-v1\0", 9};
inline constexpr size_t kAuthBytes = crypto::kPublicKeyBytes + crypto::kSignatureBytes;
inline constexpr size_t kDefaultMaxPayloadBytes = 1 << 20;

// A connecting socket retries 10 ms after losing its peer, doubling up to 250 ms: a restarted
// parent (back after its restart delay, ~100 ms) is heard from again within milliseconds
// instead of libzmq's default 100 ms or a long backoff step, and a peer that stays away costs
// four attempts a second.
inline constexpr int kReconnectMillis = 10;
inline constexpr int kReconnectMaxMillis = 250;

using Auth = std::array<uint8_t, kAuthBytes>;

// Reasons a received message is rejected. The names (rejectReasonName) are part of the
// protocol: counters, logs and `enjinctl bus sub` use them verbatim.
enum class RejectReason : uint8_t {
  kMalformed,     // wrong frame count, bad topic, bad auth size, payload not strict v1 JSON
  kOversize,      // topic or payload above its limit
  kUnknownKey,    // the key in auth is not in the trust store
  kBadSignature,  // the signature does not verify
  kIdentity,      // validly signed, but "from" names another key
  kStale,         // "ts" outside the window
  kReplay,        // "seq" not above the last one accepted from that key
  kAcl,           // the key may not publish on this topic
};
inline constexpr size_t kRejectReasonCount = 8;

std::string_view rejectReasonName(RejectReason reason);

// The serialized payload. `type` is JSON-escaped here; `bodyJson` must already be a serialized
// JSON object.
std::string encodePayload(const crypto::PublicKey& from, uint64_t seq, int64_t tsMillis,
                          std::string_view type, std::string_view bodyJson);

// The bytes covered by the signature: "enjin-v1" 0x00 topic 0x00 payload. `scratch` is reused
// between calls to avoid an allocation per message.
std::string_view signedBytes(std::string_view topic, std::string_view payload,
                             std::string& scratch);

Auth signEnvelope(const crypto::SecretKey& key, std::string_view topic, std::string_view payload,
                  std::string& scratch);

}  // namespace enjin::bus
