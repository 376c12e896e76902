#include "supervisor_impl.hpp"

#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>

#include <cstdlib>

#include "enjin/supervise/spawn.hpp"

namespace enjin::supervise {

ExitInfo exitFromJson(const json& j, int64_t startedAtNs, int64_t nowNs) {
  ExitInfo e;
  e.startedAtNs = startedAtNs;
  e.exitedAtNs = nowNs;
  if (!j.is_object()) return e;  // kUnknown
  const std::string kind = j.value("kind", "");
  if (kind == "exited") {
    e.kind = ExitInfo::Kind::kExited;
    e.code = j.value("code", 0);
  } else if (kind == "signaled") {
    e.kind = ExitInfo::Kind::kSignaled;
    e.signal = j.value("signal", 0);
  }
  return e;
}

Status Supervisor::Impl::connectHolder(const json& previous) {
  auto client = HolderClient::connectOrLaunch(options_.stateDir + "/holder.sock", options_.holderExe,
                                              options_.stateDir + "/holder.log");
  if (!client.ok()) return client.error();
  holder_ = std::move(*client);
  const json prevProcs = previous.value("processes", json::object());
  if (holder_->launched()) {
    // A fresh holder: whatever the state file says still runs was orphaned by a holder that
    // died. It cannot be reaped or re-attached, and must not run twice: kill its group.
    for (const auto& [name, info] : prevProcs.items()) {
      const int pid = info.value("pid", 0);
      const uint64_t startTime = info.value("start_time", uint64_t{0});
      if (pid <= 0) continue;
      // The pid alone could have been reused: only the same start time is the same process.
      auto now = processStartTime(pid);
      if (now.ok() && *now == startTime) {
        spdlog::warn("process '{}' (pid {}) outlived its holder; killing its group", name, pid);
        ::kill(-pid, SIGKILL);
      }
      // Its exit can no longer be collected: say so rather than invent one.
      if (Proc* p = find(name)) {
        p->lastExit = ExitInfo{};  // kUnknown
        p->detail = "its holder was lost; exit status unknown";
      }
    }
    holderPidfd_ = holder_->takeLaunchedPidfd();
    if (holderPidfd_) {
      (void)reactor_.addFd(holderPidfd_.get(), EPOLLIN, [this](uint32_t) {
        // Our own child: collect it so it is never a zombie.
        siginfo_t info{};
        ::waitid(kPidfdIdType, static_cast<id_t>(holderPidfd_.get()), &info, WEXITED | WNOHANG);
        reactor_.removeFd(holderPidfd_.get());
        holderPidfd_.reset();
        finishStop();
      });
    }
  }
  // Hello: the holder answers with every process it holds. This runs before the reactor does,
  // so a bounded blocking wait is fine here.
  sendHolder(json{{"op", "hello"}});
  const int64_t deadline = nowNs() + 5'000'000'000;
  for (;;) {
    std::string text;
    std::vector<UniqueFd> fds;
    auto got = holder_->receive(text, fds);
    if (!got.ok()) return got.error();
    if (!*got) {
      const int64_t left = (deadline - nowNs()) / 1'000'000;
      if (left <= 0) return Error{"holder did not answer hello within 5 s"};
      pollfd pfd{holder_->fd(), POLLIN, 0};
      ::poll(&pfd, 1, static_cast<int>(left));
      continue;
    }
    json msg = json::parse(text, nullptr, false);
    if (msg.value("op", "") == "hello_done") break;
    if (msg.value("op", "") != "slot") continue;
    const std::string name = msg.value("name", "");
    Proc* p = find(name);
    if (p == nullptr) {
      // Held, but no longer in the spec: stop it, then let the holder forget it.
      auto orphan = std::make_unique<Proc>();
      orphan->spec.name = name;
      orphan->wanted = false;
      orphan->removeAfterStop = true;
      p = orphan.get();
      procs_[name] = std::move(orphan);
    }
    attachFds(*p, msg.value("fds", json::array()), fds);
    const json& prev = prevProcs.value(name, json());
    if (msg.value("running", false)) {
      p->pid = msg.value("pid", 0);
      p->startTime = msg.value("start_time", uint64_t{0});
      p->startedMonoNs = nowNs();
      p->startedWallMs = prev.is_object() ? prev.value("started_wall_ms", wallMs()) : wallMs();
      if (!p->wanted) {
        p->state = ProcessState::kRunning;
        stop(*p, "not in the spec any more");
        continue;
      }
      setState(*p, ProcessState::kRunning, "re-adopted");
      const bool wasReady = prev.is_object() && prev.value("ready", false);
      if (p->spec.readiness.kind == ReadinessConfig::Kind::kNone || wasReady) {
        setReady(*p, "re-adopted");
      } else {
        beginReadiness(*p);
      }
    } else if (p->removeAfterStop) {
      finishRemoval(name);
    } else if (p->wanted && msg.value("exit", json()).is_object() && !msg.value("exit_reported", true)) {
      // It exited while no ring2d was there; the holder kept its status for us to act on.
      p->state = ProcessState::kRunning;  // it was running when we lost sight of it
      onExit(*p, exitFromJson(msg["exit"], nowNs(), nowNs()));
    }
    // Otherwise the last ring2d saw the exit and acted on it: state.json says what it decided.
  }
  holderQueueWatched_ = holder_->queued();
  return reactor_.addFd(holder_->fd(), holderQueueWatched_ ? EPOLLIN | EPOLLOUT : EPOLLIN,
                        [this](uint32_t events) {
                          if ((events & EPOLLOUT) != 0 && holder_) flushHolderQueue();
                          if (holder_) onHolderReadable();
                        });
}

// ---------------------------------------------------------------------------------------------
// Holder messages

void Supervisor::Impl::sendHolder(const json& msg) {
  if (!holder_) return;
  if (auto st = sendToHolder(msg.dump()); !st.ok()) holderLost(st.error().message);
}

Status Supervisor::Impl::sendToHolder(const std::string& text) {
  auto st = holder_->send(text);
  if (st.ok() && holder_->queued() && !holderQueueWatched_) {
    holderQueueWatched_ = true;
    (void)reactor_.modifyFd(holder_->fd(), EPOLLIN | EPOLLOUT);
  }
  return st;
}

void Supervisor::Impl::flushHolderQueue() {
  if (auto st = holder_->flush(); !st.ok()) return holderLost(st.error().message);
  if (!holder_->queued()) {
    holderQueueWatched_ = false;
    (void)reactor_.modifyFd(holder_->fd(), EPOLLIN);
  }
}

void Supervisor::Impl::signalGroup(Proc& p, int signal) {
  sendHolder(json{{"op", "signal"}, {"name", p.spec.name}, {"signal", signal}, {"group", true}});
}

void Supervisor::Impl::onHolderReadable() {
  for (int i = 0; holder_ && i < 64; ++i) {
    std::string text;
    std::vector<UniqueFd> fds;
    auto got = holder_->receive(text, fds);
    if (!got.ok()) {
      holderLost(got.error().message);
      break;
    }
    if (!*got) break;
    json msg = json::parse(text, nullptr, false);
    if (msg.is_object()) handleHolderMessage(msg, fds);
  }
  flushEvents();
}

void Supervisor::Impl::handleHolderMessage(const json& msg, std::vector<UniqueFd>& fds) {
  const std::string op = msg.value("op", "");
  if (op == "bye") {
    holderGone_ = true;
    finishStop();
    return;
  }
  if (op == "error") {
    spdlog::error("holder: {}", msg.value("error", "?"));
    return;
  }
  const std::string name = msg.value("name", "");
  Proc* p = find(name);
  if (p == nullptr) return;
  if (msg.contains("fds")) attachFds(*p, msg["fds"], fds);
  if (op == "spawned") {
    onSpawned(*p, msg);
  } else if (op == "spawn_failed") {
    p->spawnPending = false;
    p->holderHasSpec = false;  // the next attempt sends the whole spec again
    p->detail = msg.value("error", "spawn failed");
    spdlog::warn("process '{}': {}", name, p->detail);
    ExitInfo e;
    e.kind = ExitInfo::Kind::kExited;
    e.code = 127;
    e.startedAtNs = e.exitedAtNs = nowNs();
    onExit(*p, e);
  } else if (op == "exited") {
    if (msg.value("pid", 0) != p->pid) return;  // not the run we know: stale
    onExit(*p, exitFromJson(msg.value("exit", json()), p->startedMonoNs, nowNs()));
  }
}

void Supervisor::Impl::holderLost(const std::string& why) {
  if (stoppingAll_ && shutdownSent_) {
    // It left as asked.
    if (holder_) reactor_.removeFd(holder_->fd());
    holder_.reset();
    holderGone_ = true;
    finishStop();
    return;
  }
  // Without the holder nothing can be spawned or reaped. Crash loudly: the ring above (or the
  // operator) restarts ring2d, which starts a new holder and cleans up after the old one.
  spdlog::critical("lost the holder ({}); exiting so a fresh start can recover", why);
  save();
  std::_Exit(70);
}
}  // namespace enjin::supervise
