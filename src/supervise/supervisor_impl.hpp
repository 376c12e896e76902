// The supervisor's private parts, shared by the files that implement it: supervisor.cpp (the
// state machine and the commands), holder_link.cpp (the holder protocol), checks.cpp (readiness,
// health and watchdog), output.cpp (log pipes), notify.cpp (notify sockets) and state_file.cpp
// (state.json). Nothing outside src/supervise includes it.
#pragma once

#include <sys/wait.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "enjin/base/unique_fd.hpp"
#include "enjin/supervise/holder.hpp"
#include "enjin/supervise/holder_protocol.hpp"
#include "enjin/supervise/log_writer.hpp"
#include "enjin/supervise/observation.hpp"
#include "enjin/supervise/probe.hpp"
#include "enjin/supervise/spec_json.hpp"
#include "enjin/supervise/supervisor.hpp"

namespace enjin::supervise {

using nlohmann::json;

inline constexpr int64_t kReadinessRetryMs = 100;   // between readiness probes until ready
inline constexpr int64_t kReadinessProbeTimeoutMs = 1000;  // one readiness probe's deadline
inline constexpr int64_t kSaveDelayMs = 50;         // state.json writes are coalesced this long
inline constexpr size_t kEarlyNotifyKept = 8;       // notify datagrams kept while a spawn is pending
inline constexpr int64_t kTrimDelayMs = 1000;       // the heap is trimmed after this long without a save
inline constexpr int64_t kHolderByeTimeoutMs = 5000;   // shutdown sent, bye awaited this long
inline constexpr int64_t kHolderHelloTimeoutMs = 5000; // at start-up, the holder answers hello by then
inline constexpr size_t kLogReadChunk = 64 * 1024;
inline constexpr size_t kLogReadsPerWakeup = 4;     // then let other fds have a turn
inline constexpr idtype_t kPidfdIdType = static_cast<idtype_t>(3);  // P_PIDFD (Linux 5.4)
inline constexpr size_t kNotifyPerWakeup = 16;      // datagrams read per wake-up, then others' turn
inline constexpr size_t kMaxStatusBytes = 256;

// STATUS= text as the process sent it, made safe to show and to serialize (notify.cpp).
std::string cleanStatus(std::string_view in);
// "exit code 3", "signal SIGKILL".
std::string describeExit(const ExitInfo& e);

// Where a process is in its life: the states of the supervisor's machine (the table is in
// supervisor.cpp's dispatch() and docs/architecture.md). Each is published as one ProcessState;
// some published states are two phases here, because the machine must tell them apart.
enum class Phase : uint8_t {
  kDown,         // stopped: not running, nothing on its way
  kFailed,       // failed: the restart policy gave up
  kWaiting,      // starting: wanted, a dependency is not ready yet
  kSpawning,     // starting: the spawn request is with the holder
  kRunning,      // running: spawned, not ready yet
  kReady,        // ready
  kUnhealthy,    // unhealthy: its health check fails, and it is left running
  kTerminating,  // unhealthy: stopped by us (readiness, health, watchdog); the policy decides next
  kBackoff,      // backoff: exited; the restart timer runs
  kStopping,     // stopping: stop signal sent, the exit awaited
  kCancelling,   // stopping: stopped while its spawn was on its way; signalled once spawned
};
std::string_view phaseName(Phase phase);
ProcessState published(Phase phase);
// A process of this run exists: it has a pid and will send an exit.
inline bool hasProcess(Phase s) {
  return s == Phase::kRunning || s == Phase::kReady || s == Phase::kUnhealthy ||
         s == Phase::kTerminating || s == Phase::kStopping;
}
// Dependents may start: it said it is ready and has not been condemned since.
inline bool isReady(Phase s) { return s == Phase::kReady || s == Phase::kUnhealthy; }
inline bool isDown(Phase s) { return s == Phase::kDown || s == Phase::kFailed; }

// What the operator, the spec and the policy want of a process; the machine moves its phase
// toward it. kHold is persisted (held_down): an operator's stop or the policy's stop or failure
// survives a restart of ring2d and of the machine.
enum class Goal : uint8_t { kRun, kHold, kRemove };

// What happens to a process: the machine's inputs.
struct Event {
  enum class Kind : uint8_t {
    kStart,           // the goal is to run, or a dependency became ready
    kAdopted,         // the holder still holds a run of it (re-adoption)
    kSpawned,         // the holder started it
    kSpawnFailed,     // the holder could not start it
    kReady,           // readiness: READY=1, a passing probe, or none configured
    kNotReadyInTime,  // readiness.timeout passed first
    kHealthFailed,    // health.failures consecutive failed checks
    kHealthRestored,  // a passing check after those
    kWatchdog,        // no WATCHDOG=1 in time, or WATCHDOG=trigger
    kExited,          // the holder reaped it (or kept its exit while no ring2d watched)
    kStop,            // an operator, a reload, a restart or ring2d's own stop
    kStopTimeout,     // stop_timeout after the stop signal, and no exit
    kBackoffElapsed,  // the restart delay is over
  };
  Kind kind;
  std::string detail;  // why: logged and published
  const holder_proto::Spawned* spawned = nullptr;  // kSpawned
  const ExitInfo* exit = nullptr;                  // kExited
  bool wasReady = false;                           // kAdopted: state.json said it was ready
};
std::string_view eventName(Event::Kind kind);

struct Proc {
  ProcessSpec spec;
  std::string specJson;  // spec serialized once per spec change, not once per spawn
  bool holderHasSpec = false;  // the holder holds this spec: a respawn needs only the name
  Phase phase = Phase::kDown;
  Goal goal = Goal::kRun;
  // Notify datagrams that came while the spawn was on its way, before the holder told us the
  // new pid: a fast process says READY=1 before that (sender pid, text; a few at most).
  std::vector<std::pair<pid_t, std::string>> earlyNotify;
  std::optional<ProcessSpec> nextSpec;  // a changed spec, applied once this run has stopped
  int pid = 0;
  uint64_t startTime = 0;
  int64_t startedMonoNs = 0;
  int64_t startedWallMs = 0;
  uint64_t restarts = 0;
  RestartHistory history;
  std::optional<ExitInfo> lastExit;
  std::string detail;
  UniqueFd out, err, notify;
  std::optional<LogWriter> log;
  Reactor::TimerId backoffTimer = 0, stopTimer = 0, readyTimer = 0, watchdogTimer = 0,
                   healthTimer = 0, retryTimer = 0;
  std::unique_ptr<Probe> readinessProbe, healthProbe;
  // What its exec checks run as: the holder's answer from its strategy's execIn().
  std::optional<ExecIdentity> execIdentity;
  uint32_t healthFailures = 0;

