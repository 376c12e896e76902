#include "enjin/api/log_tail.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "enjin/base/result.hpp"

namespace enjin::api {

namespace {

// At most this much of a file is read at once (a tail, or what was appended since a poll).
constexpr uint64_t kMaxRead = 4 << 20;

struct Opened {
  UniqueFd fd;
  uint64_t inode = 0;
};

// Opens f.dir/f.file for reading, as root, without following a symlink anywhere below f.dir and
// only if the file is a regular one owned by f.uid or root. nullopt with an empty error: no such
// file (yet).
Result<std::optional<Opened>> openLog(const LogFile& f) {
  const std::string path = f.dir + "/" + f.file;
  UniqueFd dir(::open(f.dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir) {
    if (errno == ENOENT) return std::optional<Opened>{};
    return errnoError("open " + f.dir, errno);
  }
  open_how how{};
  how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  const long fd = ::syscall(SYS_openat2, dir.get(), f.file.c_str(), &how, sizeof how);
  if (fd < 0) {
    const int e = errno;
    if (e == ENOENT) return std::optional<Opened>{};
    if (e == ENOSYS) {
      return Error{"open " + path +
                   ": openat2 is not supported by this kernel (Linux 5.6 or later is needed to "
                   "read a tenant's files without following its symlinks)"};
    }
    if (e == ELOOP || e == EXDEV) {
      return Error{"open " + path + ": refused: a symlink in the path (" + std::strerror(e) + ")"};
    }
    return errnoError("open " + path, e);
  }
  Opened o{UniqueFd(static_cast<int>(fd)), 0};
  struct stat st {};
  if (::fstat(o.fd.get(), &st) != 0) return errnoError("fstat " + path, errno);
  if (!S_ISREG(st.st_mode)) return Error{"open " + path + ": refused: not a regular file"};
  if (st.st_uid != 0 && st.st_uid != f.uid) {
    return Error{"open " + path + ": refused: owned by uid " + std::to_string(st.st_uid) +
                 ", not the node's uid " + std::to_string(f.uid) + " or root"};
  }
  o.inode = static_cast<uint64_t>(st.st_ino);
  return std::optional<Opened>{std::move(o)};
}

// Time order: every line starts with its RFC 3339 UTC time, which sorts as text.
void byTime(std::vector<std::string>& lines) {
  std::stable_sort(lines.begin(), lines.end(), [](const std::string& a, const std::string& b) {
    const auto ta = a.find(" | "), tb = b.find(" | ");
    return a.compare(ta + 3, 27, b, tb + 3, 27) < 0;
  });
}

std::string joined(std::vector<std::string>& lines, const std::vector<std::string>& errors) {
  byTime(lines);
  std::string out;
  for (const auto& l : lines) out += l;
  for (const auto& e : errors) out += e;
  return out;
}

}  // namespace

void LogTail::readLines(const std::string& instance, Position& p, uint64_t limit,
                        std::vector<std::string>& out) {
  struct stat st {};
  if (!p.fd || ::fstat(p.fd.get(), &st) != 0) return;
  const auto end = static_cast<uint64_t>(st.st_size);
  if (p.offset > end) p.offset = 0;  // truncated: from its start again
  if (end - p.offset > limit) {
    // A jump: what is skipped ends inside a line, whose rest is not a line of its own.
    p.offset = end - limit;
    p.skip = p.offset > 0;
  }
  std::string text(end - p.offset, '\0');
  size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::pread(p.fd.get(), text.data() + got, text.size() - got,
                              static_cast<off_t>(p.offset + got));
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  text.resize(got);
  size_t from = 0;
  if (p.skip) {
    // Before the jump the previous byte may have been a newline: then nothing is partial.
    char before = '\n';
    if (p.offset > 0 && ::pread(p.fd.get(), &before, 1, static_cast<off_t>(p.offset - 1)) != 1) {
      before = 0;
    }
    if (before == '\n') {
      p.skip = false;
    } else if (const size_t nl = text.find('\n'); nl != std::string::npos) {
      from = nl + 1;
      p.skip = false;
    } else {
      from = text.size();  // still inside the cut line
    }
  }
  for (;;) {
    const size_t nl = text.find('\n', from);
    if (nl == std::string::npos) break;
    out.push_back(instance + " | " + text.substr(from, nl - from + 1));
    from = nl + 1;
  }
  // An unfinished last line is read again once finished (unless it was skipped).
  p.offset += p.skip ? text.size() : from;
}

std::string LogTail::start(const LogFiles& files, size_t lines) {
  std::vector<std::string> all, errors;
  // The tail of each file: enough for `lines` lines of any length up to kMaxRead.
  const uint64_t want = std::min<uint64_t>(kMaxRead, std::max<uint64_t>(4096, lines * 512));
  for (const auto& f : files) {
    Position& p = at_[f.instance];
    p = Position{};
    p.where = f.dir + "/" + f.file;
    auto opened = openLog(f);
    if (!opened.ok()) {
      p.error = opened.error().message;
      errors.push_back(f.instance + " | enjin: cannot read its log: " + p.error + "\n");
      continue;
    }
    if (!opened->has_value()) continue;
    p.fd = std::move((*opened)->fd);
    p.inode = (*opened)->inode;
    std::vector<std::string> mine;
    readLines(f.instance, p, want, mine);
    if (mine.size() > lines) mine.erase(mine.begin(), mine.end() - static_cast<long>(lines));
    all.insert(all.end(), mine.begin(), mine.end());
  }
  byTime(all);
  if (all.size() > lines) all.erase(all.begin(), all.end() - static_cast<long>(lines));
  return joined(all, errors);
}

std::string LogTail::poll(const LogFiles& files) {
  std::vector<std::string> all, errors;
  for (const auto& f : files) {
    auto [it, fresh] = at_.try_emplace(f.instance);
    Position& p = it->second;
    const std::string where = f.dir + "/" + f.file;
    if (fresh || p.where != where) {
      p = Position{};
      p.where = where;
    }
    // What the file held open has, first: it may have been rotated away since.
    readLines(f.instance, p, kMaxRead, all);
    auto opened = openLog(f);
    if (!opened.ok()) {
      if (opened.error().message != p.error) {
        p.error = opened.error().message;
        errors.push_back(f.instance + " | enjin: cannot read its log: " + p.error + "\n");
      }
      continue;
    }
    p.error.clear();
    if (!opened->has_value() || (p.fd && (*opened)->inode == p.inode)) continue;
    // Rotated (or first seen): the new file from its start. The old one was read to its end
    // above; a line it left unfinished is never finished.
    p.fd = std::move((*opened)->fd);
    p.inode = (*opened)->inode;
    p.offset = 0;
    p.skip = false;
    readLines(f.instance, p, kMaxRead, all);
  }
  return joined(all, errors);
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
