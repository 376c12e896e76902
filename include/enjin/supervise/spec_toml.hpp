// Reading [[process]] tables out of a TOML document that holds more than a spec: ring0d's
// config embeds the processes of each ring-2 node. Under include/ so that the ring subsystem
// (src/ring/config.cpp) can share it, but it exposes toml++ types: include it only from .cpp
// files that link toml++, never from another header.
#pragma once

#include <string>
#include <string_view>
#include <toml++/toml.h>
#include <vector>

#include "enjin/base/result.hpp"
#include "enjin/supervise/process_spec.hpp"

namespace enjin::supervise {

// Parses TOML text; a syntax error reads "SOURCE:LINE: what".
Result<toml::table> parseToml(std::string_view text, const std::string& source);

// Every check parseSpec makes of its [[process]] tables (keys, values, unique names,
// depends_on, cycles, serialized size), over `processes`. Errors read "SOURCE:LINE: ...".
Result<std::vector<ProcessSpec>> readProcessTables(const toml::array& processes,
                                                   const std::string& source);

}  // namespace enjin::supervise