  void setSpec(ProcessSpec s) {
    spec = std::move(s);
    specJson = specToJson(spec).dump();
    holderHasSpec = false;
    // Checks follow the spec: the next run builds them afresh.
    readinessProbe.reset();
    healthProbe.reset();
  }
};

class Supervisor::Impl {
 public:
  Impl(Reactor& reactor, SupervisorOptions options, std::function<uint64_t()> random)
      : reactor_(reactor), options_(std::move(options)), random_(std::move(random)) {}

  ~Impl() {
    for (auto& [name, p] : procs_) detachFds(*p);
    if (holder_) reactor_.removeFd(holder_->fd());
    if (holderPidfd_) reactor_.removeFd(holderPidfd_.get());
  }

  Observer observer_;

  // Every readiness and health kind of `specs` is a known observation, fit for that use.
  Status checkObservations(const std::vector<ProcessSpec>& specs) const;
  Status start(std::vector<ProcessSpec> specs);
  Status reload(std::vector<ProcessSpec> specs);
  void stopAll(std::function<void()> done);
  Status startProcess(const std::string& name);
  Status stopProcess(const std::string& name);
  Status restartProcess(const std::string& name);
  std::vector<ProcessStatus> status() const;
  bool settled() const {
    return std::none_of(procs_.begin(), procs_.end(), [](const auto& entry) {
      const ProcessState s = published(entry.second->phase);
      return s == ProcessState::kStarting || s == ProcessState::kRunning ||
             s == ProcessState::kStopping;
    });
  }
  std::string logPath(const std::string& name) const {
    return options_.stateDir + "/logs/" + name + ".log";
  }

 private:
  // --- holder ---
  Status connectHolder(const json& previous);
  void onHolderReadable();
  // One process the holder still holds, as its hello told: attached, re-adopted or stopped.
  void adopt(const holder_proto::Slot& slot, std::vector<UniqueFd>& fds, const json& prev);
  void handleHolderMessage(holder_proto::Reply& reply, std::vector<UniqueFd>& fds);
  void holderLost(const std::string& why);
  void sendHolder(const holder_proto::Request& msg);
  // Every message to the holder goes through here. When its socket is full the message waits in
  // HolderClient's queue and the fd is watched for EPOLLOUT until the queue is sent.
  Status sendToHolder(const std::string& text, const std::vector<int>& fds = {});
  void flushHolderQueue();
  void signalGroup(Proc& p, int signal);

