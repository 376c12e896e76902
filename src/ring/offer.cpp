#include "enjin/ring/offer.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <string>

namespace enjin::ring {

namespace {

// "MemAvailable:   123456 kB" -> bytes; 0 when the kernel does not say.
int64_t memAvailableBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit) {
    if (key == "MemAvailable:") return kb * 1024;
  }
  return 0;
}

// The tasks that exist now: the fourth field of /proc/loadavg is "running/total".
int64_t tasksNow() {
  std::ifstream in("/proc/loadavg");
  double a, b, c;
  std::string runTotal;
  if (!(in >> a >> b >> c >> runTotal)) return 0;
  const auto slash = runTotal.find('/');
  return slash == std::string::npos ? 0 : std::stoll(runTotal.substr(slash + 1));
}

int64_t tasksMax() {
  int64_t max = 0;
  std::ifstream("/proc/sys/kernel/threads-max") >> max;
  return max;
}

}  // namespace

nlohmann::json hostOffer() {
  return {{"cpus", std::max<long>(0, ::sysconf(_SC_NPROCESSORS_ONLN))},
          {"memory_bytes", memAvailableBytes()},
          {"process_slots", std::max<int64_t>(0, tasksMax() - tasksNow())}};
}

}  // namespace enjin::ring
