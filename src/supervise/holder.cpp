#include "enjin/supervise/holder.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <cstring>
#include <optional>

#include "enjin/base/unix_socket.hpp"
#include "enjin/supervise/limits.hpp"

namespace enjin::supervise {

namespace proto = holder_proto;
using proto::FdRole;

struct Holder::Slot {
  std::string name;
  UniqueFd outRead, outWrite, errRead, errWrite, notify;
  pid_t pid = -1;  // the current (or last) child; its pgid too
  uint64_t startTime = 0;
  bool running = false;
  std::optional<ExitInfo> lastExit;  // none until the first exit
  bool exitReported = false;  // lastExit went out to a connected ring2d, which acted on it
  // What the last spawn asked for, so a respawn needs no spec on the wire.
  std::optional<ProcessSpec> spec;
  SpawnRequest request;
  std::optional<ExecIdentity> identity;  // the spec's execIn() at its full spawn, if it has an exec check
  // The listening sockets of the last full spawn, one per spec->sockets entry: passed again at
  // every respawn, so a connection made while the process restarts waits in their queue.
  std::vector<UniqueFd> listen;
};

namespace {

int64_t monotonicNowNs() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// A holder stopped by SIGTERM (system shutdown) gives what it holds this long, then SIGKILL.
constexpr int64_t kShutdownKillAfterMs = 10'000;

// The output channel of one process: a unix stream socket pair rather than a pipe (as journald
// does), because a reader can MSG_PEEK it. ring2d consumes only whole lines, so a line the
// process has half written stays in the kernel, not in ring2d's memory, when ring2d dies.
Status makeOutputChannel(UniqueFd& readEnd, UniqueFd& writeEnd) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return errnoError("socketpair", errno);
  }
  readEnd.reset(fds[0]);
  writeEnd.reset(fds[1]);
  ::shutdown(readEnd.get(), SHUT_WR);
  ::shutdown(writeEnd.get(), SHUT_RD);
  return {};
}

// The notify socket of a process: credentials on, so ring2d can tell who sent a datagram. It is
// owned by the identity the process runs as, so a unix-user child can write to it.
Result<UniqueFd> makeNotifySocket(const std::string& path, const ExecIdentity& owner) {
  auto sock = listenUnix(path, SOCK_DGRAM, 0600);
  if (!sock.ok()) return sock.error();
  int on = 1;
  ::setsockopt(sock->get(), SOL_SOCKET, SO_PASSCRED, &on, sizeof on);
  if (owner.uid >= 0 && ::chown(path.c_str(), static_cast<uid_t>(owner.uid),
                                static_cast<gid_t>(owner.gid)) != 0) {
    return errnoError("chown " + path, errno);
  }
  return sock;
}

}  // namespace

Holder::Holder(Reactor& reactor, const SpawnRegistry& registry, std::string socketPath)
    : reactor_(reactor), registry_(registry), socketPath_(std::move(socketPath)) {}

Holder::~Holder() {
  if (listener_) reactor_.removeFd(listener_.get());
  if (client_) reactor_.removeFd(client_.get());
  if (signals_) reactor_.removeFd(signals_.get());
}

Status Holder::start() {
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
    return errnoError("holder: PR_SET_CHILD_SUBREAPER", errno);
  }
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, s);
  if (::sigprocmask(SIG_BLOCK, &set, nullptr) != 0) return errnoError("holder: sigprocmask", errno);
  ::signal(SIGPIPE, SIG_IGN);
  oomKillsSeen_ = ownOomKills();
  signals_.reset(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signals_) return errnoError("holder: signalfd", errno);
  if (auto st = reactor_.addFd(signals_.get(), EPOLLIN, [this](uint32_t) { onSignal(); });
      !st.ok()) {
    return st;
  }
  auto listener = listenUnix(socketPath_, SOCK_SEQPACKET, 0600);
  if (!listener.ok()) return listener.error().wrap("holder");
  listener_ = std::move(*listener);
  return reactor_.addFd(listener_.get(), EPOLLIN, [this](uint32_t) { onAccept(); });
}

