// A holder that forks nothing: it stands in for enjin-holder behind the HolderConnection seam, so
// a Supervisor can be driven on a FakeClock and a test sees every request the engine sends, in
// order, and decides what the "processes" do.
//
// It answers as the real holder (src/supervise/holder.cpp) does:
//   hello          -> a slot for each preload()ed process, then hello_done
//   spawn          -> spawned with a fresh pid; the first spawn of a name also carries the read
//                     ends of an out and an err stream socket, and every full spawn that names a
//                     notify path a datagram socket with SO_PASSCRED (roles out, err[, notify])
//   respawn        -> spawned, no fds; spawn_failed when it holds no spec for the name
//   signal         -> no reply; a signal the test did not ignore() kills the process at once
//                     (an exited with that signal follows), an ignored one does nothing
//   shutdown       -> bye, once nothing runs
// failSpawns() turns the next spawns of a name into spawn_failed, exit() ends a process, hold()
// keeps replies back until release().
//
// Replies wait in a queue; fd() is an eventfd that counts them, so the supervisor's reactor wakes
// exactly when one waits. The fake must outlive the Supervisor it is handed to.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "enjin/base/result.hpp"
#include "enjin/base/unique_fd.hpp"
#include "enjin/supervise/holder.hpp"
#include "enjin/supervise/holder_protocol.hpp"

namespace enjin::testing {

class FakeHolder {
 public:
  using Request = supervise::holder_proto::Request;
  using Reply = supervise::holder_proto::Reply;
  using ExitInfo = supervise::ExitInfo;

  FakeHolder() : event_(::eventfd(0, EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC)) {}

  // For SupervisorOptions::connectHolder. The connection forwards to this fake.
  std::function<Result<std::unique_ptr<supervise::HolderConnection>>()> connector() {
    return [this]() -> Result<std::unique_ptr<supervise::HolderConnection>> {
      return std::unique_ptr<supervise::HolderConnection>(new Connection(*this));
    };
  }

  // --- what the supervisor asked ---------------------------------------------------------------
  // Every request, decoded, in the order it was sent.
  const std::vector<Request>& requests() const { return requests_; }
  // The requests sent since the last call, one short line each ("hello", "spawn a",
  // "respawn a", "signal a TERM", "close a", "shutdown"), to compare with EXPECT_EQ.
  std::vector<std::string> take() { return std::exchange(log_, {}); }

  // --- scripting ---------------------------------------------------------------------------------
  // The next `count` spawns or respawns of `name` fail (spawn_failed) instead.
  void failSpawns(const std::string& name, int count) { failures_[name] = count; }
  // Processes survive this signal (a stop then has to escalate).
  void ignore(int signal) { ignored_.insert(signal); }
  // Spawns of `name` report this test process's pid, so notify() datagrams, which carry the
  // sender's credentials, count as that process's.
  void useOwnPid(const std::string& name) { ownPid_.insert(name); }
  // The holder never answers shutdown (a holder that hangs on its way out).
  void neverSayBye() { silentShutdown_ = true; }
  // Replies are kept back until release(): a spawn (or anything else) still on its way.
  void hold() { holding_ = true; }
  void release() {
    holding_ = false;
    while (!held_.empty()) {
      out_.push_back(std::move(held_.front()));
      held_.pop_front();
      const uint64_t one = 1;
      (void)::write(event_.get(), &one, sizeof one);
    }
  }

  // Before the supervisor starts: the holder already holds `name`, left by an earlier ring2d,
  // running or (with `exit`) ended; `exitReported`: that ring2d saw the exit. Hello reports it
  // as a slot with its out and err streams.
  void preload(const std::string& name, std::optional<ExitInfo> exit = std::nullopt,
               bool exitReported = false) {
    Slot& slot = slots_[name];
    slot.pid = nextPid_++;
    slot.running = !exit.has_value();
    slot.hasSpec = true;
    slot.lastExit = exit;
    slot.exitReported = exitReported;
    slot.outRead = streamPair(slot.outWrite);
    slot.errRead = streamPair(slot.errWrite);
  }

  // The current (or last) pid of `name`; 0 if it was never spawned.
  int pid(const std::string& name) const {
    auto it = slots_.find(name);
    return it == slots_.end() ? 0 : it->second.pid;
  }
  bool running(const std::string& name) const {
    auto it = slots_.find(name);
    return it != slots_.end() && it->second.running;
  }

