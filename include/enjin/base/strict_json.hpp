// A strict JSON reader for input that crossed a trust boundary: valid UTF-8, one value and
// nothing after it, no duplicate object keys, nesting depth bounded, and integers that do not fit
// 64 bits refused rather than rounded into doubles.
#pragma once

#include <cstddef>
#include <nlohmann/json_fwd.hpp>
#include <string_view>

#include "enjin/base/result.hpp"

namespace enjin {

inline constexpr size_t kDefaultMaxJsonDepth = 32;

// On failure the error says why ("duplicate key 'seq'", "nesting deeper than 32", ...).
Status parseStrictJson(std::string_view text, nlohmann::json& out,
                       size_t maxDepth = kDefaultMaxJsonDepth);

}  // namespace enjin