void Holder::onAccept() {
  UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
  if (!fd) return;
  // Only our own user may drive the holder (the socket is 0600 too).
  auto uid = peerUid(fd.get());
  if (!uid.ok() || *uid != ::geteuid()) return;
  // A new ring2d replaces the old one, which can only be dead or dying.
  dropClient();
  client_ = std::move(fd);
  orphanedSinceNs_ = 0;
  if (orphanTimer_ != 0) timers_.cancel(orphanTimer_);
  orphanTimer_ = 0;
  (void)reactor_.addFd(client_.get(), EPOLLIN, [this](uint32_t ev) { onClient(ev); });
}

void Holder::dropClient() {
  outQueue_.clear();
  closedSlots_.clear();
  retiredFds_.clear();
  if (!client_) return;
  reactor_.removeFd(client_.get());
  client_.reset();
  armOrphanStop();
}

void Holder::armOrphanStop() {
  if (shuttingDown_) return;
  int64_t soonest = 0;
  for (const auto& [name, slot] : slots_) {
    const int64_t ms = slot->running && slot->spec ? slot->spec->orphanStopMs : 0;
    if (ms > 0 && (soonest == 0 || ms < soonest)) soonest = ms;
  }
  if (soonest == 0) return;
  orphanedSinceNs_ = monotonicNowNs();
  if (orphanTimer_ != 0) timers_.cancel(orphanTimer_);
  orphanTimer_ = timers_.after(soonest, [this] {
    orphanTimer_ = 0;
    stopOrphans();
  });
}

// Every process whose orphanStopMs has passed since the supervisor went gets its stop signal
// (its strategy signals the group; SIGKILL follows after its stopTimeoutMs); the others are
// looked at again when theirs passes.
void Holder::stopOrphans() {
  if (client_ || orphanedSinceNs_ == 0) return;
  const int64_t goneMs = (monotonicNowNs() - orphanedSinceNs_) / 1'000'000;
  int64_t next = 0;
  for (auto& [name, slot] : slots_) {
    if (!slot->running || !slot->spec || slot->spec->orphanStopMs <= 0) continue;
    const ProcessSpec& spec = *slot->spec;
    if (goneMs < spec.orphanStopMs) {
      const int64_t left = spec.orphanStopMs - goneMs;
      next = next == 0 ? left : std::min(next, left);
      continue;
    }
    std::fprintf(stderr,
                 "enjin-holder: process '%s': no supervisor for %lld ms (orphan_stop_ms %lld): "
                 "stopping it\n",
                 name.c_str(), static_cast<long long>(goneMs),
                 static_cast<long long>(spec.orphanStopMs));
    (void)signalSlot(*slot, spec.stopSignal);
    const pid_t pid = slot->pid;
    const uint64_t start = slot->startTime;
    const std::string slotName = name;
    timers_.after(std::max<int64_t>(spec.stopTimeoutMs, 1), [this, slotName, pid, start] {
      auto it = slots_.find(slotName);
      if (it == slots_.end() || !it->second->running || it->second->pid != pid ||
          it->second->startTime != start || client_) {
        return;
      }
      (void)signalSlot(*it->second, SIGKILL);
    });
  }
  if (next > 0) {
    orphanTimer_ = timers_.after(next, [this] {
      orphanTimer_ = 0;
      stopOrphans();
    });
  }
}

void Holder::onClient(uint32_t events) {
  if ((events & EPOLLOUT) != 0) {
    flushQueue();
    if (!client_) return;
  }
  std::string text;
  std::vector<UniqueFd> fds;  // a spawn's listening sockets; any others are closed
  for (;;) {
    fds.clear();  // recvWithFds appends: each message has only its own
    auto got = recvWithFds(client_.get(), text, fds);
    if (!got.ok()) {
      if (errno == EAGAIN) return;
      if (errno == EMSGSIZE) {
        send(proto::ErrorReply{"holder: request larger than 64 KiB dropped"});
        continue;
      }
      dropClient();
      return;
    }
    if (!*got) {  // ring2d went away: carry on, children keep running
      dropClient();
      return;
    }
    try {
      handle(text, fds);
    } catch (const std::exception& e) {
      // A request that cannot be served must never take the holder, and every child, down.
      send(proto::ErrorReply{std::string("holder: ") + e.what()});
    }
    if (!client_) return;
  }
}

