// A whole file as a string, or "" if it cannot be opened (not there yet, or gone).
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <string>

namespace enjin::testing {

// Plain read(2) rather than a stream: libstdc++'s streams throw on the ESRCH that reading a
// vanished process's /proc file gets, and tests poll such files while processes come and go.
inline std::string readFile(const std::string& path) {
  std::string out;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

}  // namespace enjin::testing
