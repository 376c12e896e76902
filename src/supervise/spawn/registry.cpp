#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "enjin/base/unique_fd.hpp"
#include "enjin/supervise/fork_exec.hpp"
#include "enjin/supervise/spawn.hpp"

namespace enjin::supervise {

void SpawnRegistry::add(std::unique_ptr<SpawnStrategy> strategy) {
  for (const auto& known : strategies_) {
    if (known->name() == strategy->name()) {
      // Two strategies under one name is a wiring bug in main(), not a runtime condition.
      std::fprintf(stderr, "SpawnRegistry: spawn strategy '%.*s' registered twice\n",
                   static_cast<int>(strategy->name().size()), strategy->name().data());
      std::abort();
    }
  }
  strategies_.push_back(std::move(strategy));
}

Result<const SpawnStrategy*> SpawnRegistry::find(std::string_view name) const {
  std::vector<std::string_view> names;
  for (const auto& strategy : strategies_) {
    if (strategy->name() == name) return strategy.get();
    names.push_back(strategy->name());
  }
  std::sort(names.begin(), names.end());
  std::string message = "unknown spawn strategy '" + std::string(name) + "' (known: ";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) message += ", ";
    message += names[i];
  }
  if (names.empty()) message += "none";
  message += ")";
  return Error{std::move(message)};
}

Status SpawnRegistry::validate(const ProcessSpec& spec) const {
  auto strategy = find(spec.strategy);
  if (!strategy.ok()) return strategy.error();
  return (*strategy)->validate(spec);
}

std::string_view isolationName(IsolationStrength strength) {
  switch (strength) {
    case IsolationStrength::kNone: return "exec";
    case IsolationStrength::kUser: return "unix-user";
    case IsolationStrength::kSandbox: return "sandbox";
    case IsolationStrength::kVm: return "vm";
  }
  return "unknown";
}

Status SpawnStrategy::signal(const SpawnedRef& process, int signal, bool group) const {
  if (process.pid <= 0) return Error{"signal: no process"};
  if (::kill(group ? -process.pid : process.pid, signal) != 0) {
    return errnoError("kill " + std::string(group ? "-" : "") + std::to_string(process.pid), errno);
  }
  return {};
}

Result<ExecIdentity> SpawnStrategy::execIn(const ProcessSpec& spec) const {
  ExecIdentity identity;
  identity.env.push_back(std::string("PATH=") + spawn_detail::kBasePath);
  for (const auto& [key, value] : spec.env) identity.env.push_back(key + "=" + value);
  return identity;
}

Result<uint64_t> parseProcStatStartTime(std::string_view statLine) {
  // "PID (COMM) STATE PPID ... STARTTIME ...": COMM is whatever the process named itself,
  // ')' and spaces included, so the fields start after the last ')'.
  size_t close = statLine.rfind(')');
  if (close == std::string_view::npos) return Error{"malformed /proc stat line: no ')'"};
  std::string_view rest = statLine.substr(close + 1);
  // Fields after the comm start at 3 (state); starttime is field 22, the 20th of them.
  constexpr int kFieldsToSkip = 22 - 3;
  for (int i = 0; i < kFieldsToSkip; ++i) {
    size_t start = rest.find_first_not_of(' ');
    if (start == std::string_view::npos) break;
    size_t end = rest.find(' ', start);
    if (end == std::string_view::npos) return Error{"malformed /proc stat line: too few fields"};
    rest.remove_prefix(end);
  }
  size_t start = rest.find_first_not_of(' ');
  if (start == std::string_view::npos) return Error{"malformed /proc stat line: too few fields"};
  rest.remove_prefix(start);
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), value);
  if (ec != std::errc{} || end == rest.data() ||
      (end != rest.data() + rest.size() && *end != ' ' && *end != '\n')) {
    return Error{"malformed /proc stat line: bad starttime"};
  }
  return value;
}

Result<uint64_t> processStartTime(pid_t pid) {
  char path[32];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  UniqueFd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd) return errnoError(std::string("open ") + path, errno);
  // A stat line is well under 1 KiB (comm is at most 15 bytes, 52 numeric fields).
  char buf[4096];
  size_t used = 0;
  for (;;) {
    ssize_t n = ::read(fd.get(), buf + used, sizeof buf - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errnoError(std::string("read ") + path, errno);
    if (n == 0 || (used += static_cast<size_t>(n)) == sizeof buf) break;
  }
  auto startTime = parseProcStatStartTime(std::string_view(buf, used));
  if (!startTime) return startTime.error().wrap(path);
  return startTime;
}

}  // namespace enjin::supervise
