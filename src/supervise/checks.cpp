#include "supervisor_impl.hpp"

#include <spdlog/spdlog.h>

#include "enjin/supervise/spawn.hpp"

namespace enjin::supervise {

// ---------------------------------------------------------------------------------------------
// Readiness, health checks and the watchdog

Result<std::unique_ptr<Probe>> Supervisor::Impl::makeCheck(const std::string& kind,
                                                          const CheckTarget& target) {
  auto strategy = options_.observations->find(kind);
  if (!strategy.ok()) return strategy.error();
  if (!(*strategy)->polled()) return std::unique_ptr<Probe>();
  return (*strategy)->makeProbe(reactor_, target);
}

void Supervisor::Impl::beginReadiness(Proc& p) {
  const auto& r = p.spec.readiness;
  p.readyTimer = timers_.after(r.timeoutMs, [this, name = p.spec.name] {
    Proc* q = find(name);
    if (q == nullptr) return;
    q->readyTimer = 0;
    dispatch(*q, Event::Kind::kNotReadyInTime,
             "not ready after " + std::to_string(q->spec.readiness.timeoutMs) + " ms");
    flushEvents();
  });
  CheckTarget target;
  target.host = r.host;
  target.port = r.port;
  target.url = r.url;
  target.timeoutMs = kReadinessProbeTimeoutMs;
  auto probe = makeCheck(r.kind, target);
  if (!probe.ok()) {
    // A check that cannot be built can never pass.
    return dispatch(p, Event::Kind::kNotReadyInTime, "readiness check: " + probe.error().message);
  }
  if (!*probe) return;  // pushed (notify): READY=1 arrives on the notify socket
  p.readinessProbe = std::move(*probe);
  probeReadiness(p);
}

void Supervisor::Impl::probeReadiness(Proc& p) {
  p.readinessProbe->start([this, name = p.spec.name](ProbeResult r) {
    Proc* q = find(name);
    if (q == nullptr || q->phase != Phase::kRunning) return;
    if (r.healthy) {
      dispatch(*q, Event::Kind::kReady);
    } else {
      q->retryTimer = timers_.after(kReadinessRetryMs, [this, name] {
        if (Proc* s = find(name); s != nullptr && s->phase == Phase::kRunning) {
          s->retryTimer = 0;
          probeReadiness(*s);
        }
      });
    }
    flushEvents();
  });
}

void Supervisor::Impl::scheduleHealth(Proc& p) {
  const auto& h = p.spec.health;
  if (h.kind == "none") return;
  if (!p.healthProbe) {
    CheckTarget target;
    target.host = h.host;
    target.port = h.port;
    target.url = h.url;
    target.command = h.command;
    target.timeoutMs = h.timeoutMs;
    if (h.kind == "exec") {
      // The check runs with the process's identity and environment, not ring2d's: its spawn
      // strategy said which (execIn), through the holder, which resolved it when it spawned.
      if (!p.execIdentity) {
        spdlog::error("process '{}': health check: the holder did not say who the process runs as",
                      p.spec.name);
        return;
      }
      target.identity = *p.execIdentity;
    }
    auto probe = makeCheck(h.kind, target);
    if (!probe.ok() || !*probe) {
      spdlog::error("process '{}': health check: {}", p.spec.name,
                    probe.ok() ? "'" + h.kind + "' is not polled" : probe.error().message);
      return;
    }
    p.healthProbe = std::move(*probe);
  }
  p.healthTimer = timers_.after(h.intervalMs, [this, name = p.spec.name] {
    Proc* q = find(name);
    if (q == nullptr) return;
    q->healthTimer = 0;
    q->healthProbe->start([this, name](ProbeResult r) {
      Proc* s = find(name);
      if (s == nullptr || !isReady(s->phase)) return;
      if (r.healthy) {
        s->healthFailures = 0;
        if (s->phase == Phase::kUnhealthy) dispatch(*s, Event::Kind::kHealthRestored, "healthy again");
      } else if (++s->healthFailures >= s->spec.health.failures && s->phase == Phase::kReady) {
        dispatch(*s, Event::Kind::kHealthFailed,
                 "health check failed " + std::to_string(s->healthFailures) + " times: " + r.detail);
      }
      if (isReady(s->phase)) scheduleHealth(*s);  // not when the failure stopped it
      flushEvents();
    });
  });
}

void Supervisor::Impl::armWatchdog(Proc& p) {
  const int64_t ms = p.spec.readiness.watchdogMs;
  if (p.spec.readiness.kind != "notify" || ms <= 0) return;
  if (p.watchdogTimer != 0) timers_.cancel(p.watchdogTimer);
  p.watchdogTimer = timers_.after(ms, [this, name = p.spec.name] {
    Proc* q = find(name);
    if (q == nullptr) return;
    q->watchdogTimer = 0;
    dispatch(*q, Event::Kind::kWatchdog,
             "no WATCHDOG=1 for " + std::to_string(q->spec.readiness.watchdogMs) + " ms");
    flushEvents();
  });
}

void Supervisor::Impl::cancelChecks(Proc& p) {
  for (auto* t : {&p.readyTimer, &p.watchdogTimer, &p.healthTimer, &p.retryTimer}) {
    if (*t != 0) timers_.cancel(*t);
    *t = 0;
  }
  if (p.readinessProbe) p.readinessProbe->cancel();
  if (p.healthProbe) p.healthProbe->cancel();
}

void Supervisor::Impl::cancelRunTimers(Proc& p) {
  cancelChecks(p);
  if (p.stopTimer != 0) timers_.cancel(p.stopTimer);
  p.stopTimer = 0;
}

}  // namespace enjin::supervise
