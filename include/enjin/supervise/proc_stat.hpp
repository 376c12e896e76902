// CPU time and resident memory of a process, from /proc, for per-node metrics.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>

namespace enjin::supervise {

struct ProcStat {
  double cpuSeconds = 0;      // user + system time, since the process started
  uint64_t residentBytes = 0;  // resident set size
};

// Reads /proc/PID/stat once (utime + stime in clock ticks, rss in pages). nullopt when the
// process is gone or the file cannot be parsed. A zombie still reads, with its CPU time and no
// resident memory. The pid must be one we own (a child not yet reaped), or the answer may be
// about whoever got the number next.
std::optional<ProcStat> readProcStat(pid_t pid);

}  // namespace enjin::supervise
