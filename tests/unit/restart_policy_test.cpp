#include "enjin/supervise/restart_policy.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace enjin::supervise {
namespace {

using Action = RestartDecision::Action;

constexpr int64_t kSec = 1'000'000'000;
constexpr int64_t kMs = 1'000'000;
constexpr uint64_t kRandMin = 0;
constexpr uint64_t kRandMax = std::numeric_limits<uint64_t>::max();
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

// Times on the monotonic clock: every exit here happens at t = 1000 s unless a case says
// otherwise, after `uptimeNs` of running.
ExitInfo exited(int code, int64_t uptimeNs = kSec, int64_t atNs = 1000 * kSec) {
  return {ExitInfo::Kind::kExited, code, 0, atNs - uptimeNs, atNs};
}
ExitInfo signaled(int sig, int64_t uptimeNs = kSec, int64_t atNs = 1000 * kSec) {
  return {ExitInfo::Kind::kSignaled, 0, sig, atNs - uptimeNs, atNs};
}
ExitInfo unknown(int64_t uptimeNs = kSec, int64_t atNs = 1000 * kSec) {
  return {ExitInfo::Kind::kUnknown, 0, 0, atNs - uptimeNs, atNs};
}

RestartConfig config(RestartMode mode = RestartMode::kAlways) {
  RestartConfig c;  // delay 100 ms, max 30 s, stable after 10 s, 5 restarts in 60 s
  c.mode = mode;
  return c;
}
RestartConfig withDelay(int64_t delayMs, int64_t maxMs) {
  RestartConfig c = config();
  c.delayMs = delayMs;
  c.backoffMaxMs = maxMs;
  return c;
}
RestartConfig withIntensity(uint32_t maxRestarts, int64_t windowS) {
  RestartConfig c = config();
  c.maxRestarts = maxRestarts;
  c.windowS = windowS;
  return c;
}

RestartHistory history(std::vector<int64_t> restartsAtS, uint32_t step = 0) {
  RestartHistory h;
  for (int64_t s : restartsAtS) h.restartsAtNs.push_back(s * kSec);
  h.backoffStep = step;
  return h;
}
RestartHistory step(uint32_t backoffStep) { return history({}, backoffStep); }

struct Case {
  std::string name;
  RestartConfig config;
  RestartHistory history;
  ExitInfo exit;
  uint64_t random;
  Action action;
  int64_t minDelayMs = 0;
  int64_t maxDelayMs = 0;
  std::string_view reason;
  std::optional<std::vector<int64_t>> nextRestartsAtS = std::nullopt;  // unchecked when unset
  std::optional<uint32_t> nextStep = std::nullopt;
};

// gtest shows a failing case by its name rather than its bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<int64_t> seconds(const std::deque<int64_t>& ns) {
  std::vector<int64_t> out;
  for (int64_t t : ns) out.push_back(t / kSec);
  return out;
}

