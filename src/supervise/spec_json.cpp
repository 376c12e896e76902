#include "enjin/supervise/spec_json.hpp"

#include <algorithm>
#include <initializer_list>
#include <stdexcept>

namespace enjin::supervise {

using nlohmann::json;

bool validSocketName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '-';
  });
}

bool validSocketSource(std::string_view source) {
  return !source.empty() && source.size() <= 256 &&
         source.find('\0') == std::string_view::npos;
}

json exitToJson(const std::optional<ExitInfo>& e) {
  if (!e) return nullptr;
  json j;
  switch (e->kind) {
    case ExitInfo::Kind::kExited: j = {{"kind", "exited"}, {"code", e->code}}; break;
    case ExitInfo::Kind::kSignaled: j = {{"kind", "signaled"}, {"signal", e->signal}}; break;
    case ExitInfo::Kind::kUnknown: j = {{"kind", "unknown"}}; break;
  }
  if (e->oomKilled) j["oom_killed"] = true;
  return j;
}

std::optional<ExitInfo> exitFromJson(const json& j) {
  if (j.is_null()) return std::nullopt;
  ExitInfo e;  // kUnknown
  if (!j.is_object()) return e;
  const auto kind = j.find("kind");
  const auto number = [&](const char* key) {
    const auto it = j.find(key);
    return it != j.end() && it->is_number_integer() ? it->get<int>() : 0;
  };
  if (kind == j.end() || !kind->is_string()) return e;
  if (*kind == "exited") {
    e.kind = ExitInfo::Kind::kExited;
    e.code = number("code");
  } else if (*kind == "signaled") {
    e.kind = ExitInfo::Kind::kSignaled;
    e.signal = number("signal");
  }
  if (auto oom = j.find("oom_killed"); oom != j.end() && oom->is_boolean()) e.oomKilled = *oom;
  return e;
}

namespace {

// A spec from before strategy blocks (a holder that outlived an upgrade of its supervisor, a
// parent not yet upgraded) carries "user" and "rlimits" at the top: they become the strategy's
// block, as a spec file writing them in [process.<strategy>] would have made it.
std::string legacyStrategyConfig(const json& j) {
  json config = json::object();
  if (auto it = j.find("user"); it != j.end() && it->is_string() && !it->get<std::string>().empty()) {
    config["user"] = *it;
  }
  if (auto it = j.find("rlimits"); it != j.end() && it->is_object() && !it->empty()) {
    config["rlimits"] = *it;
  }
  return config.empty() ? std::string() : config.dump();
}

}  // namespace

json specToJson(const ProcessSpec& s) {
  json j{
      {"name", s.name},
      {"command", s.command},
      {"env", s.env},
      {"cwd", s.cwd},
      {"strategy", s.strategy},
      {"depends_on", s.dependsOn},
      {"restart",
       {{"mode", static_cast<int>(s.restart.mode)},
        {"delay_ms", s.restart.delayMs},
        {"backoff_max_ms", s.restart.backoffMaxMs},
        {"stable_after_ms", s.restart.stableAfterMs},
        {"max_restarts", s.restart.maxRestarts},
        {"window_s", s.restart.windowS}}},
      {"readiness",
       {{"kind", s.readiness.kind},
        {"host", s.readiness.host},
        {"port", s.readiness.port},
        {"url", s.readiness.url},
        {"timeout_ms", s.readiness.timeoutMs},
        {"watchdog_ms", s.readiness.watchdogMs}}},
      {"health",
       {{"kind", s.health.kind},
        {"host", s.health.host},
        {"port", s.health.port},
        {"url", s.health.url},
        {"command", s.health.command},
        {"interval_ms", s.health.intervalMs},
        {"timeout_ms", s.health.timeoutMs},
        {"failures", s.health.failures},
        {"restart", s.health.restartWhenUnhealthy}}},
      {"log", {{"max_bytes", s.log.maxBytes}, {"keep", s.log.keep}}},
      {"stop_signal", s.stopSignal},
      {"stop_timeout_ms", s.stopTimeoutMs},
  };
  // As an object, readable in the holder protocol and in node specs; absent when empty, so that
  // a spec without a block costs nothing on the wire.
  if (!s.strategyConfig.empty()) {
    j["strategy_config"] = json::parse(s.strategyConfig, nullptr, false);
  }
  if (s.orphanStopMs != 0) j["orphan_stop_ms"] = s.orphanStopMs;
  // Absent when empty too: the digests of specs without sockets stay what they were.
  if (!s.sockets.empty()) {
    json sockets = json::array();
    for (const auto& ref : s.sockets) sockets.push_back({{"name", ref.name}, {"source", ref.source}});
    j["sockets"] = std::move(sockets);
  }
  return j;
}

