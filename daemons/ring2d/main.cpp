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
#include "enjin/base/systemd.hpp"
#include "enjin/bus/publisher.hpp"
#include "enjin/crypto/keys.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/ring/config.hpp"
#include "enjin/ring/daemon.hpp"
#include "enjin/ring/node_spec_json.hpp"
#include "enjin/ring/parent_link.hpp"
#include "enjin/store/store.hpp"
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

// The default node name: the hostname's first label ("web-3" of "web-3.example.com"), since the
// node name is one segment of an observation topic.
std::string nodeFromHostname() {
  char host[HOST_NAME_MAX + 1] = {};
  if (::gethostname(host, sizeof host - 1) != 0) return "";
  const std::string name = host;
  return name.substr(0, name.find('.'));
}

// Loads the spec and checks every process against its spawn strategy before anything runs.
Status validateSpecs(const std::vector<supervise::ProcessSpec>& specs, const std::string& source,
                     const supervise::SpawnRegistry& registry) {
  for (const auto& s : specs) {
    if (auto st = registry.validate(s); !st.ok()) {
      return st.error().wrap(source + ": process '" + s.name + "'");
    }
  }
  return {};
}

Result<std::vector<supervise::ProcessSpec>> loadSpec(const std::string& path,
                                                     const supervise::SpawnRegistry& registry) {
  auto specs = supervise::loadSpecFile(path);
  if (!specs.ok()) return specs.error();
  if (auto st = validateSpecs(*specs, path, registry); !st.ok()) return st.error();
  return specs;
}

// A ring-2 node's processes from the body of a node_spec (its parent's desired state).
Result<std::vector<supervise::ProcessSpec>> specFromParent(const nlohmann::json& j,
                                                           const supervise::SpawnRegistry& registry) {
  auto spec = ring::nodeSpecFromJson(j, 2);
  if (!spec.ok()) return spec.error();
  if (auto st = validateSpecs(spec->processes, "spec from the parent", registry); !st.ok()) {
    return st.error();
  }
  return std::move(spec->processes);
}