void Holder::send(const std::string& text, const std::vector<int>& fds) {
  if (!client_) return;  // nobody to tell: the state stays in the slots for the next hello
  if (outQueue_.empty()) {
    if (sendWithFds(client_.get(), text, fds).ok()) return;
    if (errno != EAGAIN) return dropClient();
    // ring2d is behind (thousands of exits at once): wait for the socket to drain.
    (void)reactor_.modifyFd(client_.get(), EPOLLIN | EPOLLOUT);
  }
  outQueue_.push_back(Outgoing{text, fds});
}

void Holder::send(const proto::Reply& reply, const std::vector<int>& fds) {
  send(proto::encode(reply), fds);
}

void Holder::flushQueue() {
  while (!outQueue_.empty()) {
    const Outgoing& out = outQueue_.front();
    if (!sendWithFds(client_.get(), out.text, out.fds).ok()) {
      if (errno != EAGAIN) dropClient();
      return;
    }
    outQueue_.pop_front();
  }
  closedSlots_.clear();
  retiredFds_.clear();
  (void)reactor_.modifyFd(client_.get(), EPOLLIN);
}

void Holder::handle(const std::string& text, std::vector<UniqueFd>& fds) {
  std::string failedSpawn;
  auto request = proto::decodeRequest(text, &failedSpawn);
  if (!request.ok()) {
    const std::string error = "holder: " + request.error().message;
    if (!failedSpawn.empty()) return send(proto::SpawnFailed{failedSpawn, error, {}});
    return send(proto::ErrorReply{error});
  }
  struct Visitor {
    Holder& h;
    std::vector<UniqueFd>& fds;
    void operator()(const proto::Hello&) { h.opHello(); }
    void operator()(proto::Spawn& m) { h.opSpawn(m, fds); }
    void operator()(const proto::Respawn& m) {
      auto it = h.slots_.find(m.name);
      if (it == h.slots_.end() || !it->second->spec) {
        return h.send(proto::SpawnFailed{m.name, "holder: no spec held for '" + m.name + "'", {}});
      }
      h.spawnSlot(*it->second, {}, {}, false);
    }
    void operator()(const proto::Signal& m) { h.opSignal(m.name, m.signal, m.group); }
    void operator()(const proto::Close& m) { h.opClose(m.name); }
    void operator()(const proto::Shutdown&) {
      h.shuttingDown_ = true;
      h.maybeFinish();
    }
  };
  std::visit(Visitor{*this, fds}, *request);
}

void Holder::opHello() {
  for (auto& [name, slot] : slots_) {
    // A new ring2d takes back what the last one left running: re-adoption, the strategy's cue to
    // re-attach what it keeps per process. A failure is reported; the process runs on.
    if (slot->running && slot->spec) {
      auto strategy = registry_.find(slot->spec->strategy);
      Status st = strategy.ok() ? (*strategy)->recover(*slot->spec, {slot->pid, slot->startTime})
                                : Status(strategy.error());
      if (!st.ok()) {
        std::fprintf(stderr, "enjin-holder: process '%s': recover: %s\n", name.c_str(),
                     st.error().message.c_str());
      }
    }
    std::vector<int> fds{slot->outRead.get(), slot->errRead.get()};
    std::vector<FdRole> roles{FdRole::kOut, FdRole::kErr};
    if (slot->notify) {
      fds.push_back(slot->notify.get());
      roles.push_back(FdRole::kNotify);
    }
    // The listening sockets go back too: a restarted ring2d that lost its own copy (its socket
    // table came from a parent that died as well) takes them back by source.
    std::vector<std::string> sources;
    for (size_t i = 0; i < slot->listen.size() && slot->spec; ++i) {
      fds.push_back(slot->listen[i].get());
      roles.push_back(FdRole::kListen);
      sources.push_back(slot->spec->sockets[i].source);
    }
    proto::Slot msg{name,         slot->pid,          slot->startTime,  slot->running,
                    slot->lastExit, slot->exitReported, std::move(roles), std::move(sources),
                    slot->identity};
    send(msg, fds);
  }
  send(proto::HelloDone{});
}

