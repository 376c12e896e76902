// The restart decision: a pure function of the configuration, the history, the exit and the
// time, plus one random number for jitter. No clock is read and no RNG is seeded in here, so
// tests are tables.
#pragma once

#include <cstdint>
#include <deque>
#include <string_view>

#include "enjin/supervise/process_spec.hpp"

namespace enjin::supervise {

// How a process ended, as its supervisor saw it.
struct ExitInfo {
  enum class Kind { kExited, kSignaled, kUnknown };  // kUnknown: not collectable (re-adopted)
  Kind kind = Kind::kUnknown;
  int code = 0;    // kExited
  int signal = 0;  // kSignaled
  int64_t startedAtNs = 0;  // monotonic
  int64_t exitedAtNs = 0;   // monotonic
  // The kernel's OOM killer ended it: its cgroup's memory limit was hit (the holder compares its
  // cgroup's kill count across the run; supervise/limits.hpp).
  bool oomKilled = false;

  bool success() const { return kind == Kind::kExited && code == 0; }
};

// A child that exits with this code asks not to be restarted (as in s6).
inline constexpr int kExitDoNotRestart = 125;

// What the policy remembers between exits of one process.
struct RestartHistory {
  std::deque<int64_t> restartsAtNs;  // restarts inside the current window, oldest first
  uint32_t backoffStep = 0;          // the next delay is delayMs << backoffStep, capped
};

struct RestartDecision {
  enum class Action {
    kRestart,  // start it again after delayMs
    kStop,     // leave it stopped: not a failure (policy never, clean exit, exit 125)
    kFail,     // restart intensity exceeded: failed, reported upward
  };
  Action action = Action::kStop;
  int64_t delayMs = 0;
  std::string_view reason;  // one of the kReason* constants
  RestartHistory next;      // the history to keep
};

inline constexpr std::string_view kReasonRestartAlways = "restart=always";
inline constexpr std::string_view kReasonRestartOnFailure = "exited with failure, restart=on-failure";
inline constexpr std::string_view kReasonCleanExit = "exited cleanly, restart=on-failure";
inline constexpr std::string_view kReasonNever = "restart=never";
inline constexpr std::string_view kReasonDoNotRestart = "exited 125: asked not to be restarted";
inline constexpr std::string_view kReasonIntensity = "restart intensity exceeded";

// `random` is any 64-bit random value; it only picks the jitter (the delay is drawn from
// [3/4, 1] of the backoff step).
RestartDecision decideRestart(const RestartConfig& config, const RestartHistory& history,
                              const ExitInfo& exit, uint64_t random);

}  // namespace enjin::supervise