// The observed state of this node: what its parent hears on obs.<uuid>, and `enjinctl status`.
nlohmann::json nodeTree(const ring::DaemonConfig& cfg, const std::string& stateDir,
                        const supervise::Supervisor& supervisor) {
  // ready: every process ready, or stopped (by an operator, or by its policy); degraded:
  // something failed, backs off or is unhealthy; starting: something is on its way.
  nlohmann::json procs = nlohmann::json::array();
  bool moving = false, troubled = false;
  for (const auto& s : supervisor.status()) {
    procs.push_back(supervise::statusToJson(s));
    using supervise::ProcessState;
    moving = moving || s.state == ProcessState::kStarting || s.state == ProcessState::kRunning ||
             s.state == ProcessState::kStopping;
    troubled = troubled || s.state == ProcessState::kFailed || s.state == ProcessState::kBackoff ||
               s.state == ProcessState::kUnhealthy;
  }
  const bool allReady = !moving && !troubled;
  return {{"ring", 2},
          {"uuid", cfg.uuid},
          {"label", cfg.label},
          {"pid", ::getpid()},
          {"state_dir", stateDir},
          {"state", allReady ? "ready" : troubled ? "degraded" : "starting"},
          {"processes", std::move(procs)}};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ring2d - supervise the processes of one enjin environment"};
  std::string specPath, stateDir = defaultStateDir(), observe, keyFile, node, logLevel = "info";
  std::string holderExe = ring::besideSelf("enjin-holder"), configPath;
  int64_t observeIntervalMs = 10'000;
  auto* specOpt =
      app.add_option("--spec", specPath, "The spec file (TOML, one [[process]] table each)");
  app.add_option("--config", configPath,
                 "Run as a ring-2 node of a ring1d: the config file its parent wrote (identity, "
                 "keys, buses); the processes then come from the parent")
      ->excludes(specOpt);
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
  ring::DaemonConfig cfg;
  if (!configPath.empty()) {
    auto loaded = ring::loadConfig(configPath, 2);
    if (!loaded.ok()) {
      std::fprintf(stderr, "ring2d: %s\n", loaded.error().message.c_str());
      return 1;
    }
    cfg = std::move(*loaded);
    stateDir = cfg.stateDir;
    observe = cfg.observe;
    keyFile = cfg.key;
    node = cfg.label;
    logLevel = cfg.logLevel;
    observeIntervalMs = cfg.heartbeatMs;
  } else if (specPath.empty()) {
    std::fprintf(stderr, "ring2d: one of --spec or --config is needed (see --help)\n");
    return 2;
  }
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

  if (configPath.empty()) cfg.label = node;  // a standalone ring2d's name in its tree

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
  ring::raiseFdLimit();

  // The registry of spawn strategies: every one in use is named here. ring2d uses it to check
  // specs; the holder, which spawns, builds the same one.
  const auto registry = supervise::makeStandardRegistry();

  if (auto st = ring::checkStateDir(stateDir); !st.ok()) {
    spdlog::error("ring2d: {}", st.error().message);
    return 1;
  }
  auto lock = ring::lockStateDir(stateDir, "ring2d");  // held until main returns
  if (!lock.ok()) {
    spdlog::error("ring2d: {}", lock.error().message);
    return 1;
  }

  // As a node, the processes come from the parent; until it speaks, from what this node last
  // applied, so a restarted ring2d re-adopts its processes instead of stopping them.
  std::unique_ptr<store::Store> store;
  ring::AppliedSpec applied;
  Result<std::vector<supervise::ProcessSpec>> specs = std::vector<supervise::ProcessSpec>{};
  if (configPath.empty()) {
    specs = loadSpec(specPath, registry);
  } else {
    auto opened = store::Store::open(stateDir + "/ring2.db");
    if (!opened.ok()) {
      spdlog::error("{}", opened.error().message);
      return 1;
    }
    store = std::move(*opened);
    auto stored = ring::loadAppliedSpec(*store);
    if (!stored.ok()) {
      spdlog::error("{}", stored.error().message);
      return 1;
    }
    applied = std::move(*stored);
    if (!applied.json.empty()) {
      specs = specFromParent(nlohmann::json::parse(applied.json, nullptr, false), registry);
      if (!specs.ok()) specs = specs.error().wrap(store->path() + ": stored spec");
    }
  }
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
    auto body = supervise::statusToJson(s);
    body["node"] = node;
    if (auto st = publisher->publish("obs.r2." + node + "." + s.name, "node_observation", body);
        !st.ok()) {
      spdlog::warn("ring2d: {}", st.error().message);
    }
  };
  std::unique_ptr<ring::ParentLink> link;
  auto haveSpec = [&] { return configPath.empty() || !applied.digest.empty(); };
  bool readySent = false;
  bool started = false;
  auto maybeReady = [&] {
    if (readySent || !started || !haveSpec() || !supervisor.settled()) return;
    readySent = true;
    (void)systemd::notify("READY=1");
  };
  // Asked once per reactor round, not once per event: starting N processes makes N events, and
  // a look at all N each time was quadratic (4900 processes: seconds of CPU).
  bool readyCheckPending = false;
  supervisor.setObserver([&](const supervise::StateEvent& ev) {
    publish(ev.status);
    if (link) link->changed();
    if (readySent || readyCheckPending) return;
    readyCheckPending = true;
    r.addTimerAfterMillis(0, [&] {
      readyCheckPending = false;
      maybeReady();
    });
  });

  if (auto st = supervisor.start(std::move(*specs)); !st.ok()) {
    spdlog::error("ring2d: {}", st.error().message);
    return 1;
  }
  started = true;
  bool stopping = false;
  int exitCode = 0;
  auto stopEverything = [&](int code) {
    if (stopping) return;
    stopping = true;
    exitCode = code;
    spdlog::info("ring2d: stopping every process");
    (void)systemd::notify("STOPPING=1");
    supervisor.stopAll([&] { r.stop(); });
  };
  if (!configPath.empty()) {
    ring::ParentLink::Handlers h;
    h.onSpec = [&](const nlohmann::json& specJson, const std::string& digest) -> Status {
      auto next = specFromParent(specJson, registry);
      if (!next.ok()) return next.error();
      if (auto st = ring::applyAndStoreSpec(*store, applied, {specJson.dump(), digest},
                                            [&] { return supervisor.reload(std::move(*next)); });
          !st.ok()) {
        return st;
      }
      maybeReady();
      return {};
    };
    h.onRevoked = [&] { stopEverything(125); };  // 125: the parent must not restart it
    h.onCommand = [&](const std::string& op, const std::string& path, ring::ParentLink::Reply reply) {
      Status st = supervisor.runCommand(op, path);
      reply(st.ok() ? nlohmann::json{{"ok", true}}
                    : nlohmann::json{{"ok", false}, {"error", node + ": " + st.error().message}});
    };
    h.observe = [&] { return nodeTree(cfg, stateDir, supervisor); };
    auto opened = ring::ParentLink::open(r, clock, *zmqContext, cfg, std::move(h),
                                         ring::faultDropFraction(), [&] { return rng(); });
    if (!opened.ok()) {
      spdlog::error("ring2d: {}", opened.error().message);
      return 1;
    }
    link = std::move(*opened);
    link->setApplied(applied.digest);
  }
  auto reload = [&]() -> Status {
    if (!configPath.empty()) {
      return Error{"a ring-2 node's processes come from its parent, not from a reload"};
    }
    auto next = loadSpec(specPath, registry);
    if (!next.ok()) {
      spdlog::error("ring2d: reload refused, the running spec stays: {}", next.error().message);
      return next.error();
    }
    spdlog::info("ring2d: reloading {}", specPath);
    return supervisor.reload(std::move(*next));
  };
  supervise::ControlServer control(r, supervisor, node, reload);
  control.setExtension([&](const nlohmann::json& req, supervise::ControlServer::Respond respond) {
    if (req.value("cmd", "") != "tree") return false;
    nlohmann::json reply{{"ok", true}, {"tree", nodeTree(cfg, stateDir, supervisor)}};
    if (publisher) {
      reply["observe"] = observe;
      reply["public_key"] = publisher->publicKey().hex();
    }
    respond(std::move(reply));
    return true;
  });
  if (auto st = control.listen(stateDir + "/control.sock"); !st.ok()) {
    spdlog::error("ring2d: {}", st.error().message);
    return 1;
  }
  // Whoever started ring2d (ring1d's engine, or systemd) hears READY=1 once it has a spec and
  // every process has settled (ready, or given up on: a crash-looping process must not hold
  // the whole tree back), and WATCHDOG=1 from the reactor. READY=1 is repeated with each
  // WATCHDOG=1: a parent that re-adopted this ring2d without having seen the first one (it died
  // just after) learns it within a beat.
  maybeReady();
  ring::startNotifyBeat(r, configPath.empty() ? 0 : cfg.heartbeatMs, [&] { return readySent; });
  // Level-triggered: the whole state again every interval, so a lost message heals.
  std::function<void()> republish = [&] {
    for (const auto& s : supervisor.status()) publish(s);
    r.addTimerAfterMillis(observeIntervalMs, republish);
  };
  if (publisher) r.addTimerAfterMillis(observeIntervalMs, republish);

  UniqueFd sigfd(::signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK));
  (void)r.addFd(sigfd.get(), EPOLLIN, [&](uint32_t) {
    signalfd_siginfo si;
    while (::read(sigfd.get(), &si, sizeof si) == sizeof si) {
      if (si.ssi_signo == SIGHUP) {
        (void)reload();
      } else {
        stopEverything(0);
      }
    }
  });
  spdlog::info("ring2d: supervising {} (state in {})",
               configPath.empty() ? specPath : "node '" + node + "' (" + cfg.uuid + ")", stateDir);
  r.run();
  link.reset();
  spdlog::info("ring2d: stopped");
  return exitCode;
}
