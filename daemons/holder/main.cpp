// enjin-holder: keeps ring2d's children, their log pipes and notify sockets across ring2d's own
// restarts (see include/enjin/supervise/holder.hpp). Started by ring2d; not run by hand.
#include <stdlib.h>
#include <unistd.h>

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "enjin/base/clock.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/supervise/holder.hpp"
#include "enjin/supervise/spawn.hpp"

namespace {

// The soft RLIMIT_NOFILE ring2d passed for the processes (see kChildNofileEnv), taken out of the
// environment so that nothing started from here sees it.
std::optional<uint64_t> takeChildNofile() {
  const char* text = ::getenv(enjin::supervise::kChildNofileEnv);
  if (text == nullptr) return std::nullopt;
  const std::string_view s(text);
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  std::optional<uint64_t> out;
  if (ec == std::errc() && end == s.data() + s.size() && !s.empty()) {
    out = value;
  } else {
    std::fprintf(stderr, "enjin-holder: ignoring %s='%s': not a number\n",
                 enjin::supervise::kChildNofileEnv, text);
  }
  ::unsetenv(enjin::supervise::kChildNofileEnv);
  return out;
}

// A program installed next to this one.
std::string besideSelf(const std::string& name) {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? name : (self.parent_path() / name).string();
}

}  // namespace

int main(int argc, char** argv) {
  std::string socketPath;
  int readyFd = -1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--socket") == 0) socketPath = argv[i + 1];
    if (std::strcmp(argv[i], "--ready-fd") == 0) readyFd = std::atoi(argv[i + 1]);
  }
  if (socketPath.empty()) {
    std::fprintf(stderr, "usage: enjin-holder --socket PATH [--ready-fd FD]\n");
    return 2;
  }
  enjin::SystemClock clock;
  auto reactor = enjin::Reactor::create(clock);
  if (!reactor.ok()) {
    std::fprintf(stderr, "enjin-holder: %s\n", reactor.error().message.c_str());
    return 1;
  }
  // Every spawn strategy the holder starts processes with, each giving the processes back the
  // fd limit ring2d was started with.
  enjin::supervise::SpawnDefaults defaults;
  defaults.nofileSoft = takeChildNofile();
  // In a tenant node every process runs as the node's app uid, so exec is the only strategy.
  auto tenant = enjin::supervise::tenantFromEnv();
  if (!tenant.ok()) {
    std::fprintf(stderr, "enjin-holder: %s\n", tenant.error().message.c_str());
    return 1;
  }
  if (*tenant) {
    defaults.runAs = (*tenant)->runAs;
    if ((*tenant)->sandbox) {
      defaults.sandbox = enjin::supervise::SpawnDefaults::Sandbox{besideSelf("enjin-sandbox"),
                                                                  (*tenant)->hide};
    }
  }
  enjin::supervise::SpawnRegistry registry;
  registry.add(enjin::supervise::makeExecStrategy(defaults));
  if (!*tenant) {
    registry.add(enjin::supervise::makeUnixUserStrategy(defaults));
    registry.add(enjin::supervise::makeSandboxStrategy(defaults));
  }
  enjin::supervise::Holder holder(**reactor, registry, socketPath);
  if (auto st = holder.start(); !st.ok()) {
    std::fprintf(stderr, "enjin-holder: %s\n", st.error().message.c_str());
    return 1;
  }
  if (readyFd >= 0) {
    (void)!::write(readyFd, "r", 1);
    ::close(readyFd);
  }
  while (!holder.finished()) (*reactor)->runOnce(-1);
  return 0;
}
