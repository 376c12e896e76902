// CPU time and resident memory of a process, from /proc, for per-node metrics.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string_view>

namespace enjin::supervise {

struct ProcStat {
  double cpuSeconds = 0;       // user + system time, since the process started
  uint64_t residentBytes = 0;  // resident set size
};

// Reads /proc/PID/stat once (utime + stime in clock ticks, rss in pages). nullopt when the
// process is gone or the file cannot be parsed. A zombie still reads, with its CPU time and no
// resident memory. The pid must be one we own (a child not yet reaped), or the answer may be
// about whoever got the number next.
std::optional<ProcStat> readProcStat(pid_t pid);

// The parsing part of readProcStat: one /proc/PID/stat line, with the clock ticks per second and
// the page size to convert with. nullopt when a field is missing or not a number.
std::optional<ProcStat> parseProcStat(std::string_view statLine, long ticksPerSecond,
                                      long pageSize);

}  // namespace enjin::supervise
