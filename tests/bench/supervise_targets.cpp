#include "supervise_targets.hpp"

#include <spawn.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/wait.h>

extern char** environ;

namespace enjin::bench {

namespace {
constexpr idtype_t kPidfdIdType = static_cast<idtype_t>(3);  // P_PIDFD
}  // namespace

int bareLoop(int n, const char* command) {
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
  char* argv[] = {const_cast<char*>(command), nullptr};
  auto spawnOne = [&](uint32_t index) {
    pid_t pid;
    if (::posix_spawn(&pid, command, nullptr, &attr, argv, environ) != 0) return false;
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0U));
    if (pidfd < 0) return false;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = (uint64_t{index} << 32) | static_cast<uint32_t>(pidfd);
    return ::epoll_ctl(ep, EPOLL_CTL_ADD, pidfd, &ev) == 0;
  };
  for (int i = 0; i < n; ++i) {
    if (!spawnOne(static_cast<uint32_t>(i))) return 1;
  }
  epoll_event events[64];
  for (;;) {
    int k = ::epoll_wait(ep, events, 64, -1);
    for (int i = 0; i < k; ++i) {
      const int pidfd = static_cast<int>(events[i].data.u64 & 0xffffffffU);
      siginfo_t info{};
      ::waitid(kPidfdIdType, static_cast<id_t>(pidfd), &info, WEXITED);
      ::close(pidfd);  // also leaves the epoll set
      if (!spawnOne(static_cast<uint32_t>(events[i].data.u64 >> 32))) return 1;
    }
  }
}

void makeServiceDirs(const std::string& scan, int n) {
  std::filesystem::create_directories(scan);
  for (int i = 0; i < n; ++i) {
    const std::string d = scan + "/s" + std::to_string(i);
    std::filesystem::create_directories(d);
    std::filesystem::create_symlink(gStampPath, d + "/run");
  }
}

}  // namespace enjin::bench
