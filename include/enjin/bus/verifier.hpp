// The receive path of wire format v1, independent of any socket: given the frames of one
// ZeroMQ message, either a Message or a Rejection. Checks run cheapest first and in the order
// proto/envelope.md fixes; the payload is parsed only after its signature verified.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>
#include <optional>

#include "enjin/base/clock.hpp"
#include "enjin/bus/envelope.hpp"
#include "enjin/bus/message.hpp"
#include "enjin/bus/trust_store.hpp"

namespace enjin::bus {

struct VerifierOptions {
  size_t maxPayloadBytes = kDefaultMaxPayloadBytes;
  int64_t windowMillis = 30'000;  // accepted |ts - now|
  // Subscribed prefixes, matched segment-wise after receipt because ZeroMQ filters by bytes.
  // Empty: every topic.
  std::vector<std::string> prefixes;
};

struct Rejection {
  RejectReason reason;
  std::string detail;           // human-readable, names the cause
  std::string topic;            // as received, when there was a well-formed one
  std::optional<crypto::PublicKey> key;  // the key in auth, when there was one
};

// Counters of one receiver. Read them as a struct; they only ever rise.
struct BusCounters {
  uint64_t accepted = 0;
  uint64_t filtered = 0;  // well-formed, but outside every subscribed prefix (not a rejection)
  std::array<uint64_t, kRejectReasonCount> rejected{};

  uint64_t rejectedFor(RejectReason r) const { return rejected[static_cast<size_t>(r)]; }
  uint64_t rejectedTotal() const;
};

// A well-formed message outside every subscribed prefix: dropped before any crypto, not an
// attack, so counted apart from rejections.
struct Filtered {};

using Verdict = std::variant<Message, Rejection, Filtered>;

class Verifier {
 public:
  // `trust` and `clock` must outlive the verifier.
  Verifier(const TrustStore& trust, const Clock& clock, VerifierOptions options = {});

  // Verifies one message. Counts the outcome; logs rejections, rate-limited. Only an accepted
  // message moves the sender's last-seq mark.
  Verdict verify(std::span<const std::string_view> frames);

  const BusCounters& counters() const { return counters_; }
  // Highest seq accepted from `key`, 0 if none.
  uint64_t lastSeq(const crypto::PublicKey& key) const;
  // Every key's mark, to persist; and a persisted mark back after a restart (kept only if
  // higher), so a replay of what the previous run accepted is refused.
  const std::unordered_map<crypto::PublicKey, uint64_t, crypto::PublicKeyHash>& marks() const {
    return lastSeq_;
  }
  void restoreMark(const crypto::PublicKey& key, uint64_t seq);

 private:
  Verdict reject(RejectReason reason, std::string detail, std::string_view topic = {},
                 const crypto::PublicKey* key = nullptr);
  void logRejection(const Rejection& r);

  const TrustStore& trust_;
  const Clock& clock_;
  VerifierOptions options_;
  BusCounters counters_;
  std::unordered_map<crypto::PublicKey, uint64_t, crypto::PublicKeyHash> lastSeq_;
  std::string scratch_;
  // Rejection log rate limit: a token bucket refilled on the monotonic clock.
  double logTokens_ = 10;
  int64_t logRefillAt_ = 0;
  uint64_t logSuppressed_ = 0;
};

}  // namespace enjin::bus
