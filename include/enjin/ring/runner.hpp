// The life of a ring daemon around its own work, shared by ring0d, ring1d and ring2d: the log,
// the signals, the fd limit, the state dir and its lock, the reactor, the ZeroMQ context, the
// random source, the link to a parent (ring1d, ring2d as a node), the readiness beat to
// whoever started the daemon, and an orderly stop. What a daemon supervises (nodes, or
// processes) and how it answers its parent stays with it (daemon.cpp, process_daemon.cpp).
//
//   auto runner = DaemonRunner::start("ring2d", stateDir, "info");  // before any thread
//   ... build the supervisor on runner->reactor() ...
//   runner->setStopper("every process", [&](auto done) { supervisor.stopAll(done); });
//   runner->setReload(reload);                                      // SIGHUP
//   runner->linkToParent(cfg, handlers, applied.digest);            // as a node
//   runner->startNotifyBeat(cfg.heartbeatMs);
//   return runner->run("supervising ...");                          // the exit code
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "enjin/base/result.hpp"
#include "enjin/ring/parent_link.hpp"

namespace enjin {
class Clock;
class Reactor;
}  // namespace enjin

namespace enjin::bus {
class ZapHandler;
}

namespace enjin::ring {

// The exit code of a daemon whose key its parent revoked: its parent must not restart it.
inline constexpr int kExitRevoked = 125;

class DaemonRunner {
 public:
  // Sets up the default logger (named `name`, at `logLevel`), blocks SIGTERM, SIGINT and SIGHUP
  // (they arrive through a signalfd in run(); blocked before any thread, ZeroMQ's included,
  // exists, so every thread inherits the mask), ignores SIGPIPE, raises the fd limit
  // (raiseFdLimit), checks and locks `stateDir` (held until the runner is destroyed) and
  // creates the reactor. Call it before any thread is started.
  static Result<std::unique_ptr<DaemonRunner>> start(const std::string& name,
                                                     const std::string& stateDir,
                                                     const std::string& logLevel);
  ~DaemonRunner();
  DaemonRunner(const DaemonRunner&) = delete;
  DaemonRunner& operator=(const DaemonRunner&) = delete;

  const std::string& name() const;
  const std::string& stateDir() const;
  Reactor& reactor();
  const Clock& clock() const;
  // One ZeroMQ context for the daemon, created on first use (a standalone ring2d that
  // publishes nothing starts no ZeroMQ thread). Outlives every socket made before the runner
  // is destroyed.
  zmq::context_t& zmq();
  // The ZAP handler of that context (enjin/bus/curve.hpp), opened on first use and served on
  // the reactor: the trust stores it reads belong to the reactor thread, so a key removed there
  // is refused at the very next handshake, without locks. Outlives every socket made before
  // the runner is destroyed.
  Result<bus::ZapHandler*> zap();
  // Uniform 64-bit draws (backoff jitter, fault injection); valid while the runner lives.
  std::function<uint64_t()> random();
  // faultDropFraction(), read once (and logged when not 0).
  double dropFraction() const;

  // What stop() does: `stopAll(done)` stops everything the daemon runs and then calls `done`,
  // which ends run(). `what` is for the log ("stopping every node").
  void setStopper(std::string what, std::function<void(std::function<void()> done)> stopAll);
  // Stops once: STOPPING=1 to whoever started the daemon, the stopper, then run() returns
  // `exitCode`. Later calls do nothing.
  void stop(int exitCode);
  // What SIGHUP does; without one, SIGHUP is ignored.
  void setReload(std::function<Status()> reload);

  // As a node: opens the link to the parent named in `config`, with `handlers` (onRevoked
  // defaults to stop(kExitRevoked)), telling it the digest of the spec in force.
  Status linkToParent(const DaemonConfig& config, ParentLink::Handlers handlers,
                      const std::string& appliedDigest);
  // The parent link, if linkToParent() made one.
  ParentLink* link();
  // Something the parent observes changed: republish soon (nothing without a link).
  void changed();

  // READY=1 (with STATUS=`status` when given) to whoever started the daemon, once; from then on
  // ready() holds and every beat repeats it.
  void notifyReady(const std::string& status = "");
  bool ready() const;
  // Starts the beat (startNotifyBeat): WATCHDOG=1, and READY=1 again once ready().
  void startNotifyBeat(int64_t nodeHeartbeatMs);

  // Logs `runningMessage`, turns the reactor until stop() completes (SIGTERM or SIGINT call
  // stop(0); SIGHUP the reload), closes the parent link and returns the exit code.
  int run(const std::string& runningMessage);

 private:
  class Impl;
  explicit DaemonRunner(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace enjin::ring
