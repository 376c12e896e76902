#include "log_tail.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "enjin/base/unique_fd.hpp"

namespace enjin::api {

namespace {

// At most this much of a file is read at once (a tail, or what was appended since a poll).
constexpr uint64_t kMaxRead = 4 << 20;

// An offset of kFromEnd + N reads the last N bytes.
constexpr uint64_t kFromEnd = uint64_t{1} << 62;

// Reads [offset, end) of `path`, at most kMaxRead from the end, through one open: `end` and
// `inode` (0: no such regular file) come from its fstat. `cut` says whether the read began
// after the file's start because of a bound.
std::string readFrom(const std::string& path, uint64_t offset, uint64_t& end, uint64_t& inode,
                     bool* cut = nullptr) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  end = 0;
  inode = 0;
  if (!fd) return {};
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return {};
  end = static_cast<uint64_t>(st.st_size);
  inode = static_cast<uint64_t>(st.st_ino);
  uint64_t limit = kMaxRead;
  if (offset >= kFromEnd) {
    limit = std::min(limit, offset - kFromEnd);
    offset = 0;
  }
  if (offset > end) offset = 0;  // rotated: a new, shorter file
  if (end - offset > limit) offset = end - limit;
  if (cut != nullptr) *cut = offset > 0;
  std::string out(end - offset, '\0');
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::pread(fd.get(), out.data() + got, out.size() - got,
                              static_cast<off_t>(offset + got));
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  end = offset + got;
  return out;
}

// Splits `text` into whole lines (an unfinished last line is left out, and `end` moved back to
// its start so it is read again once finished), each prefixed by `instance`.
void takeLines(const std::string& instance, const std::string& text, uint64_t& end,
               std::vector<std::string>& out) {
  size_t from = 0;
  for (;;) {
    const size_t nl = text.find('\n', from);
    if (nl == std::string::npos) break;
    out.push_back(instance + " | " + text.substr(from, nl - from + 1));
    from = nl + 1;
  }
  end -= text.size() - from;
}

// Time order: every line starts with its RFC 3339 UTC time, which sorts as text.
void byTime(std::vector<std::string>& lines) {
  std::stable_sort(lines.begin(), lines.end(), [](const std::string& a, const std::string& b) {
    const auto ta = a.find(" | "), tb = b.find(" | ");
    return a.compare(ta + 3, 27, b, tb + 3, 27) < 0;
  });
}

}  // namespace

std::string LogTail::start(const LogFiles& files, size_t lines) {
  std::vector<std::string> all;
  // The tail of each file: enough for `lines` lines of any length up to kMaxRead.
  const uint64_t want = std::min<uint64_t>(kMaxRead, std::max<uint64_t>(4096, lines * 512));
  for (const auto& [instance, path] : files) {
    Position& p = at_[instance];
    p.path = path;
    uint64_t end = 0, inode = 0;
    bool cut = false;
    const std::string text = readFrom(path, kFromEnd + want, end, inode, &cut);
    std::vector<std::string> mine;
    takeLines(instance, text, end, mine);
    if (cut && !mine.empty()) mine.erase(mine.begin());  // a line cut at its start
    if (mine.size() > lines) mine.erase(mine.begin(), mine.end() - static_cast<long>(lines));
    all.insert(all.end(), mine.begin(), mine.end());
    p.offset = end;
    p.inode = inode;
  }
  byTime(all);
  if (all.size() > lines) all.erase(all.begin(), all.end() - static_cast<long>(lines));
  std::string out;
  for (const auto& l : all) out += l;
  return out;
}

std::string LogTail::poll(const LogFiles& files) {
  std::vector<std::string> all;
  for (const auto& [instance, path] : files) {
    auto [it, fresh] = at_.try_emplace(instance);
    Position& p = it->second;
    if (fresh || p.path != path) {
      p.path = path;
      p.offset = 0;
      p.inode = 0;
    }
    uint64_t end = 0, inode = 0;
    std::string text = readFrom(path, p.offset, end, inode);
    if (p.inode != 0 && inode != 0 && inode != p.inode && p.offset != 0) {
      text = readFrom(path, 0, end, inode);  // rotated: the new file from its start
    }
    if (inode == 0) continue;
    takeLines(instance, text, end, all);
    p.offset = end;
    p.inode = inode;
  }
  byTime(all);
  std::string out;
  for (const auto& l : all) out += l;
  return out;
}

void followLogs(LogTail& tail, const std::function<std::optional<LogFiles>()>& refresh,
                const std::function<bool(const std::string&)>& write) {
  LogFiles files;
  if (auto f = refresh()) files = std::move(*f);
  for (int round = 1;; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    if (round % 8 == 0) {
      if (auto f = refresh()) files = std::move(*f);
    }
    if (!write(tail.poll(files))) return;
  }
}

}  // namespace enjin::api