  // `name` ends: an exited reply waits for the supervisor.
  void exit(const std::string& name, ExitInfo how) {
    Slot& slot = slots_.at(name);
    if (!slot.running) return;
    slot.running = false;
    queue(supervise::holder_proto::Exited{name, slot.pid, how});
    if (shuttingDown_) maybeBye();
  }
  void exitCode(const std::string& name, int code) {
    ExitInfo e;
    e.kind = ExitInfo::Kind::kExited;
    e.code = code;
    exit(name, e);
  }
  void exitSignal(const std::string& name, int signal) {
    ExitInfo e;
    e.kind = ExitInfo::Kind::kSignaled;
    e.signal = signal;
    exit(name, e);
  }

  // Sends `text` on `name`'s notify socket, as its process would (see useOwnPid).
  bool notify(const std::string& name, const std::string& text) {
    auto it = slots_.find(name);
    if (it == slots_.end() || !it->second.notifyWrite) return false;
    return ::send(it->second.notifyWrite.get(), text.data(), text.size(), 0) ==
           static_cast<ssize_t>(text.size());
  }
  // Writes to `name`'s stdout, as its process would.
  bool writeOut(const std::string& name, const std::string& text) {
    auto it = slots_.find(name);
    if (it == slots_.end()) return false;
    return ::write(it->second.outWrite.get(), text.data(), text.size()) ==
           static_cast<ssize_t>(text.size());
  }

 private:
  struct Slot {
    int pid = 0;
    bool running = false;
    bool hasSpec = false;
    UniqueFd outWrite, errWrite, notifyWrite;  // the process's ends
    UniqueFd outRead, errRead;                 // kept only for a preloaded slot's hello
    std::optional<ExitInfo> lastExit;
    bool exitReported = false;
  };
  struct Outgoing {
    std::string text;
    std::vector<UniqueFd> fds;
  };

  class Connection final : public supervise::HolderConnection {
   public:
    explicit Connection(FakeHolder& fake) : fake_(fake) {}
    int fd() const override { return fake_.event_.get(); }
    bool launched() const override { return false; }
    UniqueFd takeLaunchedPidfd() override { return {}; }
    Status send(const std::string& message) override {
      fake_.handle(message);
      return {};
    }
    bool queued() const override { return false; }
    Status flush() override { return {}; }
    Result<bool> receive(std::string& message, std::vector<UniqueFd>& fds) override {
      if (fake_.out_.empty()) return false;
      uint64_t one;
      (void)::read(fake_.event_.get(), &one, sizeof one);
      message = std::move(fake_.out_.front().text);
      fds = std::move(fake_.out_.front().fds);
      fake_.out_.pop_front();
      return true;
    }

   private:
    FakeHolder& fake_;
  };

  void queue(const Reply& reply, std::vector<UniqueFd> fds = {}) {
    if (holding_) {
      held_.push_back({supervise::holder_proto::encode(reply), std::move(fds)});
      return;
    }
    out_.push_back({supervise::holder_proto::encode(reply), std::move(fds)});
    const uint64_t one = 1;
    (void)::write(event_.get(), &one, sizeof one);
  }