void Holder::opSpawn(proto::Spawn& req, std::vector<UniqueFd>& received) {
  const std::string& name = req.name;
  std::vector<int> newFds;
  std::vector<FdRole> roles;
  // The output channels made for a new slot go with the failure too: later spawns of the name
  // find the slot and send none, and its output would never reach ring2d.
  auto fail = [&](const std::string& error) { send(proto::SpawnFailed{name, error, roles}, newFds); };
  // Checked before a slot is made: a spawn that lost its sockets on the way must not run without.
  if (received.size() != req.fds.size()) {
    return send(proto::SpawnFailed{name,
                                   "holder: process '" + name + "': " +
                                       std::to_string(req.fds.size()) + " listening sockets named, " +
                                       std::to_string(received.size()) + " attached",
                                   {}});
  }
  auto& slot = slots_[name];
  if (!slot) {
    slot = std::make_unique<Slot>();
    slot->name = name;
    Status st = makeOutputChannel(slot->outRead, slot->outWrite);
    if (st.ok()) st = makeOutputChannel(slot->errRead, slot->errWrite);
    if (!st.ok()) {
      slots_.erase(name);
      return fail(st.error().message);
    }
    newFds = {slot->outRead.get(), slot->errRead.get()};
    roles = {FdRole::kOut, FdRole::kErr};
  }
  if (slot->running) {
    return fail("process '" + name + "' is already running as pid " + std::to_string(slot->pid));
  }
  // Who the process runs as, resolved here, once per full spawn: for the notify socket's owner,
  // and for ring2d, whose exec checks run as the process does.
  auto strategy = registry_.find(req.spec.strategy);
  if (!strategy.ok()) return fail(strategy.error().message);
  auto identity = (*strategy)->execIn(req.spec);
  if (!identity.ok()) return fail(identity.error().message);
  slot->identity = std::move(*identity);
  // The notify socket follows the spec: made (or remade, for a new user) on a full spawn.
  if (req.notify) {
    auto sock = makeNotifySocket(*req.notify, *slot->identity);
    if (!sock.ok()) return fail(sock.error().message);
    slot->notify = std::move(*sock);
    newFds.push_back(slot->notify.get());
    roles.push_back(FdRole::kNotify);
  } else {
    slot->notify.reset();
  }
  // Only an exec check needs it beyond this point: 1000 processes without one keep (and send)
  // no environment copies.
  if (req.spec.health.kind != "exec") slot->identity.reset();
  slot->spec = std::move(req.spec);
  slot->request = SpawnRequest{};
  slot->request.spec = &*slot->spec;
  slot->request.stdoutFd = slot->outWrite.get();
  slot->request.stderrFd = slot->errWrite.get();
  slot->request.extraEnv = std::move(req.env);
  slot->request.defaultCwd = "/";
  // A full spawn brings the sockets its spec names now: the old ones are closed, once no queued
  // message (a slot of a hello) still carries them.
  if (!outQueue_.empty()) {
    for (auto& fd : slot->listen) retiredFds_.push_back(std::move(fd));
  }
  slot->listen = std::move(received);
  received.clear();
  for (const auto& fd : slot->listen) slot->request.listenFds.push_back(fd.get());
  spawnSlot(*slot, newFds, roles, true);
}

void Holder::spawnSlot(Slot& slot, const std::vector<int>& newFds, const std::vector<FdRole>& roles,
                       bool full) {
  if (slot.running) {
    return send(proto::SpawnFailed{slot.name,
                                   "process '" + slot.name + "' is already running as pid " +
                                       std::to_string(slot.pid),
                                   {}});
  }
  auto strategy = registry_.find(slot.spec->strategy);
  if (!strategy.ok()) return send(proto::SpawnFailed{slot.name, strategy.error().message, roles}, newFds);
  auto spawned = (*strategy)->spawn(slot.request);
  if (!spawned.ok()) return send(proto::SpawnFailed{slot.name, spawned.error().message, roles}, newFds);
  slot.pid = spawned->pid;
  slot.startTime = spawned->startTime;
  slot.running = true;
  slot.exitReported = false;
  byPid_[slot.pid] = &slot;
  // The pidfd is not needed: the holder is the parent and reaps by pid, so the pid cannot be
  // reused before the holder itself collects the exit.
  send(proto::Spawned{slot.name, slot.pid, slot.startTime, roles,
                      full ? slot.identity : std::nullopt},
       newFds);
}

