// Helpers shared by the bus tests: building signed frames by hand, the way a sender (honest or
// not) would put them on the wire.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "enjin/bus/envelope.hpp"
#include "enjin/crypto/keys.hpp"

namespace enjin::testing {

inline crypto::SecretKey keyFromByte(uint8_t b) {
  std::array<uint8_t, crypto::kSeedBytes> seed;
  seed.fill(b);
  return crypto::SecretKey::fromSeed(seed);
}

struct RawMessage {
  std::string topic;
  std::string payload;
  std::string auth;

  std::vector<std::string_view> frames() const { return {topic, payload, auth}; }
};

// Signs `payload` on `topic` with `signer`, whatever the payload says.
inline RawMessage signRaw(const crypto::SecretKey& signer, std::string topic, std::string payload) {
  std::string scratch;
  auto auth = bus::signEnvelope(signer, topic, payload, scratch);
  return {std::move(topic), std::move(payload),
          std::string(reinterpret_cast<const char*>(auth.data()), auth.size())};
}

inline RawMessage makeMessage(const crypto::SecretKey& signer, std::string topic, uint64_t seq,
                              int64_t tsMillis, std::string_view body = R"({"n":1})",
                              std::string_view type = "test") {
  auto payload = bus::encodePayload(signer.publicKey(), seq, tsMillis, type, body);
  return signRaw(signer, std::move(topic), std::move(payload));
}

}  // namespace enjin::testing
