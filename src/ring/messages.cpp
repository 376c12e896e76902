#include "enjin/ring/messages.hpp"

namespace enjin::ring {

using nlohmann::json;

namespace {

// The string at `key`, or an error naming the message and what it expected.
Result<std::string> stringField(const json& body, const char* key, std::string_view shape) {
  auto it = body.is_object() ? body.find(key) : body.end();
  if (it == body.end() || !it->is_string()) {
    return Error{std::string(shape) + ": '" + key + "' must be a string"};
  }
  return it->get<std::string>();
}

}  // namespace

json SpecMessage::toJson() const {
  return json{{"uuid", uuid}, {"digest", digest}, {"spec", spec}, {"parent_instance", parentInstance}};
}

Result<SpecMessage> SpecMessage::fromJson(const json& body) {
  constexpr std::string_view kShape = "node_spec";
  SpecMessage m;
  auto uuid = stringField(body, "uuid", kShape);
  if (!uuid.ok()) return uuid.error();
  auto digest = stringField(body, "digest", kShape);
  if (!digest.ok()) return digest.error();
  auto instance = stringField(body, "parent_instance", kShape);
  if (!instance.ok()) return instance.error();
  auto spec = body.find("spec");
  if (spec == body.end() || !spec->is_object()) {
    return Error{std::string(kShape) + ": 'spec' must be an object"};
  }
  m.uuid = std::move(*uuid);
  m.digest = std::move(*digest);
  m.parentInstance = std::move(*instance);
  m.spec = *spec;
  return m;
}

json CommandMessage::toJson() const { return json{{"id", id}, {"op", op}, {"path", path}}; }

Result<CommandMessage> CommandMessage::fromJson(const json& body) {
  constexpr std::string_view kShape = "command";
  CommandMessage m;
  auto id = stringField(body, "id", kShape);
  if (!id.ok()) return id.error();
  if (id->empty()) return Error{std::string(kShape) + ": 'id' is empty"};
  auto op = stringField(body, "op", kShape);
  if (!op.ok()) return op.error();
  auto path = stringField(body, "path", kShape);
  if (!path.ok()) return path.error();
  m.id = std::move(*id);
  m.op = std::move(*op);
  m.path = std::move(*path);
  return m;
}

json ReplyMessage::toJson() const {
  json body{{"id", id}, {"ok", ok}};
  if (!ok) body["error"] = error;
  return body;
}

Result<ReplyMessage> ReplyMessage::fromJson(const json& body) {
  constexpr std::string_view kShape = R"(reply: expected {"id": string, "ok": bool, "error": string})";
  if (!body.is_object()) return Error{std::string(kShape)};
  const auto id = body.find("id");
  const auto ok = body.find("ok");
  const auto error = body.find("error");
  if (id == body.end() || !id->is_string() || ok == body.end() || !ok->is_boolean() ||
      (error != body.end() && !error->is_string())) {
    return Error{std::string(kShape)};
  }
  ReplyMessage m;
  m.id = id->get<std::string>();
  m.ok = ok->get<bool>();
  if (!m.ok) m.error = error != body.end() ? error->get<std::string>() : "failed";
  return m;
}

json ReplyMessage::toAnswer() const {
  json answer{{"ok", ok}};
  if (!ok) answer["error"] = error;
  return answer;
}

ReplyMessage ReplyMessage::fromAnswer(std::string id, const json& answer) {
  ReplyMessage m;
  m.id = std::move(id);
  m.ok = answer.is_object() && answer.value("ok", false);
  if (!m.ok) {
    auto error = answer.is_object() ? answer.find("error") : answer.end();
    m.error = error != answer.end() && error->is_string() ? error->get<std::string>() : "failed";
  }
  return m;
}

json RevocationMessage::toJson() const { return json{{"uuid", uuid}, {"label", label}}; }

Result<RevocationMessage> RevocationMessage::fromJson(const json& body) {
  constexpr std::string_view kShape = "revocation";
  auto uuid = stringField(body, "uuid", kShape);
  if (!uuid.ok()) return uuid.error();
  auto label = stringField(body, "label", kShape);
  if (!label.ok()) return label.error();
  return RevocationMessage{std::move(*uuid), std::move(*label)};
}

}  // namespace enjin::ring
