// Bounded waits on real time, for tests of real processes: every wait has a deadline, so a test
// that waits for something that never comes fails instead of hanging.
#pragma once

#include <sys/types.h>
#include <sys/wait.h>

#include <chrono>
#include <functional>
#include <thread>

namespace enjin::testing {

// Polls `cond` every 10 ms until it holds (true) or `timeoutMs` have passed (false).
inline bool waitFor(const std::function<bool()>& cond, int timeoutMs) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

// Waits for `pid` (a child of this process) to exit and reaps it; its wait status, or -1 if it
// still runs after `timeoutMs`.
inline int waitExit(pid_t pid, int timeoutMs) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  while (std::chrono::steady_clock::now() < deadline) {
    int status;
    if (::waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return -1;
}

}  // namespace enjin::testing
