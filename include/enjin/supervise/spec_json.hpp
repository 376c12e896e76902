// ProcessSpec <-> JSON, for the holder protocol and the control socket. Heavy header: include it
// only where JSON is built.
#pragma once

#include <nlohmann/json.hpp>

#include "enjin/base/result.hpp"
#include "enjin/supervise/process_spec.hpp"
#include "enjin/supervise/restart_policy.hpp"

#include <optional>

namespace enjin::supervise {

nlohmann::json specToJson(const ProcessSpec& spec);
// The inverse of specToJson; an error names the missing or mistyped field.
Result<ProcessSpec> specFromJson(const nlohmann::json& j);

// null, {"kind":"exited","code":N}, {"kind":"signaled","signal":N} or {"kind":"unknown"}: how
// state.json, the control socket and the observation streams write an exit.
nlohmann::json exitToJson(const std::optional<ExitInfo>& exit);
// The inverse: null is nullopt, anything unreadable an exit of unknown kind. The times stay 0.
std::optional<ExitInfo> exitFromJson(const nlohmann::json& j);

}  // namespace enjin::supervise
