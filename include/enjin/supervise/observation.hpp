// Observation strategies: how the supervisor learns that a process is alive, ready or healthy.
// One interface, implementations registered by name in an ObservationRegistry that main()
// builds, so reading main() shows every kind in use; a spec names a kind for its readiness and
// its health check, and the supervisor looks it up here.
//
// Some kinds are polled: the supervisor runs the strategy's Probe on a timer (tcp, http, exec).
// The others are pushed: the verdict arrives without asking, from the holder (process: the exit
// of the process itself, always on) or from the process on its notify socket (notify: READY=1;
// heartbeat: WATCHDOG=1 at least every watchdog_ms).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "enjin/base/result.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/supervise/probe.hpp"
#include "enjin/supervise/spawn.hpp"

namespace enjin::supervise {

// What a check of a process is for.
enum class CheckUse : uint8_t { kReadiness, kHealth };
std::string_view checkUseName(CheckUse use);

// Where a polled check looks, from the spec (ReadinessConfig, HealthConfig), and who it runs as.
struct CheckTarget {
  std::string host;                  // tcp
  int port = 0;                      // tcp
  std::string url;                   // http
  std::vector<std::string> command;  // exec
  int64_t timeoutMs = 0;             // one check, then it fails with "timed out after N ms"
  ExecIdentity identity;             // exec: the process's, from its spawn strategy's execIn()
};

class ObservationStrategy {
 public:
  virtual ~ObservationStrategy() = default;
  virtual std::string_view name() const = 0;
  // What a spec may use it for. The default: nothing a spec names (process, heartbeat).
  virtual bool usableFor(CheckUse) const { return false; }
  // True when the supervisor polls it through makeProbe().
  virtual bool polled() const { return false; }
  // A probe for one process's checks. The default, for pushed kinds, is an error.
  virtual Result<std::unique_ptr<Probe>> makeProbe(Reactor& reactor,
                                                   const CheckTarget& target) const;
};

class ObservationRegistry {
 public:
  void add(std::unique_ptr<ObservationStrategy> strategy);
  // An unknown name is an error that lists the known ones.
  Result<const ObservationStrategy*> find(std::string_view name) const;
  // `name` is known and may be used for `use` ("none" always may): an error names the kind, the
  // use and the kinds that would do.
  Status check(std::string_view name, CheckUse use) const;

 private:
  std::vector<std::unique_ptr<ObservationStrategy>> strategies_;
};

// The process itself: alive until the holder reaps it. Pushed; every process has it.
std::unique_ptr<ObservationStrategy> makeProcessObservation();
// READY=1 on the notify socket (sd_notify): readiness. Pushed.
std::unique_ptr<ObservationStrategy> makeNotifyObservation();
// WATCHDOG=1 on the notify socket at least every readiness.watchdog_ms. Pushed.
std::unique_ptr<ObservationStrategy> makeHeartbeatObservation();
// A TCP connect to host:port (makeTcpProbe): readiness and health.
std::unique_ptr<ObservationStrategy> makeTcpObservation();
// An HTTP GET answered 2xx or 3xx (makeHttpProbe): readiness and health.
std::unique_ptr<ObservationStrategy> makeHttpObservation();
// A command run as the process, exit 0 (makeExecProbe): health.
std::unique_ptr<ObservationStrategy> makeExecObservation();

}  // namespace enjin::supervise
