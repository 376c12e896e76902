#include "enjin/supervise/proc_stat.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <string>
#include <string_view>

#include "enjin/base/unique_fd.hpp"

namespace enjin::supervise {
namespace {

// The whole file in one read: /proc/PID/stat is generated at open time and is well under a page
// plus comm's 16 bytes, so one read sees a consistent line.
std::optional<std::string> readSmall(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return std::nullopt;
  std::string buf(4096, '\0');
  ssize_t n;
  do {
    n = ::read(fd.get(), buf.data(), buf.size());
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return std::nullopt;
  buf.resize(static_cast<size_t>(n));
  return buf;
}

}  // namespace

std::optional<ProcStat> readProcStat(pid_t pid) {
  auto text = readSmall("/proc/" + std::to_string(pid) + "/stat");
  if (!text) return std::nullopt;
  static const long kTicks = ::sysconf(_SC_CLK_TCK);
  static const long kPage = ::sysconf(_SC_PAGESIZE);
  return parseProcStat(*text, kTicks, kPage);
}

std::optional<ProcStat> parseProcStat(std::string_view statLine, long ticksPerSecond,
                                      long pageSize) {
  if (ticksPerSecond <= 0 || pageSize <= 0) return std::nullopt;
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so the fields start after
  // the last ')'. Field 3 (state) is then token 0, so field N is token N - 3.
  const size_t close = statLine.rfind(')');
  if (close == std::string_view::npos) return std::nullopt;
  std::string_view rest = statLine.substr(close + 1);
  constexpr int kUtime = 14 - 3, kStime = 15 - 3, kRss = 24 - 3;
  uint64_t utime = 0, stime = 0;
  int64_t rss = 0;  // signed in the kernel's format
  int token = 0;
  size_t pos = 0;
  while (token <= kRss) {
    while (pos < rest.size() && rest[pos] == ' ') ++pos;
    if (pos >= rest.size()) return std::nullopt;
    size_t end = rest.find_first_of(" \n", pos);
    if (end == std::string_view::npos) end = rest.size();
    const char* first = rest.data() + pos;
    const char* last = rest.data() + end;
    std::from_chars_result r{last, std::errc{}};
    if (token == kUtime) r = std::from_chars(first, last, utime);
    if (token == kStime) r = std::from_chars(first, last, stime);
    if (token == kRss) r = std::from_chars(first, last, rss);
    if (r.ec != std::errc{} || r.ptr != last) return std::nullopt;
    pos = end;
    ++token;
  }
  ProcStat out;
  out.cpuSeconds = static_cast<double>(utime + stime) / static_cast<double>(ticksPerSecond);
  out.residentBytes = rss > 0 ? static_cast<uint64_t>(rss) * static_cast<uint64_t>(pageSize) : 0;
  return out;
}

}  // namespace enjin::supervise
