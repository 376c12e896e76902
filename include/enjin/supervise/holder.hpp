// The holder: a small long-lived process that owns what must outlive ring2d. It forks the
// supervised processes (so it is their parent and their subreaper), keeps their output sockets and
// notify sockets open, reaps them, and keeps each one's exit status until a ring2d asks. ring2d
// is the brain (policy, readiness, health, logs); the holder only does what it is told and
// reports exits. When ring2d dies, nothing under it notices: children keep running, lines they
// write wait in the sockets, exits are collected, and the next ring2d picks everything up.
//
// Protocol: typed messages on a SOCK_SEQPACKET unix socket (0600), fds attached with SCM_RIGHTS;
// see holder_protocol.hpp.
#pragma once

#include <sys/types.h>

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "enjin/base/result.hpp"
#include "enjin/base/unique_fd.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/supervise/holder_protocol.hpp"
#include "enjin/supervise/spawn.hpp"

namespace enjin::supervise {

// Set by ring2d in the environment the holder inherits: the soft RLIMIT_NOFILE ring2d was started
// with, before it raised its own. The holder makes it the default of every process it spawns
// (SpawnDefaults::nofileSoft) and keeps its own raised limit.
inline constexpr const char* kChildNofileEnv = "ENJIN_CHILD_NOFILE";

class Holder {
 public:
  // `reactor` and `registry` must outlive the holder.
  Holder(Reactor& reactor, const SpawnRegistry& registry, std::string socketPath);
  ~Holder();

  // Becomes the subreaper, blocks and watches SIGCHLD/SIGTERM/SIGINT through a signalfd, and
  // listens on the socket.
  Status start();
  // True once the holder was told to shut down (or terminated), nothing runs any more and every
  // queued message went out (or ring2d went away).
  bool finished() const { return finished_ && outQueue_.empty(); }

 private:
  struct Slot;
  void onAccept();
  void onClient(uint32_t events);
  void onSignal();
  void reap();
  // `fds`: what came with the request (a spawn's listening sockets); unused ones are closed.
  void handle(const std::string& text, std::vector<UniqueFd>& fds);
  // Sends to ring2d, or queues (in order) while its socket is full: a burst of exits or spawns
  // must not cost the connection. `fds` must stay open until sent: they are slot fds, and
  // opClose keeps a closed slot alive while anything is queued.
  void send(const std::string& text, const std::vector<int>& fds = {});
  void flushQueue();
  void dropClient();
  void maybeFinish();

  void send(const holder_proto::Reply& reply, const std::vector<int>& fds = {});
  void opHello();
  void opSpawn(holder_proto::Spawn& request, std::vector<UniqueFd>& fds);
  // Spawns from what the slot holds; `newFds` (with their `roles`) ride along, and after a
  // `full` spawn (a new spec) the identity its checks run as.
  void spawnSlot(Slot& slot, const std::vector<int>& newFds,
                 const std::vector<holder_proto::FdRole>& roles, bool full);
  void opSignal(const std::string& name, int signal, bool group);
  // Through the slot's spawn strategy, which knows how its processes are signalled.
  Status signalSlot(Slot& slot, int signal, bool group = true);
  void opClose(const std::string& name);
  // No supervisor is connected: arms the stop of the processes whose spec says orphanStopMs.
  void armOrphanStop();
  void stopOrphans();
  Reactor& reactor_;
  OwnedTimers timers_{reactor_};  // cancelled with the holder
  const SpawnRegistry& registry_;
  std::string socketPath_;
  UniqueFd listener_;
  UniqueFd client_;
  UniqueFd signals_;
  std::map<std::string, std::unique_ptr<Slot>> slots_;
  std::map<pid_t, Slot*> byPid_;
  // The OOM kills of this holder's cgroup (a tenant node's) accounted for so far: each kill the
  // count shows beyond it is given to the next child that dies of SIGKILL. Read at start and at
  // such deaths only, never on the spawn path. Unset: the cgroup has no such count.
  std::optional<uint64_t> oomKillsSeen_;
  struct Outgoing {
    std::string text;
    std::vector<int> fds;  // not owned: a slot's (see send)
  };
  std::deque<Outgoing> outQueue_;
  std::vector<std::unique_ptr<Slot>> closedSlots_;  // closed while messages were queued
  std::vector<UniqueFd> retiredFds_;  // listening sockets replaced while messages were queued
  bool shuttingDown_ = false;
  bool finished_ = false;
  Reactor::TimerId orphanTimer_ = 0;
  int64_t orphanedSinceNs_ = 0;  // when the last supervisor went (0: one is connected)
};

// What a supervisor needs of its holder: messages both ways (holder_protocol.hpp) and an fd to
// wait on. HolderClient is the real one; tests drive the supervisor through a fake.
class HolderConnection {
 public:
  virtual ~HolderConnection() = default;
  // Readable when a message waits (and, while queued(), watched for writability).
  virtual int fd() const = 0;
  // True when this connection started the holder: what a previous state file says still runs
  // was orphaned by a holder that died.
  virtual bool launched() const = 0;
  // The holder's pidfd when this process launched it (invalid otherwise), for the caller to
  // watch and reap it.
  virtual UniqueFd takeLaunchedPidfd() = 0;
  // Sends, or queues (in order) while the socket is full: a start or a respawn of thousands of
  // processes outruns the holder. An error only when the holder went.
  virtual Status send(const std::string& message) = 0;
  // The same with fds attached (a spawn's listening sockets; the caller keeps its own): a
  // message queued keeps copies of them until it is sent. The default carries none and refuses
  // a message that has some.
  virtual Status sendFds(const std::string& message, const std::vector<int>& fds) {
    if (fds.empty()) return send(message);
    return Error{"this holder connection cannot carry fds"};
  }
  // Messages wait in the queue: the caller watches fd() for EPOLLOUT and then calls flush().
  virtual bool queued() const = 0;
  virtual Status flush() = 0;
  // One waiting message and its fds; false when none is waiting; an error when the holder went.
  virtual Result<bool> receive(std::string& message, std::vector<UniqueFd>& fds) = 0;
};

// The ring2d side of the protocol, over the holder's socket.
class HolderClient final : public HolderConnection {
 public:
  // Connects to the holder at `socketPath`, launching `holderExe` first if none answers. A
  // holder launched here is this process's child; `launchedPidfd` then watches it.
  static Result<std::unique_ptr<HolderClient>> connectOrLaunch(const std::string& socketPath,
                                                               const std::string& holderExe,
                                                               const std::string& logPath);
  int fd() const override { return socket_.get(); }
  UniqueFd takeLaunchedPidfd() override { return std::move(launchedPidfd_); }
  bool launched() const override { return launched_; }
  Status send(const std::string& message) override { return sendFds(message, {}); }
  Status sendFds(const std::string& message, const std::vector<int>& fds) override;
  bool queued() const override { return !queue_.empty(); }
  Status flush() override;
  Result<bool> receive(std::string& message, std::vector<UniqueFd>& fds) override;

 private:
  HolderClient(UniqueFd socket, UniqueFd pidfd, bool launched)
      : socket_(std::move(socket)), launchedPidfd_(std::move(pidfd)), launched_(launched) {}
  UniqueFd socket_;
  UniqueFd launchedPidfd_;
  bool launched_;
  struct Queued {
    std::string text;
    std::vector<UniqueFd> fds;  // copies, so the caller may close its own meanwhile
  };
  std::deque<Queued> queue_;
};

}  // namespace enjin::supervise
