#include "supervisor_impl.hpp"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>

#include "enjin/base/file.hpp"
#include "enjin/supervise/spawn.hpp"
#include "enjin/supervise/spec_file.hpp"
#include "enjin/supervise/spec_json.hpp"

// The state machine: start-up, the lifecycle of each process, and the operators' commands. The
// holder link, checks, output, notify sockets and the state file live beside it.

namespace enjin::supervise {

std::string_view stateName(ProcessState s) {
  switch (s) {
    case ProcessState::kStopped: return "stopped";
    case ProcessState::kStarting: return "starting";
    case ProcessState::kRunning: return "running";
    case ProcessState::kReady: return "ready";
    case ProcessState::kUnhealthy: return "unhealthy";
    case ProcessState::kBackoff: return "backoff";
    case ProcessState::kFailed: return "failed";
    case ProcessState::kStopping: return "stopping";
  }
  return "unknown";
}

std::string describeExit(const ExitInfo& e) {
  if (e.oomKilled) {
    return "killed by the kernel's OOM killer: its node's memory limit was reached (" +
           (e.kind == ExitInfo::Kind::kSignaled ? std::string("signal SIGKILL")
                                                : "exit code " + std::to_string(e.code)) +
           ")";
  }
  switch (e.kind) {
    case ExitInfo::Kind::kExited: return "exit code " + std::to_string(e.code);
    case ExitInfo::Kind::kSignaled: {
      const char* name = ::sigabbrev_np(e.signal);
      return std::string("signal ") + (name ? std::string("SIG") + name : std::to_string(e.signal));
    }
    case ExitInfo::Kind::kUnknown: return "exit status unknown";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// Start-up and re-adoption

Status Supervisor::Impl::checkObservations(const std::vector<ProcessSpec>& specs) const {
  if (options_.observations == nullptr) return Error{"the supervisor was given no observations"};
  for (const auto& s : specs) {
    if (auto st = options_.observations->check(s.readiness.kind, CheckUse::kReadiness); !st.ok()) {
      return st.error().wrap("process '" + s.name + "': readiness");
    }
    if (auto st = options_.observations->check(s.health.kind, CheckUse::kHealth); !st.ok()) {
      return st.error().wrap("process '" + s.name + "': health");
    }
  }
  return {};
}

Status Supervisor::Impl::start(std::vector<ProcessSpec> specs) {
  if (auto st = checkObservations(specs); !st.ok()) return st;
  for (const char* sub : {"", "/logs", "/notify"}) {
    const std::string dir = options_.stateDir + sub;
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return errnoError("mkdir " + dir, errno);
  }
  // unix-user children must reach their own notify socket (0600, chowned to them) by path.
  ::chmod((options_.stateDir + "/notify").c_str(), 0711);

  // state.json is replaced without fsync between decisions; after a power cut some filesystems
  // leave it empty. state.durable.json is the copy written (with fsync) at the last decision.
  json previous = json::object();
  for (const char* name : {"/state.json", "/state.durable.json"}) {
    auto text = readFile(options_.stateDir + name);
    if (!text.ok()) continue;
    json parsed = json::parse(*text, nullptr, false);
    if (parsed.is_object()) {
      previous = std::move(parsed);
      break;
    }
    spdlog::warn("{}{} is unreadable; not using it", options_.stateDir, name);
  }
  const json prevProcs = previous.value("processes", json::object());
  for (auto& s : specs) {
    specOrder_.push_back(s.name);
    auto p = std::make_unique<Proc>();
    p->setSpec(std::move(s));
    const auto prev = prevProcs.find(p->spec.name);
    restore(*p, prev == prevProcs.end() ? json() : *prev);
    procs_[p->spec.name] = std::move(p);
  }
  rebuildOrder();
  if (auto st = connectHolder(previous); !st.ok()) return st;
  for (const auto& name : order_) {
    if (Proc* p = find(name); p != nullptr && p->phase == Phase::kDown && p->goal == Goal::kRun) {
      dispatch(*p, Event::Kind::kStart);
    }
  }
  flushEvents();
  return {};
}
// ---------------------------------------------------------------------------------------------
// The machine

std::string_view phaseName(Phase phase) {
  switch (phase) {
    case Phase::kDown: return "down";
    case Phase::kFailed: return "failed";
    case Phase::kWaiting: return "waiting";
    case Phase::kSpawning: return "spawning";
    case Phase::kRunning: return "running";
    case Phase::kReady: return "ready";
    case Phase::kUnhealthy: return "unhealthy";
    case Phase::kTerminating: return "terminating";
    case Phase::kBackoff: return "backoff";
    case Phase::kStopping: return "stopping";
    case Phase::kCancelling: return "cancelling";
  }
  return "unknown";
}

ProcessState published(Phase phase) {
  switch (phase) {
    case Phase::kDown: return ProcessState::kStopped;
    case Phase::kFailed: return ProcessState::kFailed;
    case Phase::kWaiting:
    case Phase::kSpawning: return ProcessState::kStarting;
    case Phase::kRunning: return ProcessState::kRunning;
    case Phase::kReady: return ProcessState::kReady;
    case Phase::kUnhealthy:
    case Phase::kTerminating: return ProcessState::kUnhealthy;
    case Phase::kBackoff: return ProcessState::kBackoff;
    case Phase::kStopping:
    case Phase::kCancelling: return ProcessState::kStopping;
  }
  return ProcessState::kStopped;
}

std::string_view eventName(Event::Kind kind) {
  using K = Event::Kind;
  switch (kind) {
    case K::kStart: return "start";
    case K::kAdopted: return "adopted";
    case K::kSpawned: return "spawned";
    case K::kSpawnFailed: return "spawn-failed";
    case K::kReady: return "ready";
    case K::kNotReadyInTime: return "not-ready-in-time";
    case K::kHealthFailed: return "health-failed";
    case K::kHealthRestored: return "health-restored";
    case K::kWatchdog: return "watchdog";
    case K::kExited: return "exited";
    case K::kStop: return "stop";
    case K::kStopTimeout: return "stop-timeout";
    case K::kBackoffElapsed: return "backoff-elapsed";
  }
  return "unknown";
}

void Supervisor::Impl::dispatch(Proc& p, const Event& ev) {
  using K = Event::Kind;
  const K e = ev.kind;
  switch (p.phase) {
    case Phase::kDown:
    case Phase::kFailed:
      if (e == K::kStart) return startOrWait(p);
      if (e == K::kAdopted) {
        if (p.goal != Goal::kRun) {
          return terminate(p, Phase::kStopping,
                           p.goal == Goal::kRemove ? "not in the spec any more" : "held down");
        }
        becomeRunning(p, ev.detail);
        const bool ready = ev.wasReady || p.spec.readiness.kind == "none";
        return ready ? becomeReady(p, ev.detail) : beginReadiness(p);
      }
      // An exit the holder kept while no ring2d watched: the policy decides, as if seen live.
      if (e == K::kExited && p.goal == Goal::kRun) {
        noteExit(p, *ev.exit);
        return afterExit(p, describeExit(*ev.exit));
      }
      if (e == K::kStop) return settle(p, false);  // already down: only a removal to complete
      break;

    case Phase::kWaiting:
      if (e == K::kStart) return startOrWait(p);
      if (e == K::kStop) {
        enter(p, Phase::kDown, ev.detail);
        return settle(p, false);
      }
      break;

    case Phase::kSpawning:
      if (e == K::kSpawned) {
        onSpawned(p, *ev.spawned);
        becomeRunning(p, "");
        if (p.spec.readiness.kind == "none") {
          becomeReady(p, "");
        } else {
          beginReadiness(p);
        }
        // What the new run said before we knew its pid counts now, if it was the new run.
        auto early = std::move(p.earlyNotify);
        p.earlyNotify.clear();
        for (const auto& [pid, text] : early) {
          if (pid == p.pid || ::getpgid(pid) == p.pid) applyNotify(p, text);
        }
        return;
      }
      if (e == K::kSpawnFailed) {
        // A start that failed is a run that failed at once: exit code 127, as a shell says.
        ExitInfo exit;
        exit.kind = ExitInfo::Kind::kExited;
        exit.code = 127;
        exit.startedAtNs = exit.exitedAtNs = nowNs();
        spdlog::warn("process '{}': {}", p.spec.name, ev.detail);
        noteExit(p, exit);
        return afterExit(p, ev.detail);
      }
      if (e == K::kStop) return enter(p, Phase::kCancelling, ev.detail);
      break;

    case Phase::kCancelling:
      if (e == K::kSpawned) {
        onSpawned(p, *ev.spawned);
        p.earlyNotify.clear();
        return terminate(p, Phase::kStopping, "stopped while starting");
      }
      if (e == K::kSpawnFailed) {
        enter(p, Phase::kDown, ev.detail);
        return settle(p, true);
      }
      if (e == K::kStop) return;  // on its way down already
      break;

    case Phase::kRunning:
      if (e == K::kReady) return becomeReady(p, ev.detail);
      if (e == K::kNotReadyInTime) return terminate(p, Phase::kTerminating, ev.detail);
      if (e == K::kExited) {
        noteExit(p, *ev.exit);
        return afterExit(p, describeExit(*ev.exit));
      }
      if (e == K::kStop) return terminate(p, Phase::kStopping, ev.detail);
      break;

    case Phase::kReady:
    case Phase::kUnhealthy:
      if (e == K::kHealthFailed && p.phase == Phase::kReady) {
        if (p.spec.health.restartWhenUnhealthy) {
          return terminate(p, Phase::kTerminating, ev.detail);
        }
        return enter(p, Phase::kUnhealthy, ev.detail);
      }
      if (e == K::kHealthRestored && p.phase == Phase::kUnhealthy) {
        return enter(p, Phase::kReady, ev.detail);
      }
      if (e == K::kWatchdog) return terminate(p, Phase::kTerminating, ev.detail);
      if (e == K::kExited) {
        noteExit(p, *ev.exit);
        return afterExit(p, describeExit(*ev.exit));
      }
      if (e == K::kStop) return terminate(p, Phase::kStopping, ev.detail);
      break;

    case Phase::kTerminating:
      if (e == K::kExited) {
        noteExit(p, *ev.exit);
        return afterExit(p, describeExit(*ev.exit));
      }
      if (e == K::kStopTimeout) return signalGroup(p, SIGKILL);
      if (e == K::kStop) return enter(p, Phase::kStopping, ev.detail);  // the deadline stands
      break;

    case Phase::kBackoff:
      // The timer ends the delay; an operator's start or a changed spec ends it early.
      if (e == K::kBackoffElapsed || e == K::kStart) {
        if (p.backoffTimer != 0) timers_.cancel(p.backoffTimer);
        p.backoffTimer = 0;
        return startOrWait(p);
      }
      if (e == K::kStop) {
        if (p.backoffTimer != 0) timers_.cancel(p.backoffTimer);
        p.backoffTimer = 0;
        enter(p, Phase::kDown, ev.detail);
        return settle(p, false);
      }
      break;

    case Phase::kStopping:
      if (e == K::kExited) {
        noteExit(p, *ev.exit);
        enter(p, Phase::kDown, describeExit(*ev.exit), true);
        return settle(p, true);
      }
      if (e == K::kStopTimeout) return signalGroup(p, SIGKILL);
      if (e == K::kStop) return;  // the first stop's deadline stands
      break;
  }
  spdlog::debug("process '{}': {} ignored while {}", p.spec.name, eventName(e),
                phaseName(p.phase));
}

// --- the actions ---

void Supervisor::Impl::enter(Proc& p, Phase phase, std::string detail, bool exitEvent) {
  p.phase = phase;
  p.detail = std::move(detail);
  StateEvent ev;
  ev.status.name = p.spec.name;
  ev.status.state = published(phase);
  ev.status.pid = p.pid;
  ev.status.startedAtWallMs = hasProcess(phase) ? p.startedWallMs : 0;
  ev.status.restarts = p.restarts;
  ev.status.lastExit = p.lastExit;
  ev.status.detail = p.detail;
  ev.exitEvent = exitEvent;
  pending_.push_back(std::move(ev));
}

const std::string* Supervisor::Impl::unreadyDependency(const Proc& p) const {
  for (const auto& dep : p.spec.dependsOn) {
    auto it = procs_.find(dep);
    if (it == procs_.end()) continue;  // validated at parse time; a removed dependency is gone
    if (!isReady(it->second->phase)) return &dep;
  }
  return nullptr;
}

std::vector<Proc*> Supervisor::Impl::dependentsOf(const std::string& name) {
  std::vector<Proc*> out;
  // Called on every ready and stop: without this, starting N processes scans all N for each.
  if (!dependedOn_.contains(name)) return out;
  for (auto& [n, p] : procs_) {
    if (std::find(p->spec.dependsOn.begin(), p->spec.dependsOn.end(), name) !=
        p->spec.dependsOn.end()) {
      out.push_back(p.get());
    }
  }
  return out;
}

void Supervisor::Impl::startOrWait(Proc& p) {
  if (stoppingAll_) return;
  if (const std::string* dep = unreadyDependency(p)) {
    std::string detail = "waiting for '" + *dep + "' to be ready";
    if (p.phase != Phase::kWaiting || p.detail != detail) enter(p, Phase::kWaiting, std::move(detail));
    return;
  }
  spawn(p);
}

void Supervisor::Impl::spawn(Proc& p) {
  // The request goes out before anything is logged or published: the fast path of a restart.
  if (p.holderHasSpec) {
    // The holder already has everything but the word.
    if (holder_) {
      if (auto st = sendToHolder(holder_proto::encodeRespawn(p.spec.name)); !st.ok()) {
        return holderLost(st.error().message);
      }
    }
    return enter(p, Phase::kSpawning, "");
  }
  // The request is built from the cached spec text.
  std::vector<std::string> env;
  std::optional<std::string> notify;
  if (p.spec.readiness.kind == "notify") {
    notify = options_.stateDir + "/notify/" + p.spec.name + ".sock";
    env.push_back("NOTIFY_SOCKET=" + *notify);
    if (p.spec.readiness.watchdogMs > 0) {
      env.push_back("WATCHDOG_USEC=" + std::to_string(p.spec.readiness.watchdogMs * 1000));
    }
  }
  // The listening sockets its spec names, from this daemon's table: one missing fails this
  // spawn as an exec error would, answered on the next turn of the reactor as the holder would.
  std::vector<int> listen;
  for (const auto& ref : p.spec.sockets) {
    const int fd = options_.sockets != nullptr ? options_.sockets->find(ref.source) : -1;
    if (fd < 0) {
      enter(p, Phase::kSpawning, "");
      const std::string error = "process '" + p.spec.name + "': socket '" + ref.name +
                                "' (source '" + ref.source + "') is not held here";
      timers_.after(0, [this, name = p.spec.name, error] {
        Proc* q = find(name);
        if (q == nullptr || (q->phase != Phase::kSpawning && q->phase != Phase::kCancelling)) {
          return;
        }
        dispatch(*q, Event::Kind::kSpawnFailed, error);
        flushEvents();
      });
      return;
    }
    listen.push_back(fd);
  }
  if (holder_) {
    if (auto st = sendToHolder(holder_proto::encodeSpawn(p.spec.name, p.specJson, env, notify,
                                                         listen.size()),
                               listen);
        !st.ok()) {
      return holderLost(st.error().message);
    }
  }
  enter(p, Phase::kSpawning, "");
}

void Supervisor::Impl::onSpawned(Proc& p, const holder_proto::Spawned& msg) {
  p.holderHasSpec = true;
  p.pid = msg.pid;
  p.startTime = msg.startTime;
  if (msg.identity) {
    p.execIdentity = msg.identity;
    p.healthProbe.reset();  // an exec check is built for one identity
  }
  p.startedMonoNs = nowNs();
  p.startedWallMs = wallMs();
}

void Supervisor::Impl::becomeRunning(Proc& p, const std::string& detail) {
  p.healthFailures = 0;
  enter(p, Phase::kRunning, detail);
  scheduleSave();
}

void Supervisor::Impl::becomeReady(Proc& p, const std::string& detail) {
  if (p.readyTimer != 0) timers_.cancel(p.readyTimer);
  if (p.retryTimer != 0) timers_.cancel(p.retryTimer);
  p.readyTimer = p.retryTimer = 0;
  enter(p, Phase::kReady, detail);
  scheduleHealth(p);
  armWatchdog(p);
  for (Proc* d : dependentsOf(p.spec.name)) {
    // Only a dependent that waits for this; one the policy or an operator stopped stays down.
    if (d->phase == Phase::kWaiting) dispatch(*d, Event::Kind::kStart);
  }
  scheduleSave();
}

void Supervisor::Impl::terminate(Proc& p, Phase next, const std::string& why) {
  cancelChecks(p);
  signalGroup(p, p.spec.stopSignal);
  enter(p, next, why);
  if (p.stopTimer != 0) return;
  p.stopTimer = timers_.after(p.spec.stopTimeoutMs, [this, name = p.spec.name, why] {
    if (Proc* q = find(name)) {
      q->stopTimer = 0;
      spdlog::warn("process '{}' still running {} ms after its stop signal ({}); SIGKILL",
                   name, q->spec.stopTimeoutMs, why);
      dispatch(*q, Event::Kind::kStopTimeout, why);
    }
  });
}

void Supervisor::Impl::noteExit(Proc& p, const ExitInfo& exit) {
  cancelRunTimers(p);
  // The holder already killed what was left of its process group, before reaping it.
  drainLogs(p);
  p.pid = 0;
  p.startTime = 0;
  p.lastExit = exit;
}

void Supervisor::Impl::afterExit(Proc& p, const std::string& what) {
  if (stoppingAll_) {
    enter(p, Phase::kDown, what, true);
    return settle(p, true);
  }
  const RestartDecision d = decideRestart(p.spec.restart, p.history, *p.lastExit, random_());
  p.history = d.next;
  switch (d.action) {
    case RestartDecision::Action::kRestart:
      ++p.restarts;
      if (d.delayMs == 0) {
        enter(p, Phase::kBackoff, what + "; restarting now", true);
        startOrWait(p);
      } else {
        enter(p, Phase::kBackoff, what + "; restart in " + std::to_string(d.delayMs) + " ms", true);
        p.backoffTimer = timers_.after(d.delayMs, [this, name = p.spec.name] {
          if (Proc* q = find(name)) {
            q->backoffTimer = 0;
            dispatch(*q, Event::Kind::kBackoffElapsed);
            flushEvents();
          }
        });
      }
      break;
    case RestartDecision::Action::kStop:
      p.goal = Goal::kHold;
      enter(p, Phase::kDown, what + " (" + std::string(d.reason) + ")", true);
      break;
    case RestartDecision::Action::kFail:
      p.goal = Goal::kHold;
      enter(p, Phase::kFailed,
            what + "; " + std::string(d.reason) + ": " +
                std::to_string(p.spec.restart.maxRestarts) + " restarts in " +
                std::to_string(p.spec.restart.windowS) + " s",
            true);
      break;
  }
  scheduleSave();
}

void Supervisor::Impl::settle(Proc& p, bool exited) {
  if (p.nextSpec) {
    p.setSpec(std::move(*p.nextSpec));
    p.nextSpec.reset();
    reopenLog(p);
  }
  scheduleSave();
  if (p.goal == Goal::kRemove) {
    finishRemoval(p.spec.name);  // p is gone
  } else if (p.goal == Goal::kRun && !stoppingAll_) {
    startOrWait(p);
  }
  if (exited && stoppingAll_) advanceStopAll();
}

void Supervisor::Impl::stopAll(std::function<void()> done) {
  stoppingAll_ = true;
  stopDone_ = std::move(done);
  advanceStopAll();
  flushEvents();
}

void Supervisor::Impl::advanceStopAll() {
  // Dependents first: a process stops once everything that depends on it is down.
  std::vector<std::string> ready;  // stopped after the scan: a stop may reshape order_
  for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
    Proc* p = find(*it);
    if (p == nullptr || isDown(p->phase) || published(p->phase) == ProcessState::kStopping) {
      continue;
    }
    bool dependentsDown = true;
    for (Proc* d : dependentsOf(p->spec.name)) dependentsDown = dependentsDown && isDown(d->phase);
    if (dependentsDown) ready.push_back(*it);
  }
  bool downAtOnce = false;  // a process that was not running stops without an exit to wait for
  for (const auto& name : ready) {
    if (Proc* p = find(name)) {
      dispatch(*p, Event::Kind::kStop, "ring2d is stopping");
      p = find(name);
      downAtOnce = downAtOnce || p == nullptr || isDown(p->phase);
    }
  }
  if (downAtOnce) return advanceStopAll();  // its dependencies may stop now
  bool allDown = true;
  for (auto& [name, p] : procs_) allDown = allDown && isDown(p->phase);
  if (allDown && !shutdownSent_) {
    shutdownSent_ = true;
    save();
    sendHolder(holder_proto::Shutdown{});
    timers_.after(kHolderByeTimeoutMs, [this] {
      if (stopDone_) {
        spdlog::warn("the holder did not confirm its shutdown within {} ms",
                     kHolderByeTimeoutMs);
        auto done = std::move(stopDone_);
        stopDone_ = nullptr;
        done();
      }
    });
  }
}

void Supervisor::Impl::finishStop() {
  if (!stoppingAll_ || !holderGone_ || holderPidfd_ || !stopDone_) return;
  auto done = std::move(stopDone_);
  stopDone_ = nullptr;
  done();
}

void Supervisor::Impl::finishRemoval(const std::string& name) {
  Proc* p = find(name);
  if (p == nullptr) return;
  cancelRunTimers(*p);
  if (p->backoffTimer != 0) timers_.cancel(p->backoffTimer);
  detachFds(*p);
  sendHolder(holder_proto::Close{name});
  procs_.erase(name);
  rebuildOrder();
}

void Supervisor::Impl::rebuildOrder() {
  // Spec order first (independent processes start in the order the file lists them), then
  // anything held but no longer in the spec.
  std::vector<ProcessSpec> specs;
  for (const auto& name : specOrder_) {
    if (Proc* p = find(name)) specs.push_back(p->spec);
  }
  for (auto& [name, p] : procs_) {
    if (std::find(specOrder_.begin(), specOrder_.end(), name) == specOrder_.end()) {
      specs.push_back(p->spec);
    }
  }
  order_.clear();
  for (const ProcessSpec* s : startOrder(specs)) order_.push_back(s->name);
  // A superset is harmless: a spec waiting in nextSpec counts too.
  dependedOn_.clear();
  for (auto& [name, p] : procs_) {
    dependedOn_.insert(p->spec.dependsOn.begin(), p->spec.dependsOn.end());
    if (p->nextSpec) dependedOn_.insert(p->nextSpec->dependsOn.begin(), p->nextSpec->dependsOn.end());
  }
}


// ---------------------------------------------------------------------------------------------
// Commands

Status Supervisor::Impl::reload(std::vector<ProcessSpec> specs) {
  if (auto st = checkObservations(specs); !st.ok()) return st;  // nothing is changed
  std::map<std::string, ProcessSpec> next;
  specOrder_.clear();
  for (auto& s : specs) {
    specOrder_.push_back(s.name);
    next.emplace(s.name, std::move(s));
  }
  std::vector<std::string> removed;
  for (auto& [name, p] : procs_) {
    if (!next.count(name)) removed.push_back(name);
  }
  for (const auto& name : removed) {
    Proc* p = find(name);
    p->goal = Goal::kRemove;
    p->nextSpec.reset();
    dispatch(*p, Event::Kind::kStop, "removed from the spec");
  }
  std::vector<std::string> toStart;  // new, or changed while down
  for (auto& [name, spec] : next) {
    Proc* p = find(name);
    if (p == nullptr) {
      auto fresh = std::make_unique<Proc>();
      fresh->setSpec(std::move(spec));
      procs_[name] = std::move(fresh);
      toStart.push_back(name);
      continue;
    }
    if (p->spec == spec && p->goal != Goal::kRemove) continue;
    // A changed spec is a new start, as an operator's edit means it: it also ends a hold.
    p->goal = Goal::kRun;
    if (hasProcess(p->phase) || p->phase == Phase::kSpawning || p->phase == Phase::kCancelling) {
      spdlog::info("process '{}' changed; restarting it", name);
      p->nextSpec = std::move(spec);
      dispatch(*p, Event::Kind::kStop, "spec changed");
    } else {
      p->setSpec(std::move(spec));
      reopenLog(*p);
      p->history = {};
      toStart.push_back(name);
    }
  }
  rebuildOrder();
  for (const auto& name : order_) {
    if (std::find(toStart.begin(), toStart.end(), name) == toStart.end()) continue;
    if (Proc* p = find(name)) dispatch(*p, Event::Kind::kStart);
  }
  scheduleSave();
  flushEvents();
  return {};
}

Status Supervisor::Impl::startProcess(const std::string& name) {
  Proc* p = find(name);
  if (p == nullptr || p->goal == Goal::kRemove) return Error{"no process '" + name + "'"};
  if (stoppingAll_) return Error{"ring2d is stopping"};
  p->goal = Goal::kRun;  // one on its way down starts again once it is down
  if (isDown(p->phase) || p->phase == Phase::kBackoff || p->phase == Phase::kWaiting) {
    p->history = {};  // an operator's start forgives past failures
    dispatch(*p, Event::Kind::kStart);
  }
  scheduleSave();
  flushEvents();
  return {};
}

Status Supervisor::Impl::stopProcess(const std::string& name) {
  Proc* p = find(name);
  if (p == nullptr || p->goal == Goal::kRemove) return Error{"no process '" + name + "'"};
  p->goal = Goal::kHold;
  dispatch(*p, Event::Kind::kStop, "stopped by request");
  scheduleSave();
  flushEvents();
  return {};
}

Status Supervisor::Impl::restartProcess(const std::string& name) {
  Proc* p = find(name);
  if (p == nullptr || p->goal == Goal::kRemove) return Error{"no process '" + name + "'"};
  if (stoppingAll_) return Error{"ring2d is stopping"};
  if (!hasProcess(p->phase) && p->phase != Phase::kSpawning && p->phase != Phase::kCancelling) {
    return startProcess(name);
  }
  p->goal = Goal::kRun;  // so the stop ends in a start
  dispatch(*p, Event::Kind::kStop, "restarted by request");
  scheduleSave();
  flushEvents();
  return {};
}

std::vector<ProcessStatus> Supervisor::Impl::status() const {
  std::vector<ProcessStatus> out;
  for (const auto& name : order_) {
    auto it = procs_.find(name);
    if (it == procs_.end()) continue;
    const Proc& p = *it->second;
    ProcessStatus s;
    s.name = name;
    s.state = published(p.phase);
    s.pid = p.pid;
    s.startedAtWallMs = hasProcess(p.phase) ? p.startedWallMs : 0;
    s.restarts = p.restarts;
    s.lastExit = p.lastExit;
    s.detail = p.detail;
    out.push_back(std::move(s));
  }
  return out;
}

void Supervisor::Impl::flushEvents() {
  if (pending_.empty()) return;
  auto events = std::move(pending_);
  pending_.clear();
  for (const auto& ev : events) {
    const auto& s = ev.status;
    if (ev.exitEvent && s.lastExit) {
      spdlog::info("process '{}' {}: {}", s.name, stateName(s.state), s.detail);
    } else {
      spdlog::debug("process '{}' {} {}", s.name, stateName(s.state), s.detail);
    }
    if (observer_) observer_(ev);
  }
}

// ---------------------------------------------------------------------------------------------

Supervisor::Supervisor(Reactor& reactor, SupervisorOptions options, std::function<uint64_t()> random)
    : impl_(std::make_unique<Impl>(reactor, std::move(options), std::move(random))) {}
Supervisor::~Supervisor() = default;
void Supervisor::setObserver(Observer observer) { impl_->observer_ = std::move(observer); }
Status Supervisor::start(std::vector<ProcessSpec> specs) { return impl_->start(std::move(specs)); }
Status Supervisor::reload(std::vector<ProcessSpec> specs) { return impl_->reload(std::move(specs)); }
void Supervisor::stopAll(std::function<void()> done) { impl_->stopAll(std::move(done)); }
Status Supervisor::startProcess(const std::string& n) { return impl_->startProcess(n); }
Status Supervisor::stopProcess(const std::string& n) { return impl_->stopProcess(n); }
Status Supervisor::restartProcess(const std::string& n) { return impl_->restartProcess(n); }
std::vector<ProcessStatus> Supervisor::status() const { return impl_->status(); }
bool Supervisor::settled() const { return impl_->settled(); }
Status Supervisor::runCommand(std::string_view op, const std::string& name) {
  if (op == "start") return startProcess(name);
  if (op == "stop") return stopProcess(name);
  if (op == "restart") return restartProcess(name);
  return Error{"unknown command '" + std::string(op) + "' (known: start, stop, restart)"};
}
std::string Supervisor::logPath(const std::string& n) const { return impl_->logPath(n); }

}  // namespace enjin::supervise
