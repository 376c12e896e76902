#include "enjin/supervise/log_writer.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>
#include <utility>

namespace enjin::supervise {

namespace {

constexpr int kOpenFlags = O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC;
constexpr mode_t kMode = 0640;

size_t streamIndex(LogStream stream) { return stream == LogStream::kStdout ? 0 : 1; }

// "2026-11-26T06:40:00.123456Z", UTC.
std::string formatTime(int64_t wallMicros) {
  int64_t secs = wallMicros / 1'000'000;
  int64_t micros = wallMicros % 1'000'000;
  if (micros < 0) {  // before 1970: floor, so the fraction stays positive
    micros += 1'000'000;
    secs -= 1;
  }
  time_t t = static_cast<time_t>(secs);
  tm utc{};
  ::gmtime_r(&t, &utc);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<int>(micros));
  return buf;
}

// Where to cut `text` (longer than kMaxLineBytes): at kMaxLineBytes, or up to 3 bytes earlier so
// a UTF-8 sequence is not split. Bytes that are not UTF-8 are cut at kMaxLineBytes.
size_t cutPoint(std::string_view text) {
  for (size_t back = 0; back < 4; ++back) {
    size_t cut = LogWriter::kMaxLineBytes - back;
    if ((static_cast<unsigned char>(text[cut]) & 0xC0) != 0x80) return cut;
  }
  return LogWriter::kMaxLineBytes;
}

}  // namespace

LogWriter::LogWriter(std::string path, LogConfig config, UniqueFd fd, uint64_t size)
    : path_(std::move(path)), config_(config), fd_(std::move(fd)), size_(size) {}

Result<LogWriter> LogWriter::open(std::string path, LogConfig config) {
  UniqueFd fd(::open(path.c_str(), kOpenFlags, kMode));
  if (!fd) return errnoError("open " + path, errno);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return errnoError("stat " + path, errno);
  // Appending after a restart: rotation counts what is already there.
  return LogWriter(std::move(path), config, std::move(fd), static_cast<uint64_t>(st.st_size));
}

Status LogWriter::append(LogStream stream, std::string_view chunk, int64_t wallMicros) {
  std::string& partial = partial_[streamIndex(stream)];
  for (auto nl = chunk.find('\n'); nl != std::string_view::npos; nl = chunk.find('\n')) {
    Status st;
    if (partial.empty()) {
      st = writeText(stream, chunk.substr(0, nl), wallMicros);
    } else {
      partial.append(chunk.substr(0, nl));
      st = writeText(stream, partial, wallMicros);
      partial.clear();
    }
    chunk.remove_prefix(nl + 1);
    if (!st.ok()) return st;
  }
  partial.append(chunk);
  // A line without its end yet: write what is sure to be a non-final piece now, so a process
  // that never prints a newline cannot make us buffer without bound.
  while (partial.size() > kMaxLineBytes) {
    size_t cut = cutPoint(partial);
    bool& continued = continued_[streamIndex(stream)];
    Status st = writeLine(stream, std::string_view(partial).substr(0, cut), wallMicros, continued);
    partial.erase(0, cut);
    continued = true;
    if (!st.ok()) return st;
  }
  return {};
}

Status LogWriter::finish(LogStream stream, int64_t wallMicros) {
  std::string& partial = partial_[streamIndex(stream)];
  if (partial.empty()) {
    continued_[streamIndex(stream)] = false;
    return {};
  }
  std::string text = std::exchange(partial, {});
  return writeText(stream, text, wallMicros);
}

Status LogWriter::writeText(LogStream stream, std::string_view text, int64_t wallMicros) {
  bool& continued = continued_[streamIndex(stream)];
  while (text.size() > kMaxLineBytes) {
    size_t cut = cutPoint(text);
    Status st = writeLine(stream, text.substr(0, cut), wallMicros, continued);
    text.remove_prefix(cut);
    continued = true;
    if (!st.ok()) {
      continued = false;
      return st;
    }
  }
  Status st = writeLine(stream, text, wallMicros, continued);
  continued = false;
  return st;
}

Status LogWriter::writeLine(LogStream stream, std::string_view line, int64_t wallMicros,
                            bool continued) {
  std::string record = formatTime(wallMicros);
  record += stream == LogStream::kStdout ? " stdout" : " stderr";
  if (continued) record += '+';
  record += ' ';
  record += line;
  record += '\n';

  // Rotate before a line that would take the file past maxBytes; a line bigger than maxBytes
  // on its own still goes, alone, into a fresh file.
  if (size_ > 0 && size_ + record.size() > config_.maxBytes) {
    if (Status st = rotate(); !st.ok()) return st;
  }
  // One write(2) per line, so a reader never sees two lines mixed; only a partial write (a full
  // disk, a signal) makes it continue with a second.
  std::string_view rest = record;
  while (!rest.empty()) {
    ssize_t n = ::write(fd_.get(), rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errnoError("write " + path_, errno);
    size_ += static_cast<uint64_t>(n);
    rest.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

// NAME.log.(keep-1) -> NAME.log.keep, ..., NAME.log -> NAME.log.1, then a new NAME.log. The new
// file is created first under a temporary name and renamed into place last, so a failure to
// create it changes nothing and NAME.log never goes missing for a reader. With keep = 0 that
// last rename replaces (deletes) the old NAME.log.
Status LogWriter::rotate() {
  const std::string fresh = path_ + ".new";
  UniqueFd fd(::open(fresh.c_str(), kOpenFlags | O_TRUNC, kMode));
  if (!fd) return errnoError("open " + fresh, errno);
  auto failed = [&](std::string what, int err) {
    ::unlink(fresh.c_str());
    return Status(errnoError(what, err));
  };
  if (config_.keep > 0) {
    for (uint32_t i = config_.keep - 1; i >= 1; --i) {
      std::string from = path_ + "." + std::to_string(i);
      std::string to = path_ + "." + std::to_string(i + 1);
      if (::rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT) {
        return failed("rename " + from + " to " + to, errno);
      }
    }
    std::string first = path_ + ".1";
    if (::rename(path_.c_str(), first.c_str()) != 0 && errno != ENOENT) {
      return failed("rename " + path_ + " to " + first, errno);
    }
  }
  if (::rename(fresh.c_str(), path_.c_str()) != 0) {
    return failed("rename " + fresh + " to " + path_, errno);
  }
  fd_ = std::move(fd);
  size_ = 0;
  return {};
}

}  // namespace enjin::supervise
