#include "enjin/base/systemd.hpp"

#include <stdlib.h>
#include <systemd/sd-daemon.h>

#include <string>

namespace enjin::systemd {

bool underSystemd() {
  const char* socket = ::getenv("NOTIFY_SOCKET");
  return socket != nullptr && socket[0] != '\0';
}

Status notify(std::string_view state) {
  // sd_notify would fail with EINVAL on an empty NOTIFY_SOCKET; nobody listens there either.
  if (!underSystemd()) return {};
  const std::string message(state);  // sd_notify wants a NUL-terminated string
  const int rc = ::sd_notify(0, message.c_str());
  if (rc >= 0) return {};
  // The first line names the notification well enough ("READY=1", "WATCHDOG=1").
  const std::string first = message.substr(0, message.find('\n'));
  return errnoError("notify " + first + " to " + ::getenv("NOTIFY_SOCKET"), -rc);
}

int64_t watchdogIntervalMs() {
  uint64_t usec = 0;
  if (::sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return 0;
  // Round up: a timeout under 1 ms must not read as "no watchdog".
  return static_cast<int64_t>((usec + 999) / 1000);
}

}  // namespace enjin::systemd