  // --- the machine (supervisor.cpp) ---
  // Every change of phase happens here: one switch per phase, each case an event and its action.
  // `p` may be gone afterwards (a removal completes); callers that go on look it up again.
  void dispatch(Proc& p, const Event& ev);
  void dispatch(Proc& p, Event::Kind kind, std::string detail = "") {
    dispatch(p, Event{kind, std::move(detail)});
  }
  // The actions of the table.
  void enter(Proc& p, Phase phase, std::string detail, bool exitEvent = false);
  void startOrWait(Proc& p);  // kSpawning, or kWaiting for a dependency
  void spawn(Proc& p);        // the request to the holder: the whole spec, or a respawn
  void onSpawned(Proc& p, const holder_proto::Spawned& msg);  // pid, fds' owner, timestamps
  void becomeRunning(Proc& p, const std::string& detail);
  void becomeReady(Proc& p, const std::string& detail);
  // Sends the stop signal and arms the SIGKILL deadline (unless one is armed: a process cannot
  // postpone its SIGKILL by provoking another stop).
  void terminate(Proc& p, Phase next, const std::string& why);
  void noteExit(Proc& p, const ExitInfo& exit);
  // The restart policy's answer to an exit it did not ask for: backoff, stopped or failed.
  void afterExit(Proc& p, const std::string& what);
  // Down after a stop: apply a waiting spec, then move toward the goal (start again, be removed).
  // `exited`: a run ended (ring2d's own stop may be waiting for it).
  void settle(Proc& p, bool exited);

  // --- checks (checks.cpp) ---
  // A probe of observation `kind` from the registry; nullptr for a pushed kind (notify).
  Result<std::unique_ptr<Probe>> makeCheck(const std::string& kind, const CheckTarget& target);
  void beginReadiness(Proc& p);
  void probeReadiness(Proc& p);
  void scheduleHealth(Proc& p);
  void armWatchdog(Proc& p);
  void cancelChecks(Proc& p);    // readiness, health and watchdog timers and probes
  void cancelRunTimers(Proc& p); // those and the stop deadline
  void advanceStopAll();
  void finishRemoval(const std::string& name);
  // Runs the stopAll callback once: after the holder said bye and, if we launched it, exited.
  void finishStop();
  Proc* find(const std::string& name) {
    auto it = procs_.find(name);
    return it == procs_.end() ? nullptr : it->second.get();
  }
  // The first dependency of `p` that is not ready, or nullptr.
  const std::string* unreadyDependency(const Proc& p) const;
  std::vector<Proc*> dependentsOf(const std::string& name);
  void rebuildOrder();
  // What a previous ring2d recorded about `p` in state.json: counts, history, an operator's or
  // the policy's decision to keep it down, and the state that decision left it in.
  void restore(Proc& p, const json& prev);

  // --- fds ---
  void attachFds(Proc& p, const std::vector<holder_proto::FdRole>& roles, std::vector<UniqueFd>& fds);
  void detachFds(Proc& p);
  // Writes the whole lines waiting on `stream`; with `final`, the unterminated rest too.
  void onLogReadable(Proc& p, LogStream stream, bool final = false);
  void drainLogs(Proc& p);  // the process exited: everything it wrote goes to the log
  void reopenLog(Proc& p);  // the log settings may have changed
  void onNotify(Proc& p);
  void applyNotify(Proc& p, std::string_view text);

  // --- state file and events ---
  void scheduleSave();
  void save();
  void flushEvents();
  int64_t nowNs() const { return reactor_.clock().monotonicNanos(); }
  int64_t wallMs() const { return reactor_.clock().wallMillis(); }

  Reactor& reactor_;
  // Every timer of the supervisor goes through here: those still pending when it is destroyed
  // (a save, a restart delay, a probe) are cancelled with it.
  OwnedTimers timers_{reactor_};
  SupervisorOptions options_;
  std::function<uint64_t()> random_;
  std::unique_ptr<HolderConnection> holder_;
  UniqueFd holderPidfd_;  // the holder, when this ring2d launched it (so must reap it)
  std::map<std::string, std::unique_ptr<Proc>> procs_;
  std::vector<std::string> order_;      // start order
  std::vector<std::string> specOrder_;  // names in the order the spec lists them
  std::set<std::string> dependedOn_;    // every name in some depends_on (rebuildOrder keeps it)
  std::vector<StateEvent> pending_;
  Reactor::TimerId saveTimer_ = 0;
  bool savedOnce_ = false;       // state.json was written (durably) by this run
  std::string savedDecisions_;   // the held-down and failed processes it last wrote durably
  Reactor::TimerId trimTimer_ = 0;
  bool stoppingAll_ = false;
  bool shutdownSent_ = false;
  bool holderGone_ = false;
  bool holderQueueWatched_ = false;  // the holder fd is watched for EPOLLOUT
  std::function<void()> stopDone_;
  std::string readBuffer_ = std::string(kLogReadChunk, '\0');
  // Test builds (ENJIN_FAULT_INJECTION): ENJIN_FAULT_DIE_AFTER_LOG=N makes this process die
  // right after its Nth write to a log, before it takes those bytes off the socket: the window
  // a kill -9 can hit. 0: off.
  long dieAfterLogWrites_ = faultDieAfterLog();
  static long faultDieAfterLog() {
#ifdef ENJIN_FAULT_INJECTION
    if (const char* v = ::getenv("ENJIN_FAULT_DIE_AFTER_LOG")) return std::strtol(v, nullptr, 10);
#endif
    return 0;
  }
};
}  // namespace enjin::supervise
