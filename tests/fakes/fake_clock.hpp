// A clock that moves only when a test moves it.
#pragma once

#include "enjin/base/clock.hpp"

namespace enjin::testing {

class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t wallMicros = 1'700'000'000'000'000) : wall_(wallMicros) {}

  int64_t wallMicros() const override { return wall_; }
  int64_t monotonicNanos() const override { return mono_; }

  void advanceMillis(int64_t ms) {
    wall_ += ms * 1000;
    mono_ += ms * 1'000'000;
  }
  void setWallMicros(int64_t us) { wall_ = us; }

 private:
  int64_t wall_;
  int64_t mono_ = 0;
};

}  // namespace enjin::testing