namespace {

// A check's kind: its observation's name, one of `known`. A holder that outlived an upgrade of
// ring2d holds specs from before kinds had names, when they were the index into this list.
std::string checkKind(const json& v, std::initializer_list<const char*> known) {
  if (v.is_number_integer()) {
    const auto i = v.get<int64_t>();
    if (i >= 0 && static_cast<size_t>(i) < known.size()) return known.begin()[i];
  } else if (v.is_string()) {
    const std::string name = v.get<std::string>();
    for (const char* k : known) {
      if (name == k) return name;
    }
  }
  throw std::invalid_argument("unknown check kind " + v.dump());
}

}  // namespace

Result<ProcessSpec> specFromJson(const json& j) {
  try {
    ProcessSpec s;
    j.at("name").get_to(s.name);
    j.at("command").get_to(s.command);
    j.at("env").get_to(s.env);
    j.at("cwd").get_to(s.cwd);
    j.at("strategy").get_to(s.strategy);
    if (auto it = j.find("strategy_config"); it != j.end()) {
      if (!it->is_object()) return Error{"process spec: strategy_config: expected an object"};
      // Canonical text (keys sorted, no spaces): equal blocks compare equal as strings.
      if (!it->empty()) s.strategyConfig = it->dump();
    } else {
      s.strategyConfig = legacyStrategyConfig(j);
    }
    j.at("depends_on").get_to(s.dependsOn);
    if (auto it = j.find("sockets"); it != j.end()) {
      if (!it->is_array() || it->size() > kMaxSockets) {
        return Error{"process spec: sockets: expected an array of at most " +
                     std::to_string(kMaxSockets)};
      }
      for (const auto& ref : *it) {
        SocketRef r;
        ref.at("name").get_to(r.name);
        ref.at("source").get_to(r.source);
        if (!validSocketName(r.name) || !validSocketSource(r.source)) {
          return Error{"process spec: process '" + s.name + "': socket '" + r.name +
                       "' (source '" + r.source + "'): invalid name or source"};
        }
        s.sockets.push_back(std::move(r));
      }
    }
    const json& r = j.at("restart");
    s.restart.mode = static_cast<RestartMode>(r.at("mode").get<int>());
    r.at("delay_ms").get_to(s.restart.delayMs);
    r.at("backoff_max_ms").get_to(s.restart.backoffMaxMs);
    r.at("stable_after_ms").get_to(s.restart.stableAfterMs);
    r.at("max_restarts").get_to(s.restart.maxRestarts);
    r.at("window_s").get_to(s.restart.windowS);
    const json& rd = j.at("readiness");
    s.readiness.kind = checkKind(rd.at("kind"), {"none", "notify", "tcp", "http"});
    rd.at("host").get_to(s.readiness.host);
    rd.at("port").get_to(s.readiness.port);
    rd.at("url").get_to(s.readiness.url);
    rd.at("timeout_ms").get_to(s.readiness.timeoutMs);
    rd.at("watchdog_ms").get_to(s.readiness.watchdogMs);
    const json& h = j.at("health");
    s.health.kind = checkKind(h.at("kind"), {"none", "tcp", "http", "exec"});
    h.at("host").get_to(s.health.host);
    h.at("port").get_to(s.health.port);
    h.at("url").get_to(s.health.url);
    h.at("command").get_to(s.health.command);
    h.at("interval_ms").get_to(s.health.intervalMs);
    h.at("timeout_ms").get_to(s.health.timeoutMs);
    h.at("failures").get_to(s.health.failures);
    h.at("restart").get_to(s.health.restartWhenUnhealthy);
    j.at("log").at("max_bytes").get_to(s.log.maxBytes);
    j.at("log").at("keep").get_to(s.log.keep);
    j.at("stop_signal").get_to(s.stopSignal);
    j.at("stop_timeout_ms").get_to(s.stopTimeoutMs);
    if (auto it = j.find("orphan_stop_ms"); it != j.end()) it->get_to(s.orphanStopMs);
    return s;
  } catch (const json::exception& e) {
    return Error{std::string("process spec: ") + e.what()};
  } catch (const std::invalid_argument& e) {
    return Error{std::string("process spec: ") + e.what()};
  }
}

}  // namespace enjin::supervise
