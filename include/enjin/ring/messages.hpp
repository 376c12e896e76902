// The bodies of the down and up buses between a parent and its child nodes (proto/rings.md),
// one struct a message type. Each is built and read only here: toJson() writes the body,
// fromJson() checks every field's type before anything reads it and says what it expected, so a
// body of the wrong shape is a counted refusal, never an exception in a handler.
// (node_observation, the child's whole observed tree, is checked by cleanObservation in tree.hpp.)
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "enjin/base/result.hpp"

namespace enjin::ring {

// up: obs.<uuid>. The child's whole observed state, also its heartbeat (cleanObservation).
inline constexpr std::string_view kObservationType = "node_observation";

// down: spec.<uuid>. The child's whole desired state.
struct SpecMessage {
  static constexpr std::string_view kType = "node_spec";
  std::string uuid;
  std::string digest;          // of `spec`, see specDigest()
  std::string parentInstance;  // names this run of the parent
  nlohmann::json spec;         // the node's spec (node_spec_json.hpp)

  nlohmann::json toJson() const;
  static Result<SpecMessage> fromJson(const nlohmann::json& body);
};

// down: cmd.<uuid>. `op` on `path`, relative to the child; answered by a ReplyMessage.
struct CommandMessage {
  static constexpr std::string_view kType = "command";
  std::string id;  // the request id, never empty
  std::string op;  // start, stop, restart
  std::string path;

  nlohmann::json toJson() const;
  static Result<CommandMessage> fromJson(const nlohmann::json& body);
};

// up: reply.<uuid>. The answer to the command with the same id.
struct ReplyMessage {
  static constexpr std::string_view kType = "reply";
  std::string id;
  bool ok = false;
  std::string error;  // set when !ok

  nlohmann::json toJson() const;
  static Result<ReplyMessage> fromJson(const nlohmann::json& body);
  // As a control-socket answer: {"ok": true} or {"ok": false, "error": ...}.
  nlohmann::json toAnswer() const;
  // From a control-socket answer (an answer without "ok" is a failure).
  static ReplyMessage fromAnswer(std::string id, const nlohmann::json& answer);
};

// down: revoke.<uuid>. Sent before the parent forgets the child's key.
struct RevocationMessage {
  static constexpr std::string_view kType = "revocation";
  std::string uuid;
  std::string label;

  nlohmann::json toJson() const;
  static Result<RevocationMessage> fromJson(const nlohmann::json& body);
};

}  // namespace enjin::ring
