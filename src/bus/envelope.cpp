#include "enjin/bus/envelope.hpp"

#include <cstring>
#include <nlohmann/json.hpp>

#include "enjin/bus/message.hpp"

namespace enjin::bus {

std::string_view rejectReasonName(RejectReason reason) {
  switch (reason) {
    case RejectReason::kMalformed: return "malformed";
    case RejectReason::kOversize: return "oversize";
    case RejectReason::kUnknownKey: return "unknown_key";
    case RejectReason::kBadSignature: return "bad_signature";
    case RejectReason::kIdentity: return "identity";
    case RejectReason::kStale: return "stale";
    case RejectReason::kReplay: return "replay";
    case RejectReason::kAcl: return "acl";
  }
  return "unknown";
}

std::string encodePayload(const crypto::PublicKey& from, uint64_t seq, int64_t tsMillis,
                          std::string_view type, std::string_view bodyJson) {
  // Built by hand, in the documented field order, because this runs once per message sent.
  std::string out;
  out.reserve(128 + type.size() + bodyJson.size());
  out += R"({"v":1,"from":")";
  out += from.hex();
  out += R"(","seq":)";
  out += std::to_string(seq);
  out += R"(,"ts":)";
  out += std::to_string(tsMillis);
  out += R"(,"type":)";
  out += nlohmann::json(type).dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
  out += R"(,"body":)";
  out += bodyJson;
  out += '}';
  return out;
}

std::string_view signedBytes(std::string_view topic, std::string_view payload,
                             std::string& scratch) {
  scratch.clear();
  scratch.reserve(kSignatureDomain.size() + topic.size() + 1 + payload.size());
  scratch.append(kSignatureDomain);
  scratch.append(topic);
  scratch.push_back('\0');
  scratch.append(payload);
  return scratch;
}

Auth signEnvelope(const crypto::SecretKey& key, std::string_view topic, std::string_view payload,
                  std::string& scratch) {
  Auth auth;
  std::memcpy(auth.data(), key.publicKey().bytes.data(), crypto::kPublicKeyBytes);
  auto bytes = signedBytes(topic, payload, scratch);
  key.signInto({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()},
               auth.data() + crypto::kPublicKeyBytes);
  return auth;
}

nlohmann::ordered_json toJson(const Message& m) {
  return nlohmann::ordered_json{{"topic", m.topic}, {"from", m.from.hex()}, {"seq", m.seq},
                        {"ts", m.ts},       {"type", m.type},       {"body", m.body}};
}

}  // namespace enjin::bus
