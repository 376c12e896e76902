// The supervision engine of ring2d: for every process of a spec it starts, watches and restarts,
// through the holder (which forks and reaps) and the reactor (which runs everything else).
//
// Each process moves through an explicit state machine:
//
//   stopped --start--> starting --spawned--> running --ready--> ready <--> unhealthy
//                         ^                     |                 |
//                         |                  exited            exited
//                         |                     v                 v
//                      backoff <--policy-- (decideRestart) --> stopped | failed
//   any live state --stop--> stopping --exited--> stopped
//
// `starting` also covers waiting for dependencies: a process is spawned only once everything
// in its depends_on is ready, and on a full stop it is stopped only after everything that
// depends on it has stopped.
//
// Fast path: between a child's exit and its respawn there is only the restart decision. State
// files and observations are written after the spawn request went out.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "enjin/base/result.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/supervise/socket_table.hpp"
#include "enjin/supervise/process_spec.hpp"
#include "enjin/supervise/restart_policy.hpp"

namespace enjin::supervise {

enum class ProcessState { kStopped, kStarting, kRunning, kReady, kUnhealthy, kBackoff, kFailed, kStopping };

std::string_view stateName(ProcessState state);

struct ProcessStatus {
  std::string name;
  ProcessState state = ProcessState::kStopped;
  int pid = 0;                 // 0 when not running
  int64_t startedAtWallMs = 0; // when the current run started; 0 when not running
  uint64_t restarts = 0;       // restarts since ring2d first started it
  std::optional<ExitInfo> lastExit;
  std::string detail;          // last STATUS=, or why it is in this state
};

// One state change, as published on the observation stream.
struct StateEvent {
  ProcessStatus status;
  bool exitEvent = false;  // status.lastExit is the exit that caused this change
};

class HolderConnection;
class ObservationRegistry;

struct SupervisorOptions {
  SupervisorOptions(std::string stateDirectory, std::string holderPath)
      : stateDir(std::move(stateDirectory)), holderExe(std::move(holderPath)) {}

  std::string stateDir;   // holds holder.sock, state.json, logs/, notify/
  std::string holderExe;  // path of enjin-holder
  // How to reach the holder. Empty: connect to the one at stateDir/holder.sock, launching
  // holderExe when none answers. Tests hand in a fake.
  std::function<Result<std::unique_ptr<HolderConnection>>()> connectHolder;
  // The observation strategies that readiness and health checks are made from, by the kind the
  // spec names. Required; main() builds it, and it must outlive the supervisor.
  const ObservationRegistry* observations = nullptr;
  // The listening sockets this daemon holds for its processes, by source (ProcessSpec::sockets):
  // looked up at each full spawn and sent to the holder. A restarted daemon gets back, from the
  // holder's hello, each socket it lacks. Optional (no sockets: a spec naming one fails to
  // spawn); main() owns it, and it must outlive the supervisor.
  SocketTable* sockets = nullptr;
};

class Supervisor {
 public:
  using Observer = std::function<void(const StateEvent&)>;

  // `reactor` must outlive the supervisor; `random` feeds the backoff jitter.
  Supervisor(Reactor& reactor, SupervisorOptions options, std::function<uint64_t()> random);
  ~Supervisor();

  void setObserver(Observer observer);

  // Connects to the holder (launching it if none runs), re-adopts every process it still holds,
  // then starts the rest in dependency order.
  Status start(std::vector<ProcessSpec> specs);
  // Applies a new spec: removed processes stop, new ones start, changed ones restart with the
  // new spec, unchanged ones are left alone.
  Status reload(std::vector<ProcessSpec> specs);
  // Stops everything in reverse dependency order, then lets the holder go; `done` runs once all
  // is stopped.
  void stopAll(std::function<void()> done);

  Status startProcess(const std::string& name);
  Status stopProcess(const std::string& name);
  Status restartProcess(const std::string& name);
  // One of the three above by its name ("start", "stop", "restart"), as operators send them.
  Status runCommand(std::string_view op, const std::string& name);

  std::vector<ProcessStatus> status() const;
  // True when no process is on its way: none starting, running but not yet ready, or stopping.
  // Cheaper than status(): no copies.
  bool settled() const;
  // Where NAME's log file is.
  std::string logPath(const std::string& name) const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace enjin::supervise
