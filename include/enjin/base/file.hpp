// Small, careful file helpers: whole-file reads and atomic replacement.
#pragma once

#include <string>
#include <string_view>

#include "enjin/base/result.hpp"

namespace enjin {

Result<std::string> readFile(const std::string& path);

enum class Replace { kYes, kNo };

// Writes `data` to `path` atomically: a temporary file in the same folder with `mode`, fsync,
// then rename over `path` (Replace::kYes) or link to it, failing if it exists (Replace::kNo),
// then fsync of the folder. A reader sees the old content or the new, never a mix.
Status writeFileAtomic(const std::string& path, std::string_view data, unsigned mode,
                       Replace replace = Replace::kYes);

}  // namespace enjin
