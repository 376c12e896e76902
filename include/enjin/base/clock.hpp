// Time comes only through a Clock so that tests can drive it (see tests/fakes/fake_clock.hpp).
#pragma once

#include <cstdint>

namespace enjin {

class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time: microseconds since the Unix epoch. Used for message timestamps and seqs.
  virtual int64_t wallMicros() const = 0;
  // Monotonic time in nanoseconds from an arbitrary origin. Used for timers and rate limits.
  virtual int64_t monotonicNanos() const = 0;

  int64_t wallMillis() const { return wallMicros() / 1000; }
};

// The real clock: CLOCK_REALTIME and CLOCK_MONOTONIC.
class SystemClock final : public Clock {
 public:
  int64_t wallMicros() const override;
  int64_t monotonicNanos() const override;
};

}  // namespace enjin
