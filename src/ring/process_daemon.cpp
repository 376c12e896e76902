#include "enjin/ring/process_daemon.hpp"

#include <limits.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "enjin/bus/publisher.hpp"
#include "enjin/crypto/keys.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/ring/config.hpp"
#include "enjin/ring/daemon.hpp"
#include "enjin/ring/node_spec_json.hpp"
#include "enjin/ring/runner.hpp"
#include "enjin/store/store.hpp"
#include "enjin/supervise/control_server.hpp"
#include "enjin/supervise/proc_stat.hpp"
#include "enjin/supervise/spawn.hpp"
#include "enjin/supervise/spec_file.hpp"
#include "enjin/supervise/supervisor.hpp"

namespace enjin::ring {

using nlohmann::json;
using supervise::ProcessSpec;

namespace {

constexpr const char* kName = "ring2d";
constexpr int kExitUsage = 2;
// Messages queued per subscriber of --observe before drops: a full state is one message per
// process, so a large environment's republish must fit.
constexpr int kObserveSendHighWater = 10'000;

// The default node name: the hostname's first label ("web-3" of "web-3.example.com"), since the
// node name is one segment of an observation topic.
std::string nodeFromHostname() {
  char host[HOST_NAME_MAX + 1] = {};
  if (::gethostname(host, sizeof host - 1) != 0) return "";
  const std::string name = host;
  return name.substr(0, name.find('.'));
}

// A ring-2 node's processes from the body of a node_spec (its parent's desired state).
Result<std::vector<ProcessSpec>> specFromParent(const json& j,
                                                const supervise::SpawnRegistry& registry) {
  auto spec = nodeSpecFromJson(j, 2);
  if (!spec.ok()) return spec.error();
  if (auto st = validateProcessSpecs(spec->processes, "spec from the parent", registry); !st.ok()) {
    return st.error();
  }
  return std::move(spec->processes);
}

// The observed state of this node: what its parent hears on obs.<uuid>, and `enjinctl status`.
json nodeTree(const DaemonConfig& cfg, const std::string& stateDir,
              const supervise::Supervisor& supervisor) {
  // ready: every process ready, or stopped (by an operator, or by its policy); degraded:
  // something failed, backs off or is unhealthy; starting: something is on its way.
  json procs = json::array();
  bool moving = false, troubled = false;
  for (const auto& s : supervisor.status()) {
    json p = supervise::statusToJson(s);
    // Metric collection: what the process costs, read from /proc at each report.
    if (s.pid > 0) {
      if (auto stat = supervise::readProcStat(s.pid)) {
        p["cpu_seconds"] = stat->cpuSeconds;
        p["resident_memory_bytes"] = stat->residentBytes;
      }
    }
    procs.push_back(std::move(p));
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

// Takes the node's settings from the config its parent wrote; checks the rest. Returns an exit
// code when the options make no daemon.
std::optional<int> settle(ProcessDaemonOptions& o, DaemonConfig& cfg) {
  if (!o.configPath.empty()) {
    auto loaded = loadConfig(o.configPath, 2);
    if (!loaded.ok()) {
      std::fprintf(stderr, "ring2d: %s\n", loaded.error().message.c_str());
      return 1;
    }
    cfg = std::move(*loaded);
    o.stateDir = cfg.stateDir;
    o.observe = cfg.observe;
    o.keyFile = cfg.key;
    o.node = cfg.label;
    o.logLevel = cfg.logLevel;
    o.observeIntervalMs = cfg.heartbeatMs;
  } else if (o.specPath.empty()) {
    std::fprintf(stderr, "ring2d: one of --spec or --config is needed (see --help)\n");
    return kExitUsage;
  }
  if (o.stateDir.empty()) o.stateDir = defaultStateDir(2);
  if (!o.observe.empty() && o.keyFile.empty()) {
    std::fprintf(stderr, "ring2d: --observe needs --key\n");
    return kExitUsage;
  }
  if (o.node.empty()) {
    o.node = nodeFromHostname();
    if (!supervise::validName(o.node)) {
      std::fprintf(stderr,
                   "ring2d: the hostname does not make a node name ('%s': expected 1 to 64 of "
                   "A-Z a-z 0-9 _ -): pass --node\n",
                   o.node.c_str());
      return kExitUsage;
    }
  } else if (!supervise::validName(o.node)) {
    std::fprintf(stderr, "ring2d: --node '%s': expected 1 to 64 of A-Z a-z 0-9 _ -\n",
                 o.node.c_str());
    return kExitUsage;
  }
  if (o.configPath.empty()) cfg.label = o.node;  // a standalone ring2d's name in its tree
  return std::nullopt;
}

int fail(const Error& e) {
  spdlog::error("{}", e.message);
  return 1;
}

}  // namespace

Status validateProcessSpecs(const std::vector<ProcessSpec>& specs, const std::string& source,
                            const supervise::SpawnRegistry& registry) {
  for (const auto& s : specs) {
    if (auto st = registry.validate(s); !st.ok()) {
      return st.error().wrap(source + ": process '" + s.name + "'");
    }
  }
  return {};
}

Result<std::vector<ProcessSpec>> loadProcessSpecs(const std::string& path,
                                                  const supervise::SpawnRegistry& registry) {
  auto specs = supervise::loadSpecFile(path);
  if (!specs.ok()) return specs.error();
  if (auto st = validateProcessSpecs(*specs, path, registry); !st.ok()) return st.error();
  return specs;
}

int runProcessDaemon(ProcessDaemonOptions o) {
  DaemonConfig cfg;
  if (auto code = settle(o, cfg)) return *code;
  const bool asNode = !o.configPath.empty();
  const supervise::SpawnRegistry& registry = *o.registry;

  auto started = DaemonRunner::start(kName, o.stateDir, o.logLevel);
  if (!started.ok()) return fail(started.error().wrap(kName));
  DaemonRunner& runner = **started;
  Reactor& r = runner.reactor();

  // As a node, the processes come from the parent; until it speaks, from what this node last
  // applied, so a restarted ring2d re-adopts its processes instead of stopping them.
  std::unique_ptr<store::Store> store;
  AppliedSpec applied;
  Result<std::vector<ProcessSpec>> specs = std::vector<ProcessSpec>{};
  if (!asNode) {
    specs = loadProcessSpecs(o.specPath, registry);
  } else {
    auto opened = store::Store::open(o.stateDir + "/ring2.db");
    if (!opened.ok()) return fail(opened.error());
    store = std::move(*opened);
    auto stored = loadAppliedSpec(*store);
    if (!stored.ok()) return fail(stored.error());
    applied = std::move(*stored);
    if (!applied.json.empty()) {
      specs = specFromParent(json::parse(applied.json, nullptr, false), registry);
      if (!specs.ok()) specs = specs.error().wrap(store->path() + ": stored spec");
    }
  }
  if (!specs.ok()) return fail(specs.error());

  // On tcp:// the observation stream is a CURVE server (enjin/bus/curve.hpp) that admits the
  // operator's observers: every observers/*.pub of the state dir. (The runner's handler keeps
  // a pointer to `observers` past this function, but serves nothing once the reactor stopped.)
  bus::TrustStore observers;
  std::unique_ptr<bus::Publisher> publisher;
  if (!o.observe.empty()) {
    auto key = crypto::SecretKey::load(o.keyFile);
    if (!key.ok()) return fail(key.error());
    bus::PublisherOptions po{
        o.observe, true, o.stateDir + "/observe.seq", kObserveSendHighWater, {}};
    if (bus::needsCurve(o.observe)) {
      auto zap = runner.zap();
      if (!zap.ok()) return fail(zap.error());
      const std::string dir = o.stateDir + "/observers";
      std::error_code ec;
      if (std::filesystem::is_directory(dir, ec)) {
        if (auto st = observers.load(dir, {""}); !st.ok()) return fail(st.error());
      }
      (*zap)->admit("observe", {&observers});
      po.curve = {*zap, "observe", std::nullopt};
    }
    auto pub = bus::Publisher::open(runner.zmq(), std::move(*key), runner.clock(), po);
    if (!pub.ok()) return fail(pub.error());
    publisher = std::move(*pub);
    r.addSocket(publisher->socket(), [&] { publisher->pollSubscriptions(); });
  }

  supervise::SupervisorOptions so{o.stateDir, o.holderExe};
  so.observations = o.observations;
  so.sockets = o.sockets;
  if (o.sockets != nullptr && o.sockets->size() > 0) {
    std::string keys;
    for (const auto& key : o.sockets->keys()) keys += (keys.empty() ? "" : ", ") + key;
    spdlog::info("ring2d: {} listening sockets received: {}", o.sockets->size(), keys);
  }
  supervise::Supervisor supervisor(r, std::move(so), runner.random());
  runner.setStopper("every process", [&](std::function<void()> done) {
    supervisor.stopAll(std::move(done));
  });
  auto publish = [&](const supervise::ProcessStatus& s) {
    if (!publisher) return;
    auto body = supervise::statusToJson(s);
    body["node"] = o.node;
    if (auto st = publisher->publish("obs.r2." + o.node + "." + s.name, "node_observation", body);
        !st.ok()) {
      spdlog::warn("ring2d: {}", st.error().message);
    }
  };
  // Whoever started ring2d (ring1d's engine, or systemd) hears READY=1 once it has a spec and
  // every process has settled (ready, or given up on: a crash-looping process must not hold
  // the whole tree back).
  bool supervising = false;
  auto maybeReady = [&] {
    if (runner.ready() || !supervising || (asNode && applied.digest.empty()) ||
        !supervisor.settled()) {
      return;
    }
    runner.notifyReady();
  };
  // Asked once per reactor round, not once per event: starting N processes makes N events, and
  // a look at all N each time was quadratic (4900 processes: seconds of CPU).
  bool readyCheckPending = false;
  supervisor.setObserver([&](const supervise::StateEvent& ev) {
    publish(ev.status);
    runner.changed();
    if (runner.ready() || readyCheckPending) return;
    readyCheckPending = true;
    r.addTimerAfterMillis(0, [&] {
      readyCheckPending = false;
      maybeReady();
    });
  });

  if (auto st = supervisor.start(std::move(*specs)); !st.ok()) return fail(st.error().wrap(kName));
  supervising = true;
  if (asNode) {
    ParentLink::Handlers h;
    h.onSpec = [&](const json& specJson, const std::string& digest) -> Status {
      auto next = specFromParent(specJson, registry);
      if (!next.ok()) return next.error();
      if (auto st = applyAndStoreSpec(*store, applied, {specJson.dump(), digest},
                                      [&] { return supervisor.reload(std::move(*next)); });
          !st.ok()) {
        return st;
      }
      maybeReady();
      return {};
    };
    h.onCommand = [&](const std::string& op, const std::string& path, ParentLink::Reply reply) {
      Status st = supervisor.runCommand(op, path);
      reply(st.ok() ? json{{"ok", true}}
                    : json{{"ok", false}, {"error", o.node + ": " + st.error().message}});
    };
    // What isolates this node, as its strategy put it in force (exec: nothing beyond the uid).
    json isolation = o.isolationJson.empty()
                         ? json{{"strategy", "exec"}, {"namespaces", json::array()},
                                {"cgroup", "none"}, {"seccomp", false}}
                         : json::parse(o.isolationJson, nullptr, false);
    h.observe = [&, isolation] {
      json tree = nodeTree(cfg, o.stateDir, supervisor);
      if (isolation.is_object()) tree["isolation"] = isolation;
      return tree;
    };
    if (auto st = runner.linkToParent(cfg, std::move(h), applied.digest); !st.ok()) {
      return fail(st.error().wrap(kName));
    }
  }
  auto reload = [&]() -> Status {
    if (asNode) return Error{"a ring-2 node's processes come from its parent, not from a reload"};
    auto next = loadProcessSpecs(o.specPath, registry);
    if (!next.ok()) {
      spdlog::error("ring2d: reload refused, the running spec stays: {}", next.error().message);
      return next.error();
    }
    spdlog::info("ring2d: reloading {}", o.specPath);
    return supervisor.reload(std::move(*next));
  };
  runner.setReload(reload);
  supervise::ControlServer control(r, supervisor, o.node, reload);
  control.setExtension([&](const json& req, supervise::ControlServer::Respond respond) {
    if (req.value("cmd", "") != "tree") return false;
    json reply{{"ok", true}, {"tree", nodeTree(cfg, o.stateDir, supervisor)}};
    if (publisher) {
      reply["observe"] = o.observe;
      reply["public_key"] = publisher->publicKey().hex();
    }
    respond(std::move(reply));
    return true;
  });
  if (auto st = control.listen(o.stateDir + "/control.sock"); !st.ok()) {
    return fail(st.error().wrap(kName));
  }
  maybeReady();
  runner.startNotifyBeat(asNode ? cfg.heartbeatMs : 0);
  // Level-triggered: the whole state again every interval, so a lost message heals.
  std::function<void()> republish = [&] {
    for (const auto& s : supervisor.status()) publish(s);
    r.addTimerAfterMillis(o.observeIntervalMs, republish);
  };
  if (publisher) r.addTimerAfterMillis(o.observeIntervalMs, republish);
  return runner.run("supervising " +
                    (asNode ? "node '" + o.node + "' (" + cfg.uuid + ")" : o.specPath) +
                    " (state in " + o.stateDir + ")");
}

}  // namespace enjin::ring