void Holder::opSignal(const std::string& name, int signal, bool group) {
  auto it = slots_.find(name);
  if (it == slots_.end() || !it->second->running) return;
  Slot& slot = *it->second;
  // The leader is unreaped, so its pid, which is also the pgid, cannot have been reused.
  if (auto st = signalSlot(slot, signal, group); !st) {
    std::fprintf(stderr, "enjin-holder: process '%s': %s\n", slot.name.c_str(),
                 st.error().message.c_str());
  }
}

Status Holder::signalSlot(Slot& slot, int signal, bool group) {
  auto strategy = registry_.find(slot.spec ? slot.spec->strategy : std::string_view{});
  if (!strategy.ok()) return strategy.error();
  return (*strategy)->signal({slot.pid, slot.startTime}, signal, group);
}

void Holder::opClose(const std::string& name) {
  auto it = slots_.find(name);
  if (it == slots_.end() || it->second->running) return;
  // A queued message may still carry its fds: keep them open until the queue is sent.
  if (!outQueue_.empty()) closedSlots_.push_back(std::move(it->second));
  slots_.erase(it);
}

void Holder::onSignal() {
  signalfd_siginfo si;
  bool child = false;
  while (::read(signals_.get(), &si, sizeof si) == sizeof si) {
    if (si.ssi_signo == SIGCHLD) {
      child = true;
    } else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
      // The holder itself is being stopped (system shutdown): stop everything it holds.
      shuttingDown_ = true;
      for (auto& [name, slot] : slots_) {
        if (slot->running) (void)signalSlot(*slot, SIGTERM);
      }
      timers_.after(kShutdownKillAfterMs, [this] {
        for (auto& [name, slot] : slots_) {
          if (slot->running) {
            (void)signalSlot(*slot, SIGKILL);
          }
        }
      });
    }
  }
  if (child) reap();
  maybeFinish();
}

void Holder::reap() {
  for (;;) {
    siginfo_t info{};
    // Look before reaping: while the leader is a zombie its pid still names its process group,
    // so whatever is left of the group can be killed without any chance of a reused pid.
    if (::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == 0) return;
    auto it = byPid_.find(info.si_pid);
    if (it != byPid_.end()) {
      // As systemd's KillMode=control-group: a stray grandchild must not outlive its process
      // (holding a port the next run needs, or writing to its log).
      (void)signalSlot(*it->second, SIGKILL);
    }
    siginfo_t reaped{};
    ::waitid(P_PID, static_cast<id_t>(info.si_pid), &reaped, WEXITED | WNOHANG);
    if (it == byPid_.end()) continue;  // an orphaned grandchild: reaped, nothing to report
    Slot& slot = *it->second;
    byPid_.erase(it);
    slot.running = false;
    if (slot.spec) {
      if (auto strategy = registry_.find(slot.spec->strategy); strategy.ok()) {
        (*strategy)->cleanup(*slot.spec, {slot.pid, slot.startTime});
      }
    }
    slot.lastExit = proto::exitFromSiginfo(info);
    // SIGKILL, or 128 + SIGKILL from a sandbox's PID 1 whose application got it.
    const bool killed = (slot.lastExit->kind == ExitInfo::Kind::kSignaled &&
                         slot.lastExit->signal == SIGKILL) ||
                        (slot.lastExit->kind == ExitInfo::Kind::kExited &&
                         slot.lastExit->code == 128 + SIGKILL);
    if (killed && oomKillsSeen_) {
      const auto now = ownOomKills();
      slot.lastExit->oomKilled = now && *now > *oomKillsSeen_;
      if (slot.lastExit->oomKilled) ++*oomKillsSeen_;
    }
    slot.exitReported = client_.valid();
    send(proto::Exited{slot.name, slot.pid, *slot.lastExit});
  }
}

void Holder::maybeFinish() {
  if (!shuttingDown_ || finished_) return;
  for (const auto& [name, slot] : slots_) {
    if (slot->running) return;
  }
  send(proto::Bye{});
  finished_ = true;
  reactor_.stop();
}

}  // namespace enjin::supervise
