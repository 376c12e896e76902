#include "enjin/bus/verifier.hpp"

#include <spdlog/spdlog.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "enjin/base/strict_json.hpp"
#include "enjin/bus/topic.hpp"

namespace enjin::bus {
namespace {

constexpr double kLogBurst = 10;      // rejection log lines allowed at once
constexpr double kLogPerSecond = 1;   // and then one per second

std::span<const uint8_t> bytesOf(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

uint64_t BusCounters::rejectedTotal() const {
  uint64_t n = 0;
  for (auto c : rejected) n += c;
  return n;
}

Verifier::Verifier(const TrustStore& trust, const Clock& clock, VerifierOptions options)
    : trust_(trust), clock_(clock), options_(std::move(options)) {
  logRefillAt_ = clock_.monotonicNanos();
}

void Verifier::restoreMark(const crypto::PublicKey& key, uint64_t seq) {
  uint64_t& mark = lastSeq_[key];
  if (seq > mark) mark = seq;
}

uint64_t Verifier::lastSeq(const crypto::PublicKey& key) const {
  auto it = lastSeq_.find(key);
  return it == lastSeq_.end() ? 0 : it->second;
}

Verdict Verifier::verify(std::span<const std::string_view> frames) {
  // 1. Frame count and sizes: no allocation, no crypto, no parsing yet.
  if (frames.size() != 3) {
    return reject(RejectReason::kMalformed,
                  std::to_string(frames.size()) + " frames, expected 3");
  }
  const std::string_view topic = frames[0];
  const std::string_view payload = frames[1];
  const std::string_view auth = frames[2];
  if (topic.size() > kMaxTopicBytes) {
    return reject(RejectReason::kOversize, "topic of " + std::to_string(topic.size()) + " bytes");
  }
  if (payload.size() > options_.maxPayloadBytes) {
    return reject(RejectReason::kOversize, "payload of " + std::to_string(payload.size()) +
                                               " bytes, limit " +
                                               std::to_string(options_.maxPayloadBytes));
  }
  if (auth.size() != kAuthBytes) {
    return reject(RejectReason::kMalformed,
                  "auth frame of " + std::to_string(auth.size()) + " bytes, expected 96");
  }
  if (!isValidTopic(topic)) return reject(RejectReason::kMalformed, "invalid topic");

  // ZeroMQ matched the subscription bytewise; keep only whole-segment matches.
  if (!options_.prefixes.empty()) {
    bool wanted = false;
    for (const auto& p : options_.prefixes) wanted = wanted || topicMatches(p, topic);
    if (!wanted) {
      ++counters_.filtered;
      return Filtered{};
    }
  }

  // 2. The key must be trusted, 3. and the signature must verify, before the payload is read.
  crypto::PublicKey key;
  std::memcpy(key.bytes.data(), auth.data(), crypto::kPublicKeyBytes);
  const TrustedKey* trusted = trust_.find(key);
  if (trusted == nullptr) return reject(RejectReason::kUnknownKey, "key not trusted", topic, &key);
  auto sig = bytesOf(auth).subspan<crypto::kPublicKeyBytes, crypto::kSignatureBytes>();
  if (!crypto::verify(key, bytesOf(signedBytes(topic, payload, scratch_)), sig)) {
    return reject(RejectReason::kBadSignature, "signature does not verify", topic, &key);
  }

  // 4. Strict parse of a payload we now know the trusted key signed.
  nlohmann::json doc;
  if (auto st = parseStrictJson(payload, doc); !st.ok()) {
    return reject(RejectReason::kMalformed, "payload: " + st.error().message, topic, &key);
  }
  if (!doc.is_object() || doc.size() != 6) {
    return reject(RejectReason::kMalformed,
                  "payload must be an object with exactly v, from, seq, ts, type, body", topic,
                  &key);
  }
  auto v = doc.find("v");
  auto from = doc.find("from");
  auto seq = doc.find("seq");
  auto ts = doc.find("ts");
  auto type = doc.find("type");
  auto body = doc.find("body");
  if (v == doc.end() || from == doc.end() || seq == doc.end() || ts == doc.end() ||
      type == doc.end() || body == doc.end() || !v->is_number_integer() || !from->is_string() ||
      !seq->is_number_unsigned() || !ts->is_number_integer() ||
      (ts->is_number_unsigned() && ts->get<uint64_t>() > uint64_t{INT64_MAX}) || !type->is_string() ||
      type->get_ref<const std::string&>().empty() || !body->is_object()) {
    return reject(RejectReason::kMalformed, "payload fields missing or of the wrong type", topic,
                  &key);
  }
  if (v->get<int64_t>() != kWireVersion) {
    return reject(RejectReason::kMalformed, "unsupported version " + v->dump(), topic, &key);
  }
  // 5. The signer must be who the payload says.
  // Compared as text: "from" must be exactly the lowercase hex of the signing key.
  if (from->get_ref<const std::string&>() != key.hex()) {
    return reject(RejectReason::kIdentity, "from names another key", topic, &key);
  }
  // 6. Fresh, 7. new, 8. allowed on this topic.
  const int64_t tsMs = ts->get<int64_t>();
  const int64_t now = clock_.wallMillis();
  // The difference of two int64 values always fits in a uint64.
  const uint64_t skew = tsMs > now ? static_cast<uint64_t>(tsMs) - static_cast<uint64_t>(now)
                                   : static_cast<uint64_t>(now) - static_cast<uint64_t>(tsMs);
  if (skew > static_cast<uint64_t>(options_.windowMillis)) {
    return reject(RejectReason::kStale, "ts " + std::to_string(tsMs) + " is " +
                                            std::to_string(skew) + " ms from now",
                  topic, &key);
  }
  const uint64_t seqNo = seq->get<uint64_t>();
  uint64_t& last = lastSeq_[key];
  if (seqNo <= last) {
    return reject(RejectReason::kReplay, "seq " + std::to_string(seqNo) +
                                             " not above last accepted " + std::to_string(last),
                  topic, &key);
  }
  if (!trusted->mayPublish(topic)) {
    return reject(RejectReason::kAcl, "key '" + trusted->name + "' may not publish here", topic,
                  &key);
  }

  last = seqNo;
  ++counters_.accepted;
  Message m;
  m.topic.assign(topic);
  m.from = key;
  m.seq = seqNo;
  m.ts = tsMs;
  m.type = std::move(type->get_ref<std::string&>());
  m.body = std::move(*body);
  return m;
}

Verdict Verifier::reject(RejectReason reason, std::string detail, std::string_view topic,
                         const crypto::PublicKey* key) {
  ++counters_.rejected[static_cast<size_t>(reason)];
  Rejection r{reason, std::move(detail), std::string(topic), std::nullopt};
  if (key != nullptr) r.key = *key;
  logRejection(r);
  return r;
}

void Verifier::logRejection(const Rejection& r) {
  const int64_t now = clock_.monotonicNanos();
  logTokens_ = std::min(kLogBurst, logTokens_ + (now - logRefillAt_) * kLogPerSecond / 1e9);
  logRefillAt_ = now;
  if (logTokens_ < 1) {
    ++logSuppressed_;
    return;
  }
  logTokens_ -= 1;
  spdlog::warn("bus: rejected message ({}) on topic '{}' from key {}: {}{}",
               rejectReasonName(r.reason), r.topic, r.key ? r.key->shortHex() : "-", r.detail,
               logSuppressed_ ? fmt::format(" ({} more rejections not logged)", logSuppressed_)
                              : "");
  logSuppressed_ = 0;
}

}  // namespace enjin::bus
