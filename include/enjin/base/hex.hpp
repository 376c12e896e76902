// Lowercase hex, as used by key files and the wire format.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace enjin {

std::string toHex(std::span<const uint8_t> bytes);
// Decodes exactly out.size() bytes from `hex` (upper or lower case, no separators). Returns false
// on a bad character or a wrong length; `out` is then unspecified.
bool fromHex(std::string_view hex, std::span<uint8_t> out);
std::optional<std::vector<uint8_t>> fromHex(std::string_view hex);

}  // namespace enjin
