// ring2d: one customer environment; supervises the processes of a spec file.
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sodium.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <zmq.hpp>

#include "enjin/base/clock.hpp"
#include "enjin/base/unique_fd.hpp"
#include "enjin/bus/publisher.hpp"
#include "enjin/crypto/keys.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/supervise/control_server.hpp"
#include "enjin/supervise/holder.hpp"
#include "enjin/supervise/spawn.hpp"
#include "enjin/supervise/spec_file.hpp"
#include "enjin/supervise/supervisor.hpp"

namespace {

using namespace enjin;

std::string defaultStateDir() {
  if (::geteuid() == 0) return "/var/lib/enjin/ring2d";
  const char* home = ::getenv("HOME");
  return std::string(home ? home : "/tmp") + "/.local/state/enjin/ring2d";
}

std::string besideSelf(const std::string& name) {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? name : (self.parent_path() / name).string();
}

// The default node name: the hostname's first label ("web-3" of "web-3.example.com"), since the
// node name is one segment of an observation topic.
std::string nodeFromHostname() {
  char host[HOST_NAME_MAX + 1] = {};
  if (::gethostname(host, sizeof host - 1) != 0) return "";
  const std::string name = host;
  return name.substr(0, name.find('.'));
}

// The state dir holds sockets that control every supervised process and the files ring2d
// trusts (state.json, the seq file): it must be this user's alone. Created 0700 if missing;
// an existing dir owned by someone else, or writable by group or others, is refused rather
// than fixed, since someone else may already have put something in it.
Status checkStateDir(const std::string& dir) {
  std::error_code ec;
  const bool created = std::filesystem::create_directories(dir, ec);
  if (ec) return Error{"cannot create state dir " + dir + ": " + ec.message()};
  if (created && ::chmod(dir.c_str(), 0700) != 0) {
    return errnoError("cannot use state dir " + dir + ": chmod 0700", errno);
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return errnoError("cannot use state dir " + dir + ": stat", errno);
  if (!S_ISDIR(st.st_mode)) return Error{"cannot use state dir " + dir + ": not a directory"};
  if (st.st_uid != ::geteuid()) {
    return Error{"refusing state dir " + dir + ": owned by uid " + std::to_string(st.st_uid) +
                 ", not by this user (uid " + std::to_string(::geteuid()) + ")"};
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
    return Error{"refusing state dir " + dir + ": mode " + mode +
                 " lets group or others write to it (chmod 0700 " + dir + ")"};
  }
  // Ours and closed to writers: keep what is in it private too.
  if ((st.st_mode & 077) != 0 && ::chmod(dir.c_str(), 0700) != 0) {
    return errnoError("cannot use state dir " + dir + ": chmod 0700", errno);
  }
  return {};
}

// One ring2d per state dir: two would fight over the holder and the control socket. The lock
// is an flock on DIR/lock, held by the returned fd for the life of the process (close-on-exec,
// so neither the holder nor any child inherits it; the kernel drops it when ring2d dies, even
// by kill -9). The lock file holds the owner's pid, for the error message.
Result<UniqueFd> lockStateDir(const std::string& dir) {
  const std::string path = dir + "/lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return errnoError("open " + path, errno);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) return errnoError("flock " + path, errno);
    char buf[32] = {};
    const ssize_t n = ::pread(fd.get(), buf, sizeof buf - 1, 0);
    const long pid = n > 0 ? std::strtol(buf, nullptr, 10) : 0;
    return Error{"another ring2d is running with state dir " + dir + " (pid " +
                 (pid > 0 ? std::to_string(pid) : std::string("unknown")) + ")"};
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd.get(), 0) != 0 ||
      ::pwrite(fd.get(), pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    return errnoError("write " + path, errno);
  }
  return fd;
}

// Loads the spec and checks every process against its spawn strategy before anything runs.
Result<std::vector<supervise::ProcessSpec>> loadSpec(const std::string& path,
                                                     const supervise::SpawnRegistry& registry) {
  auto specs = supervise::loadSpecFile(path);
  if (!specs.ok()) return specs.error();
  for (const auto& s : *specs) {
    auto strategy = registry.find(s.strategy);
    if (!strategy.ok()) return strategy.error().wrap(path + ": process '" + s.name + "'");
    if (auto st = (*strategy)->validate(s); !st.ok()) {
      return st.error().wrap(path + ": process '" + s.name + "'");
    }
  }
  return specs;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ring2d - supervise the processes of one enjin environment"};
  std::string specPath, stateDir = defaultStateDir(), observe, keyFile, node, logLevel = "info";
  std::string holderExe = besideSelf("enjin-holder");
  int64_t observeIntervalMs = 10'000;
  app.add_option("--spec", specPath, "The spec file (TOML, one [[process]] table each)")->required();
  app.add_option("--state-dir", stateDir, "Where state, logs and sockets live")->capture_default_str();
  auto* obs = app.add_option("--observe", observe, "Publish signed observations on this ZeroMQ endpoint (bind)");
  app.add_option("--key", keyFile, "Signing key for --observe (mode 0600)")->needs(obs);
  app.add_option("--node", node, "This environment's name in observations (default: hostname)");
  app.add_option("--observe-interval-ms", observeIntervalMs,
                 "Republish the full state this often (the stream is level-triggered)")
      ->capture_default_str();
  app.add_option("--holder", holderExe, "Path of enjin-holder")->capture_default_str();
  app.add_option("--log-level", logLevel, "trace, debug, info, warn, error")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (!observe.empty() && keyFile.empty()) {
    std::fprintf(stderr, "ring2d: --observe needs --key\n");
    return 2;
  }
  spdlog::set_default_logger(spdlog::stderr_color_mt("ring2d"));
  spdlog::set_level(spdlog::level::from_str(logLevel));
  if (node.empty()) {
    node = nodeFromHostname();
    if (!supervise::validName(node)) {
      std::fprintf(stderr,
                   "ring2d: the hostname does not make a node name ('%s': expected 1 to 64 of "
                   "A-Z a-z 0-9 _ -): pass --node\n",
                   node.c_str());
      return 2;
    }
  } else if (!supervise::validName(node)) {
    std::fprintf(stderr, "ring2d: --node '%s': expected 1 to 64 of A-Z a-z 0-9 _ -\n",
                 node.c_str());
    return 2;
  }

  // Signals arrive through a signalfd on the reactor. They are blocked before any thread
  // (ZeroMQ's) exists, so every thread inherits the mask.
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&sigs, s);
  ::sigprocmask(SIG_BLOCK, &sigs, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  // Every supervised process costs a few fds (log pipes, notify socket): use the hard limit. The
  // processes get the soft limit ring2d was started with: the holder, which spawns them, reads
  // it from its environment (kChildNofileEnv). A holder already running keeps the value it was
  // started with.
  rlimit nofile;
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != nofile.rlim_max) {
    ::setenv(supervise::kChildNofileEnv, std::to_string(nofile.rlim_cur).c_str(), 1);
    nofile.rlim_cur = nofile.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &nofile);
  } else {
    ::unsetenv(supervise::kChildNofileEnv);
  }

  // The registry of spawn strategies: every one in use is named here. ring2d uses it to check
  // specs; the holder, which spawns, builds the same one.
  supervise::SpawnRegistry registry;
  registry.add(supervise::makeExecStrategy());
  registry.add(supervise::makeUnixUserStrategy());

  if (auto st = checkStateDir(stateDir); !st.ok()) {
    spdlog::error("ring2d: {}", st.error().message);
    return 1;
  }
  auto lock = lockStateDir(stateDir);  // held until main returns
  if (!lock.ok()) {
    spdlog::error("ring2d: {}", lock.error().message);
    return 1;
  }

  auto specs = loadSpec(specPath, registry);
  if (!specs.ok()) {
    spdlog::error("{}", specs.error().message);
    return 1;
  }
  SystemClock clock;
  auto reactor = Reactor::create(clock);
  if (!reactor.ok()) {
    spdlog::error("{}", reactor.error().message);
    return 1;
  }
  Reactor& r = **reactor;

  std::unique_ptr<zmq::context_t> zmqContext;
  std::unique_ptr<bus::Publisher> publisher;
  if (!observe.empty()) {
    auto key = crypto::SecretKey::load(keyFile);
    if (!key.ok()) {
      spdlog::error("{}", key.error().message);
      return 1;
    }
    zmqContext = std::make_unique<zmq::context_t>(1);
    auto pub = bus::Publisher::open(*zmqContext, std::move(*key), clock,
                                    {observe, true, stateDir + "/observe.seq", 10'000});
    if (!pub.ok()) {
      spdlog::error("{}", pub.error().message);
      return 1;
    }
    publisher = std::move(*pub);
    r.addSocket(publisher->socket(), [&] { publisher->pollSubscriptions(); });
  }

  std::random_device seed;
  std::mt19937_64 rng((uint64_t{seed()} << 32) | seed());
  supervise::Supervisor supervisor(r, {stateDir, holderExe}, [&] { return rng(); });
  auto publish = [&](const supervise::ProcessStatus& s) {
    if (!publisher) return;
    auto body = nlohmann::json::parse(supervise::statusJson(s));
    body["node"] = node;
    if (auto st = publisher->publish("obs.r2." + node + "." + s.name, "node_observation", body);
        !st.ok()) {
      spdlog::warn("ring2d: {}", st.error().message);
    }
  };
  supervisor.setObserver([&](const supervise::StateEvent& ev) { publish(ev.status); });

  if (auto st = supervisor.start(std::move(*specs)); !st.ok()) {
    spdlog::error("ring2d: {}", st.error().message);
    return 1;
  }
  auto reload = [&]() -> Status {
    auto next = loadSpec(specPath, registry);
    if (!next.ok()) {
      spdlog::error("ring2d: reload refused, the running spec stays: {}", next.error().message);
      return next.error();
    }
    spdlog::info("ring2d: reloading {}", specPath);
    return supervisor.reload(std::move(*next));
  };
  supervise::ControlServer control(r, supervisor, node, reload);
  if (auto st = control.listen(stateDir + "/control.sock"); !st.ok()) {
    spdlog::error("ring2d: {}", st.error().message);
    return 1;
  }
  // Level-triggered: the whole state again every interval, so a lost message heals.
  std::function<void()> republish = [&] {
    for (const auto& s : supervisor.status()) publish(s);
    r.addTimerAfterMillis(observeIntervalMs, republish);
  };
  if (publisher) r.addTimerAfterMillis(observeIntervalMs, republish);

  UniqueFd sigfd(::signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK));
  bool stopping = false;
  (void)r.addFd(sigfd.get(), EPOLLIN, [&](uint32_t) {
    signalfd_siginfo si;
    while (::read(sigfd.get(), &si, sizeof si) == sizeof si) {
      if (si.ssi_signo == SIGHUP) {
        (void)reload();
      } else if (!stopping) {
        stopping = true;
        spdlog::info("ring2d: stopping every process");
        supervisor.stopAll([&] { r.stop(); });
      }
    }
  });
  spdlog::info("ring2d: supervising {} (state in {})", specPath, stateDir);
  r.run();
  spdlog::info("ring2d: stopped");
  return 0;
}
