// The argv of `enjinctl app deploy --cmd 'WORDS'`: WORDS cut the way a POSIX shell cuts them,
// without any expansion. Kept apart from the commands so its tests call it directly.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "enjin/base/result.hpp"

namespace enjin::ctl {

// Words are separated by unquoted spaces, tabs and newlines. Inside single quotes every
// character is itself; inside double quotes a backslash escapes only $ ` " \ and a newline
// (dropped), and stands for itself before anything else; outside quotes a backslash makes the
// next character itself (a backslash-newline is dropped). '' and "" make an empty word. No $, *,
// ~ or other expansion: those characters are kept as typed. An unbalanced quote or a trailing
// backslash is an Error (code 400) naming the position.
Result<std::vector<std::string>> splitCommandLine(std::string_view text);

// The inverse, for display: each word as is when it holds only safe characters, else in single
// quotes (a ' inside written '\''); words joined by a space.
std::string joinCommandLine(const std::vector<std::string>& words);

}  // namespace enjin::ctl
