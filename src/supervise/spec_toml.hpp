// Reading [[process]] tables out of a TOML document that holds more than a spec: ring0d's
// config embeds the processes of each ring-2 node. Private to libenjin because it exposes
// toml++ types, which no public header includes.
#pragma once

#include <string>
#include <toml++/toml.h>
#include <vector>

#include "enjin/base/result.hpp"
#include "enjin/supervise/process_spec.hpp"

namespace enjin::supervise {

// Every check parseSpec makes of its [[process]] tables (keys, values, unique names,
// depends_on, cycles, serialized size), over `processes`. Errors read "SOURCE:LINE: ...".
// Parses TOML text; a syntax error reads "SOURCE:LINE: what".
Result<toml::table> parseToml(std::string_view text, const std::string& source);

Result<std::vector<ProcessSpec>> readProcessTables(const toml::array& processes,
                                                   const std::string& source);

}  // namespace enjin::supervise
