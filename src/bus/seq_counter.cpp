#include "enjin/bus/seq_counter.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>

#include "enjin/base/file.hpp"

namespace enjin::bus {

Result<SeqCounter> SeqCounter::open(const Clock& clock, std::string path) {
  uint64_t persisted = 0;
  if (!path.empty()) {
    auto text = readFile(path);
    if (text.ok()) {
      std::string_view s = *text;
      while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.remove_suffix(1);
      auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), persisted);
      if (ec != std::errc() || end != s.data() + s.size()) {
        // Starting low could reuse seqs receivers already hold: refuse rather than guess.
        return Error{"seq file " + path + " is corrupt; remove it only if the clock is right"};
      }
    } else if (errno != ENOENT) {
      return text.error().wrap("open seq file");
    }
  }
  const uint64_t floor = static_cast<uint64_t>(std::max<int64_t>(clock.wallMicros(), 0));
  SeqCounter c(std::move(path), std::max(persisted + 1, floor));
  if (auto st = c.reserve(); !st.ok()) return st.error();
  return c;
}

Status SeqCounter::reserve() {
  if (path_.empty()) return {};
  const uint64_t mark = next_ + kReserveAhead;
  if (auto st = writeFileAtomic(path_, std::to_string(mark) + "\n", 0600); !st.ok()) {
    return st.error().wrap("persist seq reservation");
  }
  reserved_ = mark;
  return {};
}

Result<uint64_t> SeqCounter::next() {
  if (!path_.empty() && next_ > reserved_) {
    if (auto st = reserve(); !st.ok()) return st.error();
  }
  return next_++;
}

}  // namespace enjin::bus
