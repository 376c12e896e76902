// ProcessSpec <-> JSON, for the holder protocol and the control socket. Heavy header: include it
// only where JSON is built.
#pragma once

#include <nlohmann/json.hpp>

#include "enjin/base/result.hpp"
#include "enjin/supervise/process_spec.hpp"

namespace enjin::supervise {

nlohmann::json specToJson(const ProcessSpec& spec);
// The inverse of specToJson; an error names the missing or mistyped field.
Result<ProcessSpec> specFromJson(const nlohmann::json& j);

}  // namespace enjin::supervise
