#include "supervisor_impl.hpp"

#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>

#include <cstdlib>

#include "enjin/supervise/spawn.hpp"

namespace enjin::supervise {

namespace proto = holder_proto;

namespace {

// The exit a holder reported, timed by this supervisor's clock.
ExitInfo timedExit(ExitInfo e, int64_t startedAtNs, int64_t nowNs) {
  e.startedAtNs = startedAtNs;
  e.exitedAtNs = nowNs;
  return e;
}

}  // namespace

Status Supervisor::Impl::connectHolder(const json& previous) {
  if (options_.connectHolder) {
    auto client = options_.connectHolder();
    if (!client.ok()) return client.error();
    holder_ = std::move(*client);
  } else {
    auto client = HolderClient::connectOrLaunch(options_.stateDir + "/holder.sock",
                                                options_.holderExe, options_.stateDir + "/holder.log");
    if (!client.ok()) return client.error();
    holder_ = std::move(*client);
  }
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
  sendHolder(proto::Hello{});
  const int64_t deadline = nowNs() + kHolderHelloTimeoutMs * 1'000'000;
  for (;;) {
    std::string text;
    std::vector<UniqueFd> fds;
    auto got = holder_->receive(text, fds);
    if (!got.ok()) return got.error();
    if (!*got) {
      const int64_t left = (deadline - nowNs()) / 1'000'000;
      if (left <= 0) {
        return Error{"holder did not answer hello within " + std::to_string(kHolderHelloTimeoutMs) + " ms"};
      }
      pollfd pfd{holder_->fd(), POLLIN, 0};
      ::poll(&pfd, 1, static_cast<int>(left));
      continue;
    }
    auto reply = proto::decodeReply(text);
    if (!reply.ok()) {
      spdlog::error("holder: {}", reply.error().message);
      continue;
    }
    if (std::holds_alternative<proto::HelloDone>(*reply)) break;
    if (const auto* slot = std::get_if<proto::Slot>(&*reply)) {
      adopt(*slot, fds, prevProcs.value(slot->name, json()));
    }
  }
  holderQueueWatched_ = holder_->queued();
  return reactor_.addFd(holder_->fd(), holderQueueWatched_ ? EPOLLIN | EPOLLOUT : EPOLLIN,
                        [this](uint32_t events) {
                          if ((events & EPOLLOUT) != 0 && holder_) flushHolderQueue();
                          if (holder_) onHolderReadable();
                        });
}

void Supervisor::Impl::adopt(const proto::Slot& slot, std::vector<UniqueFd>& fds, const json& prev) {
  const std::string& name = slot.name;
  Proc* p = find(name);
  if (p == nullptr) {
    // Held, but no longer in the spec: stop it, then let the holder forget it.
    auto orphan = std::make_unique<Proc>();
    orphan->spec.name = name;
    orphan->goal = Goal::kRemove;
    p = orphan.get();
    procs_[name] = std::move(orphan);
  }
  // The listening sockets the holder keeps for it: each goes back into the socket table under
  // its source when this daemon lacks one (it restarted, and so did whatever gave it its own).
  std::vector<holder_proto::FdRole> roles;
  std::vector<UniqueFd> channels;
  size_t listenIndex = 0;
  for (size_t i = 0; i < slot.fds.size() && i < fds.size(); ++i) {
    if (slot.fds[i] != holder_proto::FdRole::kListen) {
      roles.push_back(slot.fds[i]);
      channels.push_back(std::move(fds[i]));
      continue;
    }
    const std::string& source = slot.sockets[listenIndex++];
    if (options_.sockets != nullptr && options_.sockets->find(source) < 0) {
      spdlog::info("process '{}': socket '{}' taken back from the holder", name, source);
      options_.sockets->put(source, std::move(fds[i]));
    }
  }
  if (slot.fds.size() != fds.size()) {
    roles = slot.fds;  // a mismatch attachFds refuses, as before
    channels = std::move(fds);
  }
  attachFds(*p, roles, channels);
  p->execIdentity = slot.identity;
  if (slot.running) {
    p->pid = slot.pid;
    p->startTime = slot.startTime;
    p->startedMonoNs = nowNs();
    p->startedWallMs = prev.is_object() ? prev.value("started_wall_ms", wallMs()) : wallMs();
    Event ev{Event::Kind::kAdopted, "re-adopted"};
    ev.wasReady = prev.is_object() && prev.value("ready", false);
    dispatch(*p, ev);
  } else if (p->goal == Goal::kRemove) {
    finishRemoval(name);
  } else if (slot.exit && !slot.exitReported) {
    // It exited while no ring2d was there; the holder kept its status for us to act on.
    const ExitInfo exit = timedExit(*slot.exit, nowNs(), nowNs());
    Event ev{Event::Kind::kExited, ""};
    ev.exit = &exit;
    dispatch(*p, ev);
  }
  // Otherwise the last ring2d saw the exit and acted on it: state.json says what it decided.
}

// ---------------------------------------------------------------------------------------------
// Holder messages

void Supervisor::Impl::sendHolder(const proto::Request& msg) {
  if (!holder_) return;
  if (auto st = sendToHolder(proto::encode(msg)); !st.ok()) holderLost(st.error().message);
}

Status Supervisor::Impl::sendToHolder(const std::string& text, const std::vector<int>& fds) {
  auto st = holder_->sendFds(text, fds);
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
  sendHolder(proto::Signal{p.spec.name, signal, true});
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
    auto reply = proto::decodeReply(text);
    if (!reply.ok()) {
      spdlog::error("holder: {}", reply.error().message);
      continue;
    }
    handleHolderMessage(*reply, fds);
  }
  flushEvents();
}

void Supervisor::Impl::handleHolderMessage(proto::Reply& reply, std::vector<UniqueFd>& fds) {
  struct Visitor {
    Impl& s;
    std::vector<UniqueFd>& fds;
    void operator()(const proto::Bye&) {
      s.holderGone_ = true;
      s.finishStop();
    }
    void operator()(const proto::ErrorReply& m) { spdlog::error("holder: {}", m.error); }
    void operator()(const proto::Spawned& m) {
      if (Proc* p = s.find(m.name)) {
        s.attachFds(*p, m.fds, fds);
        Event ev{Event::Kind::kSpawned, ""};
        ev.spawned = &m;
        s.dispatch(*p, ev);
      }
    }
    void operator()(const proto::SpawnFailed& m) {
      if (Proc* p = s.find(m.name)) {
        s.attachFds(*p, m.fds, fds);
        p->holderHasSpec = false;  // the next attempt sends the whole spec again
        s.dispatch(*p, Event::Kind::kSpawnFailed, m.error);
      }
    }
    void operator()(const proto::Exited& m) {
      Proc* p = s.find(m.name);
      if (p == nullptr || m.pid != p->pid) return;  // not the run we know: stale
      const ExitInfo exit = timedExit(m.exit, p->startedMonoNs, s.nowNs());
      Event ev{Event::Kind::kExited, ""};
      ev.exit = &exit;
      s.dispatch(*p, ev);
    }
    // Only answers to hello, which connectHolder reads.
    void operator()(const proto::Slot&) {}
    void operator()(const proto::HelloDone&) {}
  };
  std::visit(Visitor{*this, fds}, reply);
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
