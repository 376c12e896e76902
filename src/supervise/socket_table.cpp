#include "enjin/supervise/socket_table.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <optional>

namespace enjin::supervise {

void SocketTable::put(const std::string& key, UniqueFd fd) {
  auto it = fds_.find(key);
  if (it != fds_.end()) {
    it->second = std::move(fd);  // closes the old one
  } else {
    fds_.emplace(key, std::move(fd));
  }
}

int SocketTable::find(std::string_view key) const {
  auto it = fds_.find(key);
  return it == fds_.end() ? -1 : it->second.get();
}

void SocketTable::erase(std::string_view key) {
  auto it = fds_.find(key);
  if (it != fds_.end()) fds_.erase(it);
}

std::vector<std::string> SocketTable::keys() const {
  std::vector<std::string> out;
  out.reserve(fds_.size());
  for (const auto& [key, fd] : fds_) out.push_back(key);
  return out;
}

namespace {

std::optional<long> parseNumber(const char* text) {
  if (text == nullptr) return std::nullopt;
  std::string_view s(text);
  long value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return value;
}

void unsetListenEnv() {
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
}

}  // namespace

Result<SocketTable> socketsFromEnv() {
  SocketTable table;
  const auto pid = parseNumber(::getenv("LISTEN_PID"));
  const char* fdsText = ::getenv("LISTEN_FDS");
  const std::string names = ::getenv("LISTEN_FDNAMES") ? ::getenv("LISTEN_FDNAMES") : "";
  if (!pid || *pid != static_cast<long>(::getpid()) || fdsText == nullptr) {
    unsetListenEnv();
    return table;
  }
  const auto count = parseNumber(fdsText);
  unsetListenEnv();
  if (!count || *count < 0 || *count > 4096) {
    return Error{"LISTEN_FDS: '" + std::string(fdsText) + "': expected a count of fds"};
  }
  std::vector<std::string> split;
  for (size_t from = 0; from <= names.size() && !names.empty();) {
    size_t colon = names.find(':', from);
    if (colon == std::string::npos) colon = names.size();
    split.push_back(names.substr(from, colon - from));
    from = colon + 1;
  }
  for (long i = 0; i < *count; ++i) {
    const int fd = kListenFdsStart + static_cast<int>(i);
    const int flags = ::fcntl(fd, F_GETFD);
    if (flags < 0) return errnoError("LISTEN_FDS: fd " + std::to_string(fd), errno);
    ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    const size_t at = static_cast<size_t>(i);
    std::string name = at < split.size() && !split[at].empty() ? split[at] : "unknown";
    table.put(name, UniqueFd(fd));
  }
  return table;
}

}  // namespace enjin::supervise
