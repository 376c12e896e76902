// Talking to the service manager above us (systemd's notify protocol, sd_notify(3)): readiness,
// status lines and watchdog keep-alives. A thin wrapper over libsystemd, so callers do not
// include its headers and do not need to know whether they run under systemd at all: outside
// systemd every call is a successful no-op.
#pragma once

#include <cstdint>
#include <string_view>

#include "enjin/base/result.hpp"

namespace enjin::systemd {

// NOTIFY_SOCKET is set (and not empty): something above listens for our notifications. systemd
// sets it for Type=notify units; ring2d sets it for the processes it runs.
bool underSystemd();

// Sends `state` ("READY=1", "WATCHDOG=1", "STATUS=...", several joined by '\n') to
// NOTIFY_SOCKET. Succeeds without sending when NOTIFY_SOCKET is unset. The message is sent from
// this process, so with systemd's default NotifyAccess=main only the unit's main process may
// call it. NOTIFY_SOCKET stays in the environment: a caller that forks processes which must not
// speak for it removes it from theirs.
Status notify(std::string_view state);

// The watchdog timeout the manager expects keep-alives within, in ms (WATCHDOG_USEC), or 0 when
// there is none: unset, unparsable, or meant for another process (WATCHDOG_PID, which a child
// that inherited the variables must not act on). Send "WATCHDOG=1" every half of it.
int64_t watchdogIntervalMs();

}  // namespace enjin::systemd