  void handle(const std::string& text) {
    namespace proto = supervise::holder_proto;
    auto decoded = proto::decodeRequest(text);
    if (!decoded.ok()) {
      log_.push_back("undecodable: " + decoded.error().message);
      return queue(proto::ErrorReply{decoded.error().message});
    }
    requests_.push_back(*decoded);
    const Request& request = requests_.back();
    if (std::holds_alternative<proto::Hello>(request)) {
      log_.push_back("hello");
      for (auto& [name, slot] : slots_) {
        if (!slot.outRead) continue;
        std::vector<UniqueFd> fds;
        fds.emplace_back(::fcntl(slot.outRead.get(), F_DUPFD_CLOEXEC, 0));
        fds.emplace_back(::fcntl(slot.errRead.get(), F_DUPFD_CLOEXEC, 0));
        queue(proto::Slot{name,
                          slot.pid,
                          1000 + static_cast<uint64_t>(slot.pid),
                          slot.running,
                          slot.lastExit,
                          slot.exitReported,
                          {proto::FdRole::kOut, proto::FdRole::kErr},
                          {},
                          supervise::ExecIdentity{}},
              std::move(fds));
      }
      queue(proto::HelloDone{});
    } else if (const auto* spawnReq = std::get_if<proto::Spawn>(&request)) {
      log_.push_back("spawn " + spawnReq->name);
      spawn(spawnReq->name, true, spawnReq->notify.has_value());
    } else if (const auto* respawnReq = std::get_if<proto::Respawn>(&request)) {
      log_.push_back("respawn " + respawnReq->name);
      auto it = slots_.find(respawnReq->name);
      if (it == slots_.end() || !it->second.hasSpec) {
        return queue(proto::SpawnFailed{
            respawnReq->name, "holder: no spec held for '" + respawnReq->name + "'", {}});
      }
      spawn(respawnReq->name, false, false);
    } else if (const auto* signalReq = std::get_if<proto::Signal>(&request)) {
      const char* abbrev = ::sigabbrev_np(signalReq->signal);
      log_.push_back("signal " + signalReq->name + " " +
                     (abbrev ? abbrev : std::to_string(signalReq->signal)) +
                     (signalReq->group ? "" : " (pid only)"));
      if (!ignored_.contains(signalReq->signal) && running(signalReq->name))
        exitSignal(signalReq->name, signalReq->signal);
    } else if (const auto* closeReq = std::get_if<proto::Close>(&request)) {
      log_.push_back("close " + closeReq->name);
      slots_.erase(closeReq->name);
    } else if (std::holds_alternative<proto::Shutdown>(request)) {
      log_.push_back("shutdown");
      shuttingDown_ = true;
      maybeBye();
    }
  }

  void spawn(const std::string& name, bool full, bool withNotify) {
    namespace proto = supervise::holder_proto;
    auto [it, created] = slots_.try_emplace(name);
    Slot& slot = it->second;
    std::vector<UniqueFd> fds;
    std::vector<proto::FdRole> roles;
    if (created) {
      fds.push_back(streamPair(slot.outWrite));
      fds.push_back(streamPair(slot.errWrite));
      roles = {proto::FdRole::kOut, proto::FdRole::kErr};
    }
    if (full) {
      slot.notifyWrite.reset();
      if (withNotify) {
        int sv[2];
        ::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv);
        int on = 1;
        ::setsockopt(sv[0], SOL_SOCKET, SO_PASSCRED, &on, sizeof on);
        fds.emplace_back(sv[0]);
        slot.notifyWrite.reset(sv[1]);
        roles.push_back(proto::FdRole::kNotify);
      }
      slot.hasSpec = true;
    }
    if (slot.running) {
      return queue(proto::SpawnFailed{name, "process '" + name + "' is already running", roles},
                   std::move(fds));
    }
    if (auto f = failures_.find(name); f != failures_.end() && f->second > 0) {
      --f->second;
      return queue(proto::SpawnFailed{name, "exec: No such file or directory", roles},
                   std::move(fds));
    }
    slot.pid = ownPid_.contains(name) ? static_cast<int>(::getpid()) : nextPid_++;
    slot.running = true;
    proto::Spawned reply{name, slot.pid, 1000 + static_cast<uint64_t>(slot.pid), roles,
                         std::nullopt};
    if (full) reply.identity = supervise::ExecIdentity{};
    queue(reply, std::move(fds));
  }

  // A connected stream pair; returns the read end, keeps the write end in `writeEnd`.
  static UniqueFd streamPair(UniqueFd& writeEnd) {
    int sv[2];
    ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
    writeEnd.reset(sv[1]);
    return UniqueFd(sv[0]);
  }

  void maybeBye() {
    for (const auto& [name, slot] : slots_) {
      if (slot.running) return;
    }
    if (byeSent_ || silentShutdown_) return;
    byeSent_ = true;
    queue(supervise::holder_proto::Bye{});
  }

  UniqueFd event_;
  std::deque<Outgoing> out_;
  std::deque<Outgoing> held_;
  bool holding_ = false;
  bool silentShutdown_ = false;
  std::vector<Request> requests_;
  std::vector<std::string> log_;
  std::map<std::string, Slot> slots_;
  std::map<std::string, int> failures_;
  std::set<int> ignored_;
  std::set<std::string> ownPid_;
  int nextPid_ = 1000;
  bool shuttingDown_ = false;
  bool byeSent_ = false;
};

}  // namespace enjin::testing
