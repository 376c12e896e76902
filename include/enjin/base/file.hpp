// Small, careful file helpers: whole-file reads and atomic replacement.
#pragma once

#include <string>
#include <string_view>

#include "enjin/base/result.hpp"

namespace enjin {

Result<std::string> readFile(const std::string& path);

enum class Replace { kYes, kNo };

// kDurable: the file and its folder are fsynced, so the new content survives a power cut.
// kAtomicOnly: no fsync; the new content survives the writer's death (it is in the page cache)
// but a power cut may bring back the old one (never a mix, on filesystems that order a rename
// after the data it replaces, as ext4 does by default).
enum class Sync { kDurable, kAtomicOnly };

// Writes `data` to `path` atomically: a temporary file in the same folder with `mode`, fsync,
// then rename over `path` (Replace::kYes) or link to it, failing if it exists (Replace::kNo),
// then fsync of the folder (both fsyncs only with Sync::kDurable). A reader sees the old
// content or the new, never a mix.
Status writeFileAtomic(const std::string& path, std::string_view data, unsigned mode,
                       Replace replace = Replace::kYes, Sync sync = Sync::kDurable);

}  // namespace enjin
