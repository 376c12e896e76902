// ring2d: one customer environment; supervises the processes of a spec file.
#include <limits.h>
#include <signal.h>
#include <sodium.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/signalfd.h>
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
#include "enjin/bus/publisher.hpp"
#include "enjin/crypto/keys.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/supervise/control_server.hpp"
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
    char host[HOST_NAME_MAX + 1] = {};
    ::gethostname(host, sizeof host);
    node = host;
  }

  // Signals arrive through a signalfd on the reactor. They are blocked before any thread
  // (ZeroMQ's) exists, so every thread inherits the mask.
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&sigs, s);
  ::sigprocmask(SIG_BLOCK, &sigs, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  // Every supervised process costs a few fds (log pipes, notify socket): use the hard limit.
  rlimit nofile;
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
    nofile.rlim_cur = nofile.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &nofile);
  }

  // The registry of spawn strategies: every one in use is named here. ring2d uses it to check
  // specs; the holder, which spawns, builds the same one.
  supervise::SpawnRegistry registry;
  registry.add(supervise::makeExecStrategy());
  registry.add(supervise::makeUnixUserStrategy());

  // The state dir holds secrets' neighbours (sockets, the seq file): private to this user.
  std::error_code ec;
  std::filesystem::create_directories(stateDir, ec);
  if (ec || ::chmod(stateDir.c_str(), 0700) != 0) {
    spdlog::error("ring2d: cannot use state dir {}: {}", stateDir,
                  ec ? ec.message() : std::strerror(errno));
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
