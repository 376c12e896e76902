// Sequence numbers of one sender, rising across restarts. The first seq is
// max(persisted + 1, wall clock in microseconds); then +1 per message. To keep disk writes off
// the send path the file records a reservation: before seq passes the reserved mark, a new mark
// kReserveAhead higher is written atomically, so after a crash the next run starts above every
// seq that could have been sent.
#pragma once

#include <cstdint>
#include <string>

#include "enjin/base/clock.hpp"
#include "enjin/base/result.hpp"

namespace enjin::bus {

class SeqCounter {
 public:
  static constexpr uint64_t kReserveAhead = 1 << 16;

  // `path` empty: no persistence, only the clock floor.
  static Result<SeqCounter> open(const Clock& clock, std::string path);

  // The next seq, or an error if the reservation could not be persisted (then no seq is issued).
  Result<uint64_t> next();
  uint64_t last() const { return next_ - 1; }

 private:
  SeqCounter(std::string path, uint64_t next) : path_(std::move(path)), next_(next) {}
  Status reserve();

  std::string path_;
  uint64_t next_;
  uint64_t reserved_ = 0;  // highest seq covered by the file; 0 = nothing written yet
};

}  // namespace enjin::bus
