#include "enjin/supervise/restart_policy.hpp"

#include <algorithm>
#include <limits>

namespace enjin::supervise {

namespace {

constexpr int64_t kNanosPerSecond = 1'000'000'000;
constexpr int64_t kNanosPerMilli = 1'000'000;
// backoffStep never grows past this: delayMs << 62 already saturates for any delayMs >= 2, and
// the shift below checks for overflow anyway, so this only keeps the counter bounded.
constexpr uint32_t kMaxBackoffStep = 62;

int64_t saturatingMul(int64_t a, int64_t b) {
  int64_t out;
  if (__builtin_mul_overflow(a, b, &out)) return std::numeric_limits<int64_t>::max();
  return out;
}

int64_t saturatingSub(int64_t a, int64_t b) {
  int64_t out;
  if (__builtin_sub_overflow(a, b, &out)) {
    return b > 0 ? std::numeric_limits<int64_t>::min() : std::numeric_limits<int64_t>::max();
  }
  return out;
}

// delayMs << step without overflow; delayMs >= 0.
int64_t saturatingShift(int64_t delayMs, uint32_t step) {
  if (delayMs == 0) return 0;
  if (step >= 63 || delayMs > (std::numeric_limits<int64_t>::max() >> step)) {
    return std::numeric_limits<int64_t>::max();
  }
  return delayMs << step;
}

// A value in [ceil(3/4 step), step], picked by `random`: 0 gives the low end, UINT64_MAX the
// step itself, and the values in between are spread evenly.
int64_t jitter(int64_t step, uint64_t random) {
  const uint64_t span = static_cast<uint64_t>(step) / 4;  // step - low
  const uint64_t low = static_cast<uint64_t>(step) - span;
  // floor((span + 1) * random / 2^64) lies in [0, span].
  __extension__ using Uint128 = unsigned __int128;
  const auto pick = static_cast<uint64_t>((Uint128{span} + 1) * random >> 64);
  return static_cast<int64_t>(low + pick);
}

}  // namespace

// History contract: kRestart returns the window-pruned restarts plus this exit's time and the
// next backoff step; kFail returns the pruned restarts and the step unchanged (a later manual
// start is expected to begin from an empty history); kStop returns the history unchanged.
RestartDecision decideRestart(const RestartConfig& config, const RestartHistory& history,
                              const ExitInfo& exit, uint64_t random) {
  if (exit.kind == ExitInfo::Kind::kExited && exit.code == kExitDoNotRestart) {
    return {RestartDecision::Action::kStop, 0, kReasonDoNotRestart, history};
  }
  if (config.mode == RestartMode::kNever) {
    return {RestartDecision::Action::kStop, 0, kReasonNever, history};
  }
  // kSignaled and kUnknown (a re-adopted process whose status is lost) are failures.
  if (config.mode == RestartMode::kOnFailure && exit.success()) {
    return {RestartDecision::Action::kStop, 0, kReasonCleanExit, history};
  }

  RestartHistory next = history;
  const int64_t windowNs = saturatingMul(std::max<int64_t>(config.windowS, 0), kNanosPerSecond);
  const int64_t cutoff = saturatingSub(exit.exitedAtNs, windowNs);
  // "Older than the window": strictly before exitedAtNs - windowS. Not assuming the order keeps
  // this right for any history a caller hands in.
  std::erase_if(next.restartsAtNs, [cutoff](int64_t t) { return t < cutoff; });
  if (next.restartsAtNs.size() >= config.maxRestarts) {
    return {RestartDecision::Action::kFail, 0, kReasonIntensity, std::move(next)};
  }

  const int64_t uptimeNs = saturatingSub(exit.exitedAtNs, exit.startedAtNs);
  const int64_t stableNs = saturatingMul(std::max<int64_t>(config.stableAfterMs, 0), kNanosPerMilli);
  const uint32_t step = uptimeNs >= stableNs ? 0 : std::min(history.backoffStep, kMaxBackoffStep);

  const int64_t delayMs = std::max<int64_t>(config.delayMs, 0);
  const int64_t maxMs = std::max<int64_t>(config.backoffMaxMs, 0);
  const int64_t stepMs = std::min(saturatingShift(delayMs, step), maxMs);

  next.restartsAtNs.push_back(exit.exitedAtNs);
  next.backoffStep = std::min(step + 1, kMaxBackoffStep);
  const std::string_view reason =
      config.mode == RestartMode::kAlways ? kReasonRestartAlways : kReasonRestartOnFailure;
  return {RestartDecision::Action::kRestart, jitter(stepMs, random), reason, std::move(next)};
}

}  // namespace enjin::supervise
