// Observation strategies other than the process itself: tcp (connect), http (GET, 2xx or 3xx
// is healthy) and exec (a check command; exit 0 is healthy). Probes run on the reactor and never
// block it: sockets are non-blocking, commands are watched through a pidfd, and every check has
// a deadline timer.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "enjin/base/result.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/supervise/spawn.hpp"

namespace enjin::supervise {

struct ProbeResult {
  bool healthy = false;
  std::string detail;  // "connect 127.0.0.1:8080: Connection refused", "HTTP 503", "exit 1"
};

class Probe {
 public:
  virtual ~Probe() = default;
  // Starts one check. `done` runs exactly once, on the reactor and never from inside start(),
  // unless cancel() (or the destructor) comes first. It may start the next check or destroy the
  // probe. Starting while a check is in flight cancels that check.
  virtual void start(std::function<void(ProbeResult)> done) = 0;
  // Abandons the check in flight, if any, releasing its socket or killing its command. Never
  // blocks. The destructor cancels.
  virtual void cancel() = 0;
};

// `reactor` must outlive the probes. A check that has no result after `timeoutMs` fails with
// "timed out after N ms".
//
// `host` is a numeric IPv4/IPv6 address or "localhost" (127.0.0.1): no DNS, which would block.
// A bad host or port is reported by every check.
std::unique_ptr<Probe> makeTcpProbe(Reactor& reactor, std::string host, int port,
                                    int64_t timeoutMs);
// `url` is http://HOST[:PORT][/PATH]; HOST a numeric IPv4/IPv6 address (IPv6 in brackets) or
// "localhost". Only the status line is read; redirects are not followed.
Result<std::unique_ptr<Probe>> makeHttpProbe(Reactor& reactor, const std::string& url,
                                             int64_t timeoutMs);
// command[0] without a '/' is looked up on $PATH. The command runs in its own process group with
// stdin, stdout and stderr on /dev/null; whatever is left in that group when it exits, or all of
// it at the timeout or on cancel(), is killed. The command is always reaped, by the reactor.
// The check runs as the process it checks: `identity` (what the process's spawn strategy's
// execIn() gives) sets its uid, gid and environment.
std::unique_ptr<Probe> makeExecProbe(Reactor& reactor, std::vector<std::string> command,
                                     int64_t timeoutMs, ExecIdentity identity = {});

}  // namespace enjin::supervise
