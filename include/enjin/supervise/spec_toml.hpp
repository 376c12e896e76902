// Reading [[process]] tables out of a TOML document that holds more than a spec: ring0d's
// config (enjin/ring) embeds the processes of each ring-2 node, so this is the supervise
// subsystem's interface for that, not a private header. It exposes toml++ types: include it
// only from the .cpp files that parse TOML, never from another header.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <toml++/toml.h>
#include <vector>

#include "enjin/base/result.hpp"
#include "enjin/supervise/process_spec.hpp"

namespace enjin::supervise {

// Every check parseSpec makes of its [[process]] tables (keys, values, unique names,
// depends_on, cycles, serialized size), over `processes`. Errors read "SOURCE:LINE: ...".
// The key of `known` within two edits of `key` ("" if none): "did you mean" for unknown keys.
std::string_view closestKey(std::string_view key, std::span<const std::string_view> known);

// Parses TOML text; a syntax error reads "SOURCE:LINE: what".
Result<toml::table> parseToml(std::string_view text, const std::string& source);

Result<std::vector<ProcessSpec>> readProcessTables(const toml::array& processes,
                                                   const std::string& source);

}  // namespace enjin::supervise
