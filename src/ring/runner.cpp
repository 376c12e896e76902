#include "enjin/ring/runner.hpp"

#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <random>
#include <zmq.hpp>

#include "enjin/base/clock.hpp"
#include "enjin/base/systemd.hpp"
#include "enjin/base/unique_fd.hpp"
#include "enjin/bus/curve.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/ring/daemon.hpp"

namespace enjin::ring {

class DaemonRunner::Impl {
 public:
  std::string name;
  std::string stateDir;
  sigset_t signals;
  UniqueFd lock;  // the state dir's flock, held for the life of the runner
  SystemClock clock;
  std::unique_ptr<Reactor> reactor;
  std::unique_ptr<zmq::context_t> zmq;  // destroyed before the reactor, after every socket
  std::unique_ptr<bus::ZapHandler> zap;  // after every CURVE server socket, before the context
  std::mt19937_64 rng;
  double drop = 0;
  std::unique_ptr<ParentLink> link;

  std::string stopWhat;
  std::function<void(std::function<void()>)> stopAll;
  std::function<Status()> reload;
  bool stopping = false;
  int exitCode = 0;
  bool ready = false;

  ~Impl() {
    // The link's sockets go before the context they belong to, and its timers before the
    // reactor that holds them.
    link.reset();
    if (zap) {
      for (zmq::socket_t* s : zap->sockets()) reactor->removeSocket(*s);
      zap.reset();
    }
    zmq.reset();
  }
};

Result<std::unique_ptr<DaemonRunner>> DaemonRunner::start(const std::string& name,
                                                         const std::string& stateDir,
                                                         const std::string& logLevel) {
  spdlog::set_default_logger(spdlog::stderr_color_mt(name));
  spdlog::set_level(spdlog::level::from_str(logLevel));

  auto impl = std::make_unique<Impl>();
  impl->name = name;
  impl->stateDir = stateDir;
  // Signals arrive through a signalfd on the reactor. They are blocked before any thread
  // (ZeroMQ's) exists, so every thread inherits the mask.
  sigemptyset(&impl->signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&impl->signals, s);
  ::sigprocmask(SIG_BLOCK, &impl->signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  // Every supervised process costs a few fds (log pipes, notify socket): use the hard limit.
  // The processes get the soft limit the daemon was started with: the holder, which spawns
  // them, reads it from its environment (kChildNofileEnv). A holder already running keeps the
  // value it was started with.
  raiseFdLimit();

  if (auto st = checkStateDir(stateDir); !st.ok()) return st.error();
  auto lock = lockStateDir(stateDir, name);
  if (!lock.ok()) return lock.error();
  impl->lock = std::move(*lock);

  auto reactor = Reactor::create(impl->clock);
  if (!reactor.ok()) return reactor.error();
  impl->reactor = std::move(*reactor);

  std::random_device seed;
  impl->rng.seed((uint64_t{seed()} << 32) | seed());
  impl->drop = faultDropFraction();
  if (impl->drop > 0) {
    spdlog::warn("{}: fault injection: dropping {} of received bus messages", name, impl->drop);
  }
  return std::unique_ptr<DaemonRunner>(new DaemonRunner(std::move(impl)));
}

DaemonRunner::DaemonRunner(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DaemonRunner::~DaemonRunner() = default;

const std::string& DaemonRunner::name() const { return impl_->name; }
const std::string& DaemonRunner::stateDir() const { return impl_->stateDir; }
Reactor& DaemonRunner::reactor() { return *impl_->reactor; }
const Clock& DaemonRunner::clock() const { return impl_->clock; }

zmq::context_t& DaemonRunner::zmq() {
  if (!impl_->zmq) impl_->zmq = std::make_unique<zmq::context_t>(1);
  return *impl_->zmq;
}

Result<bus::ZapHandler*> DaemonRunner::zap() {
  if (!impl_->zap) {
    auto opened = bus::ZapHandler::open(zmq());
    if (!opened.ok()) return opened.error();
    impl_->zap = std::move(*opened);
    bus::ZapHandler* handler = impl_->zap.get();
    Reactor* r = impl_->reactor.get();
    handler->setOnNewSocket(
        [r, handler](zmq::socket_t& s) { r->addSocket(s, [handler] { handler->serve(); }); });
  }
  return impl_->zap.get();
}

std::function<uint64_t()> DaemonRunner::random() {
  return [impl = impl_.get()] { return impl->rng(); };
}

double DaemonRunner::dropFraction() const { return impl_->drop; }

void DaemonRunner::setStopper(std::string what,
                              std::function<void(std::function<void()>)> stopAll) {
  impl_->stopWhat = std::move(what);
  impl_->stopAll = std::move(stopAll);
}

void DaemonRunner::stop(int exitCode) {
  Impl& d = *impl_;
  if (d.stopping) return;
  d.stopping = true;
  d.exitCode = exitCode;
  spdlog::info("{}: stopping {}", d.name, d.stopWhat);
  (void)systemd::notify("STOPPING=1");
  Reactor& r = *d.reactor;
  if (d.stopAll) {
    d.stopAll([&r] { r.stop(); });
  } else {
    r.stop();
  }
}

void DaemonRunner::setReload(std::function<Status()> reload) { impl_->reload = std::move(reload); }

Status DaemonRunner::linkToParent(const DaemonConfig& config, ParentLink::Handlers handlers,
                                  const std::string& appliedDigest) {
  if (!handlers.onRevoked) handlers.onRevoked = [this] { stop(kExitRevoked); };
  auto opened = ParentLink::open(reactor(), impl_->clock, zmq(), config, std::move(handlers),
                                 impl_->drop, random());
  if (!opened.ok()) return opened.error();
  impl_->link = std::move(*opened);
  impl_->link->setApplied(appliedDigest);
  return {};
}

ParentLink* DaemonRunner::link() { return impl_->link.get(); }

void DaemonRunner::changed() {
  if (impl_->link) impl_->link->changed();
}

void DaemonRunner::notifyReady(const std::string& status) {
  if (impl_->ready) return;
  impl_->ready = true;
  (void)systemd::notify(status.empty() ? std::string("READY=1") : "READY=1\nSTATUS=" + status);
}

bool DaemonRunner::ready() const { return impl_->ready; }

void DaemonRunner::startNotifyBeat(int64_t nodeHeartbeatMs) {
  ring::startNotifyBeat(reactor(), nodeHeartbeatMs, [impl = impl_.get()] { return impl->ready; });
}

int DaemonRunner::run(const std::string& runningMessage) {
  Impl& d = *impl_;
  UniqueFd sigfd(::signalfd(-1, &d.signals, SFD_CLOEXEC | SFD_NONBLOCK));
  (void)d.reactor->addFd(sigfd.get(), EPOLLIN, [this, &d, fd = sigfd.get()](uint32_t) {
    signalfd_siginfo si;
    while (::read(fd, &si, sizeof si) == sizeof si) {
      if (si.ssi_signo != SIGHUP) {
        stop(0);
      } else if (d.reload) {
        (void)d.reload();
      }
    }
  });
  spdlog::info("{}: {}", d.name, runningMessage);
  d.reactor->run();
  d.reactor->removeFd(sigfd.get());
  d.link.reset();
  spdlog::info("{}: stopped", d.name);
  return d.exitCode;
}

}  // namespace enjin::ring
