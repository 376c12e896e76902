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

Status Supervisor::Impl::start(std::vector<ProcessSpec> specs) {
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
    if (Proc* p = find(name); p != nullptr && p->state == ProcessState::kStopped && p->wanted) {
      maybeStart(*p);
    }
  }
  flushEvents();
  return {};
}
// ---------------------------------------------------------------------------------------------
// Lifecycle

bool Supervisor::Impl::dependenciesReady(const Proc& p, std::string& waitingFor) const {
  for (const auto& dep : p.spec.dependsOn) {
    auto it = procs_.find(dep);
    if (it == procs_.end()) continue;  // validated at parse time; a removed dependency is gone
    if (!it->second->ready) {
      waitingFor = dep;
      return false;
    }
  }
  return true;
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

void Supervisor::Impl::maybeStart(Proc& p) {
  if (!p.wanted || p.spawnPending || isLive(p.state) || stoppingAll_) return;
  if (p.state == ProcessState::kBackoff && p.backoffTimer != 0) return;  // its timer will
  std::string waitingFor;
  if (!dependenciesReady(p, waitingFor)) {
    const std::string detail = "waiting for '" + waitingFor + "' to be ready";
    if (p.state != ProcessState::kStarting || p.detail != detail) {
      setState(p, ProcessState::kStarting, detail);
    }
    return;
  }
  spawn(p);
}

void Supervisor::Impl::spawn(Proc& p) {
  p.spawnPending = true;
  if (p.holderHasSpec) {
    // The fast path: the holder already has everything but the word.
    if (holder_) {
      if (auto st = sendToHolder(holder_proto::encodeRespawn(p.spec.name)); !st.ok()) {
        return holderLost(st.error().message);
      }
    }
    setState(p, ProcessState::kStarting, "");
    return;
  }
  // The request is built from the cached spec text.
  std::vector<std::string> env;
  std::optional<std::string> notify;
  if (p.spec.readiness.kind == ReadinessConfig::Kind::kNotify) {
    notify = options_.stateDir + "/notify/" + p.spec.name + ".sock";
    env.push_back("NOTIFY_SOCKET=" + *notify);
    if (p.spec.readiness.watchdogMs > 0) {
      env.push_back("WATCHDOG_USEC=" + std::to_string(p.spec.readiness.watchdogMs * 1000));
    }
  }
  if (holder_) {
    if (auto st = sendToHolder(holder_proto::encodeSpawn(p.spec.name, p.specJson, env, notify));
        !st.ok()) {
      return holderLost(st.error().message);
    }
  }
  setState(p, ProcessState::kStarting, "");
}

void Supervisor::Impl::onSpawnFailed(Proc& p, const std::string& error) {
  p.spawnPending = false;
  p.holderHasSpec = false;  // the next attempt sends the whole spec again
  p.detail = error;
  spdlog::warn("process '{}': {}", p.spec.name, p.detail);
  ExitInfo e;
  e.kind = ExitInfo::Kind::kExited;
  e.code = 127;
  e.startedAtNs = e.exitedAtNs = nowNs();
  onExit(p, e);
}

void Supervisor::Impl::onSpawned(Proc& p, const holder_proto::Spawned& msg) {
  p.spawnPending = false;
  p.holderHasSpec = true;
  p.pid = msg.pid;
  p.startTime = msg.startTime;
  if (msg.identity) {
    p.execIdentity = msg.identity;
    p.healthProbe.reset();  // an exec check is built for one identity
  }
  p.startedMonoNs = nowNs();
  p.startedWallMs = wallMs();
  p.ready = false;
  p.healthFailures = 0;
  if (!p.wanted || p.state == ProcessState::kStopping) {
    // Stopped while the spawn was on its way.
    p.state = ProcessState::kRunning;
    stop(p, "stopped while starting");
    return;
  }
  setState(p, ProcessState::kRunning, "");
  if (p.spec.readiness.kind == ReadinessConfig::Kind::kNone) {
    setReady(p, "");
  } else {
    beginReadiness(p);
  }
  // What the new run said before we knew its pid counts now, if it was the new run that said it.
  auto early = std::move(p.earlyNotify);
  p.earlyNotify.clear();
  for (const auto& [pid, text] : early) {
    if (pid == p.pid || ::getpgid(pid) == p.pid) applyNotify(p, text);
  }
  scheduleSave();
}

void Supervisor::Impl::cancelRunTimers(Proc& p) {
  for (auto* t : {&p.stopTimer, &p.readyTimer, &p.watchdogTimer, &p.healthTimer, &p.retryTimer}) {
    if (*t != 0) reactor_.cancelTimer(*t);
    *t = 0;
  }
  if (p.readinessProbe) p.readinessProbe->cancel();
  if (p.healthProbe) p.healthProbe->cancel();
}

void Supervisor::Impl::onExit(Proc& p, const ExitInfo& exit) {
  cancelRunTimers(p);
  // The holder already killed what was left of its process group, before reaping it.
  drainLogs(p);
  p.pid = 0;
  p.startTime = 0;
  p.ready = false;
  p.spawnPending = false;
  p.lastExit = exit;
  const std::string what = describeExit(exit);

  if (p.state == ProcessState::kStopping || !p.wanted) {
    setState(p, ProcessState::kStopped, what, true);
    if (p.restartAfterStop) {
      p.restartAfterStop = false;
      if (p.nextSpec) {
        p.setSpec(std::move(*p.nextSpec));
        p.nextSpec.reset();
        reopenLog(p);
      }
      p.wanted = true;
      p.heldDown = false;
      maybeStart(p);
    } else if (p.removeAfterStop) {
      finishRemoval(p.spec.name);
    }
    if (stoppingAll_) advanceStopAll();
    scheduleSave();
    return;
  }

  const RestartDecision d = decideRestart(p.spec.restart, p.history, exit, random_());
  p.history = d.next;
  switch (d.action) {
    case RestartDecision::Action::kRestart:
      ++p.restarts;
      if (d.delayMs == 0) {
        // The fast path: the spawn request goes out before anything is logged or published.
        setState(p, ProcessState::kBackoff, what + "; restarting now", true);
        spawn(p);
      } else {
        setState(p, ProcessState::kBackoff,
                 what + "; restart in " + std::to_string(d.delayMs) + " ms", true);
        p.backoffTimer = reactor_.addTimerAfterMillis(d.delayMs, [this, name = p.spec.name] {
          if (Proc* q = find(name)) {
            q->backoffTimer = 0;
            maybeStart(*q);
            flushEvents();
          }
        });
      }
      break;
    case RestartDecision::Action::kStop:
      p.wanted = false;
      p.heldDown = true;
      setState(p, ProcessState::kStopped, what + " (" + std::string(d.reason) + ")", true);
      break;
    case RestartDecision::Action::kFail:
      p.wanted = false;
      p.heldDown = true;
      setState(p, ProcessState::kFailed,
               what + "; " + std::string(d.reason) + ": " +
                   std::to_string(p.spec.restart.maxRestarts) + " restarts in " +
                   std::to_string(p.spec.restart.windowS) + " s",
               true);
      break;
  }
  scheduleSave();
}

void Supervisor::Impl::stop(Proc& p, const std::string& why) {
  p.wanted = false;
  if (p.backoffTimer != 0) {
    reactor_.cancelTimer(p.backoffTimer);
    p.backoffTimer = 0;
  }
  if (p.spawnPending) {
    setState(p, ProcessState::kStopping, why);  // onSpawned sends the signal
    return;
  }
  if (!isLive(p.state) || p.pid <= 0) {
    if (!isDown(p.state)) setState(p, ProcessState::kStopped, why);
    if (p.removeAfterStop) finishRemoval(p.spec.name);
    return;
  }
  if (p.state == ProcessState::kStopping) return;
  cancelRunTimers(p);
  setState(p, ProcessState::kStopping, why);
  terminate(p, why);
}

void Supervisor::Impl::terminate(Proc& p, const std::string& why) {
  signalGroup(p, p.spec.stopSignal);
  // A stop already under way keeps its deadline: a process cannot postpone its SIGKILL by
  // provoking another stop.
  if (p.stopTimer != 0) return;
  p.stopTimer = reactor_.addTimerAfterMillis(p.spec.stopTimeoutMs, [this, name = p.spec.name, why] {
    if (Proc* q = find(name)) {
      q->stopTimer = 0;
      spdlog::warn("process '{}' still running {} ms after its stop signal ({}); SIGKILL",
                   name, q->spec.stopTimeoutMs, why);
      signalGroup(*q, SIGKILL);
    }
  });
}

void Supervisor::Impl::setState(Proc& p, ProcessState s, std::string detail, bool exitEvent) {
  p.state = s;
  p.detail = std::move(detail);
  StateEvent ev;
  ev.status.name = p.spec.name;
  ev.status.state = s;
  ev.status.pid = p.pid;
  ev.status.startedAtWallMs = isLive(s) ? p.startedWallMs : 0;
  ev.status.restarts = p.restarts;
  ev.status.lastExit = p.lastExit;
  ev.status.detail = p.detail;
  ev.exitEvent = exitEvent;
  pending_.push_back(std::move(ev));
}

void Supervisor::Impl::setReady(Proc& p, const std::string& detail) {
  if (p.readyTimer != 0) reactor_.cancelTimer(p.readyTimer);
  if (p.retryTimer != 0) reactor_.cancelTimer(p.retryTimer);
  p.readyTimer = p.retryTimer = 0;
  p.ready = true;
  setState(p, ProcessState::kReady, detail);
  scheduleHealth(p);
  armWatchdog(p);
  for (Proc* d : dependentsOf(p.spec.name)) {
    // Only a dependent that waits for this; one the policy or an operator stopped stays down.
    if (d->state == ProcessState::kStarting && !d->spawnPending) maybeStart(*d);
  }
  scheduleSave();
}

void Supervisor::Impl::stopAll(std::function<void()> done) {
  stoppingAll_ = true;
  stopDone_ = std::move(done);
  for (auto& [name, p] : procs_) p->wanted = false;
  advanceStopAll();
  flushEvents();
}

void Supervisor::Impl::advanceStopAll() {
  std::vector<std::string> ready;  // stopped after the scan: stop() may reshape order_
  for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
    Proc* p = find(*it);
    if (p == nullptr || isDown(p->state) || p->state == ProcessState::kStopping) continue;
    bool dependentsDown = true;
    for (Proc* d : dependentsOf(p->spec.name)) dependentsDown = dependentsDown && isDown(d->state);
    if (dependentsDown) ready.push_back(*it);
  }
  bool downAtOnce = false;  // a process that was not running stops without an exit to wait for
  for (const auto& name : ready) {
    if (Proc* p = find(name)) {
      stop(*p, "ring2d is stopping");
      downAtOnce = downAtOnce || find(name) == nullptr || isDown(p->state);
    }
  }
  if (downAtOnce) return advanceStopAll();  // its dependencies may stop now
  bool allDown = true;
  for (auto& [name, p] : procs_) allDown = allDown && isDown(p->state);
  if (allDown && !shutdownSent_) {
    shutdownSent_ = true;
    save();
    sendHolder(holder_proto::Shutdown{});
    reactor_.addTimerAfterMillis(kHolderByeTimeoutMs, [this] {
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
  if (p->backoffTimer != 0) reactor_.cancelTimer(p->backoffTimer);
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
    p->removeAfterStop = true;
    p->restartAfterStop = false;
    p->nextSpec.reset();
    stop(*p, "removed from the spec");
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
    if (p->spec == spec && !p->removeAfterStop) continue;
    p->removeAfterStop = false;
    if (isLive(p->state) || p->spawnPending) {
      spdlog::info("process '{}' changed; restarting it", name);
      p->nextSpec = std::move(spec);
      p->restartAfterStop = true;
      stop(*p, "spec changed");
    } else {
      // Changed while down: a new spec is a new start, as an operator's edit means it.
      p->setSpec(std::move(spec));
      reopenLog(*p);
      p->history = {};
      p->heldDown = false;
      p->wanted = true;
      if (p->state == ProcessState::kFailed) p->state = ProcessState::kStopped;
      toStart.push_back(name);
    }
  }
  rebuildOrder();
  for (const auto& name : order_) {
    if (std::find(toStart.begin(), toStart.end(), name) == toStart.end()) continue;
    if (Proc* p = find(name); p != nullptr && (p->state == ProcessState::kStopped ||
                                               p->state == ProcessState::kStarting)) {
      maybeStart(*p);
    }
  }
  scheduleSave();
  flushEvents();
  return {};
}

Status Supervisor::Impl::startProcess(const std::string& name) {
  Proc* p = find(name);
  if (p == nullptr || p->removeAfterStop) return Error{"no process '" + name + "'"};
  if (stoppingAll_) return Error{"ring2d is stopping"};
  p->heldDown = false;
  if (p->state == ProcessState::kStopping) {
    p->restartAfterStop = true;  // start it again once the stop completes
    flushEvents();
    return {};
  }
  p->wanted = true;
  if (!isLive(p->state) && !p->spawnPending) {
    p->history = {};  // an operator's start forgives past failures
    if (p->backoffTimer != 0) {
      reactor_.cancelTimer(p->backoffTimer);
      p->backoffTimer = 0;
    }
    p->state = ProcessState::kStopped;
    maybeStart(*p);
  }
  flushEvents();
  return {};
}

Status Supervisor::Impl::stopProcess(const std::string& name) {
  Proc* p = find(name);
  if (p == nullptr || p->removeAfterStop) return Error{"no process '" + name + "'"};
  p->heldDown = true;
  p->restartAfterStop = false;
  stop(*p, "stopped by request");
  scheduleSave();
  flushEvents();
  return {};
}

Status Supervisor::Impl::restartProcess(const std::string& name) {
  Proc* p = find(name);
  if (p == nullptr || p->removeAfterStop) return Error{"no process '" + name + "'"};
  if (stoppingAll_) return Error{"ring2d is stopping"};
  p->heldDown = false;
  if (isLive(p->state) || p->spawnPending) {
    p->restartAfterStop = true;
    stop(*p, "restarted by request");
    flushEvents();
    return {};
  }
  return startProcess(name);
}

std::vector<ProcessStatus> Supervisor::Impl::status() const {
  std::vector<ProcessStatus> out;
  for (const auto& name : order_) {
    auto it = procs_.find(name);
    if (it == procs_.end()) continue;
    const Proc& p = *it->second;
    ProcessStatus s;
    s.name = name;
    s.state = p.state;
    s.pid = p.pid;
    s.startedAtWallMs = isLive(p.state) ? p.startedWallMs : 0;
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
