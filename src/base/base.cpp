#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "enjin/base/clock.hpp"
#include "enjin/base/file.hpp"
#include "enjin/base/hex.hpp"
#include "enjin/base/result.hpp"
#include "enjin/base/unique_fd.hpp"

namespace enjin {

Error errnoError(std::string_view what, int err) {
  std::string out(what);
  out += ": ";
  out += std::strerror(err);
  return Error{std::move(out)};
}

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);  // close(2) never to be retried on Linux, even on EINTR
  fd_ = fd;
}

int64_t SystemClock::wallMicros() const {
  timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1'000'000 + ts.tv_nsec / 1000;
}

int64_t SystemClock::monotonicNanos() const {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

std::string toHex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(bytes.size() * 2, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 0xf];
  }
  return out;
}

namespace {
int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

bool fromHex(std::string_view hex, std::span<uint8_t> out) {
  if (hex.size() != out.size() * 2) return false;
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = hexValue(hex[2 * i]);
    int lo = hexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

std::optional<std::vector<uint8_t>> fromHex(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  std::vector<uint8_t> out(hex.size() / 2);
  if (!fromHex(hex, out)) return std::nullopt;
  return out;
}

Result<std::string> readFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return errnoError("open " + path, errno);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errnoError("read " + path, errno);
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

namespace {
Status writeAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errnoError("write " + path, errno);
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

std::string dirOf(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}
}  // namespace

Status writeFileAtomic(const std::string& path, std::string_view data, unsigned mode,
                       Replace replace, Sync sync) {
  std::string tmp = path + ".tmp.XXXXXX";
  UniqueFd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (!fd) return errnoError("create temporary file for " + path, errno);
  struct Unlinker {
    const std::string* p;
    ~Unlinker() { if (p) ::unlink(p->c_str()); }
  } unlinker{&tmp};
  if (::fchmod(fd.get(), mode) != 0) return errnoError("chmod " + tmp, errno);
  if (auto st = writeAll(fd.get(), data, tmp); !st.ok()) return st;
  if (sync == Sync::kDurable && ::fsync(fd.get()) != 0) return errnoError("fsync " + tmp, errno);
  fd.reset();
  if (replace == Replace::kYes) {
    if (::rename(tmp.c_str(), path.c_str()) != 0) return errnoError("rename to " + path, errno);
    unlinker.p = nullptr;
  } else {
    // link(2) fails with EEXIST instead of replacing: no window in which two writers both win.
    if (::link(tmp.c_str(), path.c_str()) != 0) return errnoError("create " + path, errno);
  }
  if (sync == Sync::kAtomicOnly) return {};
  UniqueFd dir(::open(dirOf(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir) ::fsync(dir.get());
  return {};
}

}  // namespace enjin