const std::vector<Case>& cases() {
  static const std::vector<Case> kCases = {
      // --- Stop: exit 125, restart=never, clean exit under on-failure. History untouched.
      {"exit125_always", config(), history({990}, 3), exited(kExitDoNotRestart), kRandMax,
       Action::kStop, 0, 0, kReasonDoNotRestart, std::vector<int64_t>{990}, 3},
      {"exit125_onFailure", config(RestartMode::kOnFailure), {}, exited(125), kRandMin,
       Action::kStop, 0, 0, kReasonDoNotRestart},
      {"exit125_beforeIntensity", withIntensity(1, 60), history({999}), exited(125), kRandMin,
       Action::kStop, 0, 0, kReasonDoNotRestart},
      {"signal125_isNotExit125", config(RestartMode::kOnFailure), {}, signaled(125), kRandMin,
       Action::kRestart, 75, 100, kReasonRestartOnFailure},
      {"never_clean", config(RestartMode::kNever), {}, exited(0), kRandMin, Action::kStop, 0, 0,
       kReasonNever},
      {"never_failure", config(RestartMode::kNever), history({1}, 2), exited(1), kRandMin,
       Action::kStop, 0, 0, kReasonNever, std::vector<int64_t>{1}, 2},
      {"never_signal", config(RestartMode::kNever), {}, signaled(9), kRandMin, Action::kStop, 0, 0,
       kReasonNever},
      {"onFailure_clean", config(RestartMode::kOnFailure), step(4), exited(0), kRandMin,
       Action::kStop, 0, 0, kReasonCleanExit, std::vector<int64_t>{}, 4},

      // --- Restart: failures under on-failure, anything under always.
      {"onFailure_exit1", config(RestartMode::kOnFailure), {}, exited(1), kRandMax,
       Action::kRestart, 100, 100, kReasonRestartOnFailure, std::vector<int64_t>{1000}, 1},
      {"onFailure_signal", config(RestartMode::kOnFailure), {}, signaled(11), kRandMax,
       Action::kRestart, 100, 100, kReasonRestartOnFailure},
      {"onFailure_unknown", config(RestartMode::kOnFailure), {}, unknown(), kRandMax,
       Action::kRestart, 100, 100, kReasonRestartOnFailure},
      {"always_clean", config(), {}, exited(0), kRandMax, Action::kRestart, 100, 100,
       kReasonRestartAlways, std::vector<int64_t>{1000}, 1},
      {"always_unknown", config(), {}, unknown(), kRandMax, Action::kRestart, 100, 100,
       kReasonRestartAlways},
      {"always_signal", config(), {}, signaled(15), kRandMax, Action::kRestart, 100, 100,
       kReasonRestartAlways},

      // --- Backoff doubling, with random = UINT64_MAX giving the step itself.
      {"backoff_step1", config(), step(1), exited(1), kRandMax, Action::kRestart, 200, 200,
       kReasonRestartAlways, std::nullopt, 2},
      {"backoff_step2", config(), step(2), exited(1), kRandMax, Action::kRestart, 400, 400,
       kReasonRestartAlways, std::nullopt, 3},
      {"backoff_step8", config(), step(8), exited(1), kRandMax, Action::kRestart, 25'600, 25'600,
       kReasonRestartAlways, std::nullopt, 9},
      {"backoff_step9_capped", config(), step(9), exited(1), kRandMax, Action::kRestart, 30'000,
       30'000, kReasonRestartAlways, std::nullopt, 10},
      {"backoff_step62_capped", config(), step(62), exited(1), kRandMax, Action::kRestart, 30'000,
       30'000, kReasonRestartAlways, std::nullopt, 62},
      {"backoff_garbageStep_capped", config(), step(4'000'000'000u), exited(1), kRandMax,
       Action::kRestart, 30'000, 30'000, kReasonRestartAlways, std::nullopt, 62},
      {"backoff_hugeDelay_saturates", withDelay(int64_t{1} << 40, kInt64Max), step(30), exited(1),
       kRandMax, Action::kRestart, kInt64Max, kInt64Max, kReasonRestartAlways},
      {"backoff_hugeDelay_jitterLow", withDelay(int64_t{1} << 40, kInt64Max), step(30), exited(1),
       kRandMin, Action::kRestart, kInt64Max - kInt64Max / 4, kInt64Max - kInt64Max / 4,
       kReasonRestartAlways},
      {"backoff_maxBelowDelay", withDelay(500, 300), {}, exited(1), kRandMax, Action::kRestart,
       300, 300, kReasonRestartAlways},

      // --- Reset after stable uptime (10 s by default): exactly 10 s counts as stable.
      {"stable_exactly_resets", config(), step(5), exited(1, 10 * kSec), kRandMax,
       Action::kRestart, 100, 100, kReasonRestartAlways, std::nullopt, 1},
      {"stable_long_resets", config(), step(9), exited(1, 3600 * kSec), kRandMax,
       Action::kRestart, 100, 100, kReasonRestartAlways, std::nullopt, 1},
      {"stable_justShort_keeps", config(), step(5), exited(1, 10 * kSec - 1), kRandMax,
       Action::kRestart, 3'200, 3'200, kReasonRestartAlways, std::nullopt, 6},
      {"stable_unknownExit_resets", config(), step(5), unknown(20 * kSec), kRandMax,
       Action::kRestart, 100, 100, kReasonRestartAlways, std::nullopt, 1},

      // --- Jitter: [3/4 step, step]; random 0 the low end, UINT64_MAX the step.
      {"jitter_min", config(), {}, exited(1), kRandMin, Action::kRestart, 75, 75,
       kReasonRestartAlways},
      {"jitter_max", config(), {}, exited(1), kRandMax, Action::kRestart, 100, 100,
       kReasonRestartAlways},
      {"jitter_middle", config(), {}, exited(1), kRandMax / 2, Action::kRestart, 75, 100,
       kReasonRestartAlways},
      {"jitter_capMin", config(), step(20), exited(1), kRandMin, Action::kRestart, 22'500, 22'500,
       kReasonRestartAlways},
      {"jitter_oddStepMin", withDelay(7, 1000), {}, exited(1), kRandMin, Action::kRestart, 6, 6,
       kReasonRestartAlways},  // ceil(3/4 * 7) = 6
      {"jitter_oddStepMax", withDelay(7, 1000), {}, exited(1), kRandMax, Action::kRestart, 7, 7,
       kReasonRestartAlways},
      {"jitter_step1", withDelay(1, 1000), {}, exited(1), kRandMin, Action::kRestart, 1, 1,
       kReasonRestartAlways},

      // --- delayMs 0: restart at once, whatever the step and the random value.
      {"delay0_min", withDelay(0, 30'000), {}, exited(1), kRandMin, Action::kRestart, 0, 0,
       kReasonRestartAlways, std::nullopt, 1},
      {"delay0_max", withDelay(0, 30'000), step(40), exited(1), kRandMax, Action::kRestart, 0, 0,
       kReasonRestartAlways, std::nullopt, 41},

      // --- Intensity: 5 restarts in 60 s; the exit is at 1000 s, so the window starts at 940 s.
      {"intensity_underLimit", config(), history({950, 960, 970, 980}, 4), exited(1), kRandMax,
       Action::kRestart, 1'600, 1'600, kReasonRestartAlways,
       std::vector<int64_t>{950, 960, 970, 980, 1000}, 5},
      {"intensity_atLimit_fails", config(), history({950, 960, 970, 980, 990}, 5), exited(1),
       kRandMax, Action::kFail, 0, 0, kReasonIntensity,
       std::vector<int64_t>{950, 960, 970, 980, 990}, 5},
      {"intensity_oldFallOut", config(), history({900, 930, 960, 970, 980}, 5), exited(1),
       kRandMax, Action::kRestart, 3'200, 3'200, kReasonRestartAlways,
       std::vector<int64_t>{960, 970, 980, 1000}, 6},
      {"intensity_edgeOfWindowKept", config(), history({940, 960, 970, 980, 990}), exited(1),
       kRandMax, Action::kFail, 0, 0, kReasonIntensity},
      {"intensity_justOutsideDropped", config(), history({939, 960, 970, 980, 990}), exited(1),
       kRandMax, Action::kRestart, 100, 100, kReasonRestartAlways,
       std::vector<int64_t>{960, 970, 980, 990, 1000}},
      {"intensity_unknownCounts", withIntensity(1, 60), history({999}), unknown(), kRandMax,
       Action::kFail, 0, 0, kReasonIntensity},
      {"intensity_cleanExitAlwaysCounts", withIntensity(1, 60), history({999}), exited(0),
       kRandMax, Action::kFail, 0, 0, kReasonIntensity},
      {"intensity_one_firstRestarts", withIntensity(1, 60), {}, exited(1), kRandMax,
       Action::kRestart, 100, 100, kReasonRestartAlways, std::vector<int64_t>{1000}},
      {"intensity_stableDoesNotClearWindow", config(), history({950, 960, 970, 980, 990}, 5),
       exited(1, 3600 * kSec), kRandMax, Action::kFail, 0, 0, kReasonIntensity},
      {"intensity_cleanOnFailureNotCounted", config(RestartMode::kOnFailure),
       history({950, 960, 970, 980, 990}), exited(0), kRandMax, Action::kStop, 0, 0,
       kReasonCleanExit},
  };
  return kCases;
}

class RestartPolicyTable : public ::testing::TestWithParam<Case> {};

TEST_P(RestartPolicyTable, Decides) {
  const Case& c = GetParam();
  RestartDecision d = decideRestart(c.config, c.history, c.exit, c.random);
  EXPECT_EQ(d.action, c.action);
  EXPECT_EQ(d.reason, c.reason);
  EXPECT_GE(d.delayMs, c.minDelayMs);
  EXPECT_LE(d.delayMs, c.maxDelayMs);
  if (c.nextRestartsAtS) {
    EXPECT_EQ(seconds(d.next.restartsAtNs), *c.nextRestartsAtS);
  }
  if (c.nextStep) {
    EXPECT_EQ(d.next.backoffStep, *c.nextStep);
  }
}

INSTANTIATE_TEST_SUITE_P(RestartPolicy, RestartPolicyTable, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& p) { return p.param.name; });

// Runs a crash loop: the process exits `uptimeNs` after each start and is restarted after the
// decided delay. Returns the decisions in order, stopping at the first non-restart.
std::vector<RestartDecision> crashLoop(const RestartConfig& cfg, int64_t uptimeNs, int rounds,
                                       uint64_t random) {
  std::vector<RestartDecision> out;
  RestartHistory h;
  int64_t now = 0;
  for (int i = 0; i < rounds; ++i) {
    ExitInfo e = exited(1, uptimeNs, now + uptimeNs);
    RestartDecision d = decideRestart(cfg, h, e, random);
    out.push_back(d);
    if (d.action != Action::kRestart) break;
    h = d.next;
    now = e.exitedAtNs + d.delayMs * kMs;
  }
  return out;
}

TEST(RestartPolicySequence, BackoffDoublesToTheCap) {
  RestartConfig cfg = config();
  cfg.maxRestarts = 1000;
  auto decisions = crashLoop(cfg, kSec, 14, kRandMax);
  std::vector<int64_t> delays;
  for (const auto& d : decisions) delays.push_back(d.delayMs);
  EXPECT_EQ(delays, (std::vector<int64_t>{100, 200, 400, 800, 1'600, 3'200, 6'400, 12'800,
                                          25'600, 30'000, 30'000, 30'000, 30'000, 30'000}));
}

TEST(RestartPolicySequence, JitterStaysInBounds) {
  RestartConfig cfg = config();
  cfg.maxRestarts = 1000;
  uint64_t random = 0x9e3779b97f4a7c15;
  RestartHistory h;
  for (uint32_t i = 0; i < 200; ++i) {
    random = random * 6364136223846793005u + 1442695040888963407u;
    h.restartsAtNs.clear();
    h.backoffStep = i % 12;
    RestartDecision d = decideRestart(cfg, h, exited(1), random);
    int64_t stepMs = std::min<int64_t>(int64_t{100} << h.backoffStep, 30'000);
    EXPECT_GE(d.delayMs, stepMs - stepMs / 4) << i;
    EXPECT_LE(d.delayMs, stepMs) << i;
  }
}

TEST(RestartPolicySequence, StableRunResetsBackoff) {
  RestartConfig cfg = config();
  cfg.maxRestarts = 1000;
  RestartHistory h;
  int64_t now = 0;
  std::vector<int64_t> delays;
  // Four quick crashes, one long run, then two quick crashes.
  for (int64_t uptime : {kSec, kSec, kSec, kSec, 60 * kSec, kSec, kSec}) {
    ExitInfo e = exited(1, uptime, now + uptime);
    RestartDecision d = decideRestart(cfg, h, e, kRandMax);
    ASSERT_EQ(d.action, Action::kRestart);
    delays.push_back(d.delayMs);
    h = d.next;
    now = e.exitedAtNs + d.delayMs * kMs;
  }
  EXPECT_EQ(delays, (std::vector<int64_t>{100, 200, 400, 800, 100, 200, 400}));
}

TEST(RestartPolicySequence, IntensityWindowSlides) {
  // 3 restarts in 60 s. Crashing every 20 s fails at the 4th exit (t = 80: the restart at t = 20
  // is exactly at the window's edge, still inside); crashing every 21 s never fails, the oldest
  // restart falling out each time.
  RestartConfig cfg = withIntensity(3, 60);
  cfg.delayMs = 0;
  auto fast = crashLoop(cfg, 20 * kSec, 100, kRandMin);
  ASSERT_EQ(fast.size(), 4u);
  EXPECT_EQ(fast.back().action, Action::kFail);
  EXPECT_EQ(fast.back().reason, kReasonIntensity);
  EXPECT_EQ(seconds(fast.back().next.restartsAtNs), (std::vector<int64_t>{20, 40, 60}));

  auto slow = crashLoop(cfg, 21 * kSec, 100, kRandMin);
  ASSERT_EQ(slow.size(), 100u);
  EXPECT_EQ(slow.back().action, Action::kRestart);
  EXPECT_EQ(slow.back().next.restartsAtNs.size(), 3u);
}

TEST(RestartPolicySequence, PureFunctionOfItsInputs) {
  RestartHistory h = history({950, 960}, 3);
  RestartDecision a = decideRestart(config(), h, exited(1), 12345);
  RestartDecision b = decideRestart(config(), h, exited(1), 12345);
  EXPECT_EQ(a.delayMs, b.delayMs);
  EXPECT_EQ(a.next.restartsAtNs, b.next.restartsAtNs);
  EXPECT_EQ(h.restartsAtNs.size(), 2u);  // the input is not touched
  EXPECT_EQ(h.backoffStep, 3u);
}

}  // namespace
}  // namespace enjin::supervise
