#include "enjin/ring/daemon.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <sodium.h>
#include <zmq.hpp>

#include "enjin/acl/password.hpp"
#include "enjin/acl/tokens.hpp"
#include "enjin/api/control_api.hpp"
#include "enjin/api/event_log.hpp"
#include "enjin/api/http_server.hpp"
#include "enjin/base/systemd.hpp"
#include "enjin/directory/directory.hpp"
#include "enjin/metrics/metrics.hpp"
#include "enjin/crypto/keys.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/ring/config.hpp"
#include "enjin/ring/daemon_metrics.hpp"
#include "enjin/ring/fleet_agent.hpp"
#include "enjin/ring/traffic.hpp"
#include "enjin/ring/node_catalog.hpp"
#include "enjin/ring/paas.hpp"
#include "enjin/ring/node_spec_json.hpp"
#include "enjin/ring/isolation_policy.hpp"
#include "enjin/ring/parent.hpp"
#include "enjin/ring/parent_link.hpp"
#include "enjin/ring/runner.hpp"
#include "enjin/store/store.hpp"
#include "enjin/supervise/control_server.hpp"
#include "enjin/supervise/holder.hpp"
#include "enjin/supervise/spawn.hpp"
#include "enjin/supervise/supervisor.hpp"

namespace enjin::ring {

using nlohmann::json;

std::string besideSelf(const std::string& name) {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? name : (self.parent_path() / name).string();
}

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
  // Ours and closed to writers: keep what is in it private too. A group's traverse bit stays:
  // a tenant node's app uid passes through its node's dir to its home (ring/tenant.hpp).
  if ((st.st_mode & 077 & ~S_IXGRP) != 0 &&
      ::chmod(dir.c_str(), 0700 | (st.st_mode & S_IXGRP)) != 0) {
    return errnoError("cannot use state dir " + dir + ": chmod 0700", errno);
  }
  return {};
}

Result<UniqueFd> lockStateDir(const std::string& dir, std::string_view daemon) {
  const std::string path = dir + "/lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return errnoError("open " + path, errno);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) return errnoError("flock " + path, errno);
    char buf[32] = {};
    const ssize_t n = ::pread(fd.get(), buf, sizeof buf - 1, 0);
    const long pid = n > 0 ? std::strtol(buf, nullptr, 10) : 0;
    return Error{"another " + std::string(daemon) + " is running with state dir " + dir +
                 " (pid " + (pid > 0 ? std::to_string(pid) : std::string("unknown")) + ")"};
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd.get(), 0) != 0 ||
      ::pwrite(fd.get(), pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    return errnoError("write " + path, errno);
  }
  return fd;
}

void raiseFdLimit() {
  rlimit nofile;
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != nofile.rlim_max) {
    ::setenv(supervise::kChildNofileEnv, std::to_string(nofile.rlim_cur).c_str(), 1);
    nofile.rlim_cur = nofile.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &nofile);
  } else {
    ::unsetenv(supervise::kChildNofileEnv);
  }
}

double faultDropFraction() {
#ifdef ENJIN_FAULT_INJECTION
  if (const char* v = ::getenv("ENJIN_FAULT_DROP")) {
    const double f = std::strtod(v, nullptr);
    if (f > 0 && f <= 1) return f;
  }
#endif
  return 0;
}

bool faultDropThis(double fraction, const std::function<uint64_t()>& random) {
  if (fraction <= 0) return false;
  return static_cast<double>(random() % 1'000'000) < fraction * 1'000'000;
}

namespace {

// "3 nodes: 2 ready, 1 backoff": systemd's STATUS= and the log.
std::string summary(const json& tree) {
  std::map<std::string, int> by;
  int total = 0;
  for (const auto& n : tree["nodes"]) {
    ++by[n.value("state", "?")];
    ++total;
  }
  std::string s = std::to_string(total) + (total == 1 ? " node" : " nodes");
  std::string parts;
  for (const auto& [state, count] : by) {
    parts += (parts.empty() ? ": " : ", ") + std::to_string(count) + " " + state;
  }
  return s + parts;
}

// The root key: generated on first start, 0600 in the state dir, never replaced.
Status ensureRootKey(const std::string& keyFile) {
  if (::access(keyFile.c_str(), F_OK) == 0) return {};
  std::string base = keyFile;
  if (base.ends_with(".key")) base.resize(base.size() - 4);
  if (::access((base + ".pub").c_str(), F_OK) == 0) {
    return Error{"the root key " + keyFile + " is missing but " + base +
                 ".pub is there: restore the key, or move " + base +
                 ".pub away to make a new root (every node's trust in the old one ends)"};
  }
  if (auto st = crypto::writeKeyPair(base, crypto::SecretKey::generate(), false); !st.ok()) {
    return st.error().wrap("generate the root key");
  }
  spdlog::info("ring0d: generated the root key {} (public half in {}.pub)", keyFile, base);
  return {};
}

// --init's admin: the password from `file` (which must be 0600 and this user's), or a new random
// one, which is printed once. Nothing happens if an admin exists.
Status initAdmin(directory::Directory& dir, const std::string& file) {
  auto existing = dir.passwordHash("admin");
  if (!existing.ok()) return existing.error();
  if (existing->has_value()) return {};
  std::string password;
  if (!file.empty()) {
    struct stat st;
    if (::stat(file.c_str(), &st) != 0) return errnoError("admin password file " + file, errno);
    if ((st.st_mode & 077) != 0 || st.st_uid != ::geteuid()) {
      return Error{"admin password file " + file + ": refused, it must be this user's and mode 0600"};
    }
    std::ifstream in(file);
    std::getline(in, password);
    if (auto pst = acl::checkPasswordPolicy(password); !pst.ok()) {
      return pst.error().wrap("admin password file " + file);
    }
  } else {
    password = acl::newToken().substr(0, 24);
  }
  auto hash = acl::hashPassword(password);
  if (!hash.ok()) return hash.error();
  auto made = dir.ensureAdmin(*hash);
  if (!made.ok()) return made.error().wrap("create the admin user");
  if (*made && file.empty()) std::printf("admin password: %s\n", password.c_str());
  sodium_memzero(password.data(), password.size());
  return {};
}

int fail(const Error& e) {
  spdlog::error("{}", e.message);
  return 1;
}

}  // namespace

Status checkNodeTree(const NodeSpec& node, int ring, const supervise::SpawnRegistry& nodeStrategies,
                     const supervise::SpawnRegistry& processStrategies) {
  if (auto st = checkNodeStrategy(node, ring, nodeStrategies); !st.ok()) return st;
  const std::string where = "ring-" + std::to_string(ring) + " node '" + node.label + "'";
  const bool tenant = isTenantNode(node, ring);
  for (const auto& p : node.processes) {
    if (tenant && p.strategy != "exec") {
      return Error{where + ": process '" + p.name + "': strategy " + p.strategy +
                       ": a " + node.strategy +
                       " node runs every process as its app uid (strategy exec)",
                   400};
    }
    if (auto st = processStrategies.validate(p); !st.ok()) {
      return st.error().wrap(where + ": process '" + p.name + "'");
    }
  }
  for (const auto& child : node.nodes) {
    if (isTenantNode(child, ring + 1) && node.tenantUids.empty()) {
      return Error{where + ": ring-2 node '" + child.label + "': strategy " + child.strategy +
                       " needs tenant_uids in the spec of ring-1 node '" + node.label +
                       "' (the ids its tenant nodes run as)",
                   400};
    }
    // Named in full already ("ring-1 node 'infra' requires ..."), so not wrapped in `where`.
    if (auto st = checkRing1Isolation(node, child, nodeStrategies); !st.ok()) return st;
    if (auto st = checkNodeTree(child, ring + 1, nodeStrategies, processStrategies); !st.ok()) {
      return st.error().wrap(where);
    }
  }
  return {};
}

Status checkConfig(const DaemonConfig& cfg, const supervise::SpawnRegistry& nodeStrategies,
                   const supervise::SpawnRegistry& processStrategies) {
  for (const auto& node : cfg.nodes) {
    if (auto st = checkNodeTree(node, cfg.ring + 1, nodeStrategies, processStrategies); !st.ok()) {
      return st.error().wrap(cfg.source);
    }
  }
  return {};
}

namespace {
Status storeAppliedSpec(store::Store& store, const AppliedSpec& spec) {
  if (auto st = store.setMeta("spec", spec.json); !st.ok()) return st;
  return store.setMeta("spec_digest", spec.digest);
}
}  // namespace

Result<AppliedSpec> loadAppliedSpec(const store::Store& store) {
  auto spec = store.meta("spec");
  if (!spec.ok()) return spec.error();
  auto digest = store.meta("spec_digest");
  if (!digest.ok()) return digest.error();
  if (!spec->has_value() || (*spec)->empty()) return AppliedSpec{};
  return AppliedSpec{std::move(**spec), digest->value_or("")};
}

Status applyAndStoreSpec(store::Store& store, AppliedSpec& applied, AppliedSpec next,
                         const std::function<Status()>& apply) {
  if (auto st = storeAppliedSpec(store, next); !st.ok()) return st;
  if (auto st = apply(); !st.ok()) {
    (void)storeAppliedSpec(store, applied);
    return st;
  }
  applied = std::move(next);
  return {};
}

void startNotifyBeat(Reactor& reactor, int64_t nodeHeartbeatMs, std::function<bool()> ready) {
  if (!systemd::underSystemd()) return;
  const int64_t watchdogMs = systemd::watchdogIntervalMs();
  int64_t beatMs = watchdogMs > 0 ? watchdogMs / 2 : 0;
  if (nodeHeartbeatMs > 0) beatMs = beatMs > 0 ? std::min(beatMs, nodeHeartbeatMs) : nodeHeartbeatMs;
  if (beatMs <= 0) return;
  auto beat = std::make_shared<std::function<void()>>();
  *beat = [&reactor, beatMs, watchdogMs, ready = std::move(ready), self = std::weak_ptr(beat)] {
    const std::string msg =
        std::string(ready() ? "READY=1\n" : "") + (watchdogMs > 0 ? "WATCHDOG=1" : "");
    if (!msg.empty()) (void)systemd::notify(msg);
    if (auto next = self.lock()) reactor.addTimerAfterMillis(beatMs, [next] { (*next)(); });
  };
  (*beat)();
}

namespace {
// A daemon's API while it is served. Stopping closes the API's way to the reactor first, so a
// request waiting for the reactor (which may be the thread stopping the server) ends at once.
struct ServedApi {
  std::unique_ptr<api::ControlApi> control;
  std::unique_ptr<api::HttpServer> http;
  std::string listen;

  void stop() {
    if (control) control->close();
    http.reset();
    control.reset();
    listen.clear();
  }
  ~ServedApi() { stop(); }
};
}  // namespace

int runParentDaemon(const ParentDaemonOptions& opts) {
  const int ring = opts.ring;
  const std::string name = daemonName(ring);
  const std::string& configPath = opts.configPath;
  const auto& nodeStrategies = *opts.nodeStrategies;
  const auto& processStrategies = *opts.processStrategies;

  auto loaded = loadConfig(configPath, ring, opts.stateDir);
  if (loaded.ok()) {
    if (auto st = checkConfig(*loaded, nodeStrategies, processStrategies); !st.ok()) {
      loaded = st.error();
    }
  }
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s: %s\n", name.c_str(), loaded.error().message.c_str());
    return 1;
  }
  DaemonConfig cfg = std::move(*loaded);
  if (!opts.logLevel.empty()) cfg.logLevel = opts.logLevel;
  if (opts.checkOnly) {
    size_t ring2 = 0, procs = 0;
    for (const auto& n : cfg.nodes) {
      ring2 += n.nodes.size();
      for (const auto& m : n.nodes) procs += m.processes.size();
    }
    std::printf("%s: %s is valid: state dir %s, %zu ring-1 nodes, %zu ring-2 nodes, %zu processes\n",
                name.c_str(), configPath.c_str(), cfg.stateDir.c_str(), cfg.nodes.size(), ring2,
                procs);
    return 0;
  }

  auto started = DaemonRunner::start(name, cfg.stateDir, cfg.logLevel);
  if (!started.ok()) return fail(started.error());
  DaemonRunner& runner = **started;
  Reactor& r = runner.reactor();
  if (ring == 0) {
    if (auto st = ensureRootKey(cfg.key); !st.ok()) return fail(st.error());
  }
  auto store = store::Store::open(cfg.stateDir + "/" + name.substr(0, 5) + ".db");
  if (!store.ok()) return fail(store.error());
  if (ring == 0) {
    auto uuid = (*store)->meta("uuid");
    if (!uuid.ok()) return fail(uuid.error());
    if (uuid->has_value()) {
      cfg.uuid = **uuid;
    } else {
      cfg.uuid = newUuid();
      if (auto st = (*store)->setMeta("uuid", cfg.uuid); !st.ok()) return fail(st.error());
    }
  }

  if (opts.initOnly) {
    auto key = crypto::SecretKey::load(cfg.key);
    if (!key.ok()) return fail(key.error());
    directory::Directory dir(**store, runner.clock());
    if (auto st = initAdmin(dir, opts.adminPasswordFile); !st.ok()) return fail(st.error());
    std::fprintf(stderr, "ring0d: %s is ready: root key %s (public %s), store schema %d, uuid %s\n",
                 cfg.stateDir.c_str(), cfg.key.c_str(), key->publicKey().hex().c_str(),
                 (*store)->schemaVersion(), cfg.uuid.c_str());
    return 0;
  }

  auto zap = runner.zap();
  if (!zap.ok()) return fail(zap.error());
  ParentOptions po{cfg,
                   besideSelf(daemonName(ring + 1)),
                   opts.holderExe,
                   runner.dropFraction(),
                   &nodeStrategies,
                   opts.nodeObservations,
                   *zap};
  NodeParent parent(r, runner.clock(), runner.zmq(), **store, po, runner.random());
  // A ring1d's apps (ring/paas.hpp) and their router: stopped after every node.
  std::unique_ptr<Paas> paas;
  std::unique_ptr<FleetAgent>* fleetSlot = nullptr;  // set once the fleet agent exists
  // A fleet host's traffic manager ([fleet] traffic_listen): stopped after the fleet agent.
  std::unique_ptr<TrafficManager> traffic;
  runner.setStopper("every node", [&](std::function<void()> done) {
    parent.stopAll([&paas, &fleetSlot, &traffic, done = std::move(done)] {
      // Stopped here, so the fleet may move them: the host leaves at once.
      if (fleetSlot != nullptr && *fleetSlot) (*fleetSlot)->stop();
      if (traffic) {
        return traffic->stop([&paas, done] {
          if (paas) return paas->stop(done);
          done();
        });
      }
      if (paas) return paas->stop(done);
      done();
    });
  });

  // The desired state: what ring0d's file declares, or what ring1d's parent's spec does (and
  // until the parent speaks, what it last applied, so a restarted ring1d re-adopts, not
  // restarts), plus the nodes made through the API, kept in the store.
  const int nodeRing = ring + 1;
  NodeCatalog catalog(**store, nodeRing, ring == 0 ? configPath : "this node's spec from its parent");
  if (auto st = catalog.load(); !st.ok()) return fail(st.error());
  // A fleet member's share of the fleet's nodes (ring/fleet_agent.hpp): what is assigned to this
  // host, while it holds its lease.
  std::vector<NodeSpec> fleetNodes;
  // Every node the parent runs: the declared, the API's, the fleet's, and (ring 1) the apps'
  // instances.
  auto allNodes = [&] {
    std::vector<NodeSpec> nodes = catalog.desired();
    for (const auto& f : fleetNodes) {
      if (catalog.declares(f.label) || catalog.findMade(f.label) != nullptr) {
        spdlog::error("{}: fleet node '{}' not run: this host has a node of that label of its own",
                      name, f.label);
        continue;
      }
      nodes.push_back(f);
    }
    if (paas) {
      auto instances = paas->apps().nodes();
      nodes.insert(nodes.end(), std::make_move_iterator(instances.begin()),
                   std::make_move_iterator(instances.end()));
    }
    return nodes;
  };
  metrics::Registry registry;
  if (ring == 1) {
    PaasOptions pa;
    pa.stateDir = cfg.stateDir;
    pa.holderExe = opts.holderExe;
    pa.nodeLabel = cfg.label;
    paas = std::make_unique<Paas>(
        r, runner.clock(), **store, parent, registry, pa, runner.random(),
        [&]() -> Status { return parent.apply(allNodes()); },
        [&](const std::string& label) {
          return catalog.declares(label) || catalog.findMade(label) != nullptr;
        });
    if (auto st = paas->load(); !st.ok()) return fail(st.error());
  }
  std::optional<std::vector<NodeSpec>> desired;
  AppliedSpec applied;
  NodeSpec ownSpec;  // ring 1: this node as its parent wants it (its API, its admins)
  if (ring == 0) {
    if (auto st = catalog.setDeclared(cfg.nodes); !st.ok()) return fail(st.error().wrap(configPath));
    desired = allNodes();
  } else {
    // Until a spec is stored: the nodes the store has, as they are.
    auto stored = loadAppliedSpec(**store);
    if (!stored.ok()) return fail(stored.error());
    applied = std::move(*stored);
    if (!applied.json.empty()) {
      auto parsed = nodeSpecFromJson(json::parse(applied.json, nullptr, false), 1);
      if (!parsed.ok()) return fail(parsed.error().wrap((*store)->path() + ": stored spec"));
      ownSpec = std::move(*parsed);
      if (auto st = catalog.setDeclared(ownSpec.nodes); !st.ok()) {
        return fail(st.error().wrap((*store)->path() + ": stored spec"));
      }
      desired = allNodes();
    }
  }
  if (ring == 1) {
    if (auto st = parent.setTenantUids(ownSpec.tenantUids); !st.ok()) return fail(st.error());
  }
  // A fleet member: joins, takes its lease and reads what is assigned to it before its nodes
  // start, so that a restarted ring0d re-adopts its fleet nodes instead of stopping them.
  std::unique_ptr<FleetAgent> fleet;
  bool parentStarted = false;
  if (ring == 0 && cfg.fleet.enabled()) {
    FleetHooks hooks;
    hooks.run = [&](std::vector<NodeSpec> nodes) -> Status {
      fleetNodes = std::move(nodes);
      return parent.apply(allNodes());
    };
    hooks.parseNode = [&](const json& body) -> Result<NodeSpec> {
      auto spec = nodeSpecFromTableJson(body, nodeRing);
      if (!spec.ok()) return spec.error();
      if (auto st = checkNodeTree(*spec, nodeRing, nodeStrategies, processStrategies); !st.ok()) {
        Error e = st.error();
        if (e.code == 0) e.code = 400;
        return e;
      }
      return spec;
    };
    hooks.tree = [&] { return parentStarted ? parent.tree() : json::object(); };
    if (!cfg.fleet.trafficListen.empty()) {
      TrafficOptions to;
      to.stateDir = cfg.stateDir;
      to.holderExe = opts.holderExe;
      to.listen = cfg.fleet.trafficListen;
      to.domain = cfg.fleet.domain;
      auto t = TrafficManager::start(r, registry, to, runner.random());
      if (!t.ok()) return fail(t.error().wrap(cfg.source + ": [fleet] traffic_listen"));
      traffic = std::move(*t);
      hooks.routes = [&traffic](const std::map<std::string, std::string>& routers) {
        if (traffic) traffic->route(routers);
      };
    }
    FleetSettings fs = cfg.fleet;
    fs.observe = cfg.observe;
    // The ring-0 key the fleet trusts, read from the key file: the parent knows its own only
    // once its buses are open, after the fleet's start.
    auto rootKey = crypto::SecretKey::load(cfg.key);
    if (!rootKey.ok()) return fail(rootKey.error().wrap("fleet"));
    auto made = FleetAgent::create(r, runner.clock(), **store, fs, rootKey->publicKey().hex(),
                                   cfg.apiListen, std::move(hooks));
    if (!made.ok()) return fail(made.error().wrap(cfg.source + ": [fleet]"));
    fleet = std::move(*made);
    if (auto st = fleet->start(opts.joinToken); !st.ok()) {
      return fail(st.error().wrap("fleet"));
    }
    fleetNodes = fleet->running();
    desired = allNodes();
    fleetSlot = &fleet;
  }
  if (auto st = parent.start(desired); !st.ok()) return fail(st.error());
  parentStarted = true;

  // A new declared set (a reload, a spec from the parent) with the API's nodes: refused as a
  // whole if the catalog or the parent refuses it, and then the running set stays.
  auto applyDeclared = [&](std::vector<NodeSpec> declared) -> Status {
    // An app's instance label is the app's: a declared node of that label is refused whole.
    for (const NodeSpec& n : declared) {
      if (const std::string app = paas ? paas->apps().appOfInstance(n.label) : ""; !app.empty()) {
        return Error{"node '" + n.label + "' is an instance of app '" + app + "' (GET /v1/apps/" +
                         app + "): choose another label",
                     409};
      }
    }
    std::vector<NodeSpec> before = catalog.declared();
    if (auto st = catalog.setDeclared(std::move(declared)); !st.ok()) return st;
    if (auto st = parent.apply(allNodes()); !st.ok()) {
      (void)catalog.setDeclared(std::move(before));
      return st;
    }
    return {};
  };

  // The control plane's HTTP API: ring0d's where its file's [api] says, a ring1d's where its
  // spec's api_listen says (started, moved or stopped as the spec changes). Served on its own
  // threads, with the daemon's state reached through the reactor.
  directory::Directory directory(**store, runner.clock());
  addDaemonMetrics(registry, parent, r);
  // GET /v1/events streams the tree_events of the out bus from `events`; each audit record goes
  // out signed on the out bus.
  api::EventLog events;
  parent.setOnEvent([&events](const std::string& topicPath, const json& body) {
    json e = body;  // carries "path" already; the topic's form only if it does not
    if (!e.contains("path")) {
      std::string path = topicPath;
      for (char& c : path) c = c == '.' ? '/' : c;
      e["path"] = path;
    }
    events.append("tree_event", e.dump(-1, ' ', false, json::error_handler_t::replace));
  });
  ServedApi served;
  // Destroyed before `served`: closes the log first, so that no stream holds the server's stop
  // up, and the parent stops feeding it.
  struct EndEvents {
    api::EventLog& log;
    NodeParent& parent;
    ~EndEvents() {
      log.close();
      parent.setOnEvent(nullptr);
    }
  } endEvents{events, parent};
  auto badRequest = [](Error e) {
    if (e.code == 0) e.code = 400;
    return e;
  };
  // A node the API made, as the API shows it: the body it was made from, without its admins'
  // password hashes.
  auto shownBody = [](const NodeCatalog::Made& m) {
    json j = json::parse(m.body);
    if (auto it = j.find("admins"); it != j.end() && it->is_array()) {
      for (auto& a : *it) {
        if (a.is_object()) a.erase("password_hash");
      }
    }
    return j;
  };
  auto madeNode = [&](const NodeCatalog::Made& m) {
    json j = shownBody(m);
    j["source"] = "api";
    return j;
  };
  // A node body the API was given, checked as a file's node is; the label from the URL when the
  // body has none.
  auto nodeFromBody = [&](json body, const std::string& label) -> Result<NodeCatalog::Made> {
    if (body.is_object() && !label.empty()) {
      if (!body.contains("label")) body["label"] = label;
      if (body["label"] != label) {
        return Error{"node '" + label + "': the body names another label", 400};
      }
    }
    auto spec = nodeSpecFromTableJson(body, nodeRing);
    if (!spec.ok()) return spec.error();
    if (auto st = checkNodeTree(*spec, nodeRing, nodeStrategies, processStrategies); !st.ok()) {
      return badRequest(st.error());
    }
    // A node the API makes names a compartment the API knows (the file's are free text).
    if (!spec->compartment.empty() &&
        !directory.get(directory::Kind::kCompartment, spec->compartment).ok()) {
      return Error{"node '" + spec->label + "': compartment '" + spec->compartment +
                       "' does not exist (create it first: POST /v1/compartments)",
                   409};
    }
    // The isolation policy (ring/isolation_policy.hpp): the node's compartment's demand, that of
    // the compartment of each ring-2 node it brings that the directory knows (a ring-1 node's
    // body), and in a ring1d, its own spec's min_isolation for the ring-2 nodes it runs.
    if (auto st = checkCompartmentIsolation(*spec, directory, nodeStrategies); !st.ok()) {
      return st.error();
    }
    for (const auto& child : spec->nodes) {
      if (child.compartment.empty() ||
          !directory.get(directory::Kind::kCompartment, child.compartment).ok()) {
        continue;
      }
      if (auto st = checkCompartmentIsolation(child, directory, nodeStrategies); !st.ok()) {
        return st.error();
      }
    }
    if (ring == 1) {
      if (auto st = checkRing1Isolation(ownSpec, *spec, nodeStrategies); !st.ok()) return st.error();
    }
    return NodeCatalog::Made{std::move(*spec), body.dump()};
  };
  auto serveApi = [&](const std::string& listen, const std::string& cert,
                      const std::string& key) -> Status {
    if (listen == served.listen) return {};
    served.stop();
    if (listen.empty()) return {};
    api::ControlApiOptions ao;
    ao.ring = ring;
    api::DaemonView view;
    view.events = &events;
    view.onAudit = [&](const json& record) {
      if (auto st = parent.publishOut("audit", "audit", record); !st.ok()) {
        spdlog::warn("{}: audit record {} not published: {}", name, record.value("id", 0),
                     st.error().message);
      }
    };
    // The tree, each child saying where it comes from: the file (or the parent's spec), or the
    // API (with the body it was made from).
    view.tree = [&] {
      json t = parent.tree();
      if (fleet) t["fleet"] = fleet->status();
      for (auto& n : t["nodes"]) {
        const auto* made = catalog.findMade(n.value("label", ""));
        const bool app = paas && paas->apps().ownsLabel(n.value("label", ""));
        const bool fromFleet =
            std::any_of(fleetNodes.begin(), fleetNodes.end(),
                        [&](const NodeSpec& f) { return f.label == n.value("label", ""); });
        n["source"] = made != nullptr ? "api"
                      : app           ? "app"
                      : fromFleet     ? "fleet"
                      : ring == 0     ? "file"
                                      : "parent";
        if (made != nullptr) n["spec"] = shownBody(*made);
      }
      return t;
    };
    // The catalog changed (and is stored): the parent runs it, or `undo` puts the catalog back
    // and the parent runs that again.
    auto applyOrUndo = [&](const std::function<void()>& undo) -> Status {
      Status st = parent.apply(allNodes());
      if (st.ok()) return st;
      undo();
      (void)parent.apply(allNodes());
      return badRequest(st.error());
    };
    view.createNode = [&, applyOrUndo](const json& body) -> Result<json> {
      auto node = nodeFromBody(body, "");
      if (!node.ok()) return node.error();
      const std::string label = node->spec.label;
      if (const std::string app = paas ? paas->apps().appOfInstance(label) : ""; !app.empty()) {
        return Error{
            "node '" + label + "' is an instance of app '" + app + "' (GET /v1/apps/" + app + ")",
            409};
      }
      if (auto st = catalog.create(*node); !st.ok()) return st.error();
      if (auto st = applyOrUndo([&] { (void)catalog.remove(label); }); !st.ok()) return st.error();
      spdlog::info("{}: node '{}' made through the API", name, label);
      return madeNode(*node);
    };
    view.updateNode = [&, applyOrUndo](const std::string& label, const json& body) -> Result<json> {
      auto node = nodeFromBody(body, label);
      if (!node.ok()) return node.error();
      auto previous = catalog.update(*node);
      if (!previous.ok()) return previous.error();
      if (auto st = applyOrUndo([&] { (void)catalog.update(std::move(*previous)); }); !st.ok()) {
        return st.error();
      }
      spdlog::info("{}: node '{}' changed through the API", name, label);
      return madeNode(*node);
    };
    view.deleteNode = [&, applyOrUndo](const std::string& label) -> Status {
      auto previous = catalog.remove(label);
      if (!previous.ok()) return previous.error();
      if (auto st = applyOrUndo([&] { (void)catalog.create(std::move(*previous)); }); !st.ok()) {
        return st;
      }
      spdlog::info("{}: node '{}' deleted through the API", name, label);
      return {};
    };
    if (fleet) {
      FleetAgent& f = *fleet;
      view.fleet.createNode = [&f](const json& b) { return f.createNode(b); };
      view.fleet.updateNode = [&f](const std::string& l, const json& b) { return f.updateNode(l, b); };
      view.fleet.deleteNode = [&f](const std::string& l) { return f.deleteNode(l); };
      view.fleet.view = [&f] { return f.view(); };
      view.fleet.token = [&f](int64_t ttl) { return f.mintToken(ttl); };
    }
    if (paas) {
      AppManager& apps = paas->apps();
      view.listApps = [&apps] { return apps.list(); };
      view.getApp = [&apps](const std::string& n) { return apps.get(n); };
      view.createApp = [&apps](const json& b) { return apps.create(b); };
      view.updateApp = [&apps](const std::string& n, const json& b) { return apps.update(n, b); };
      view.restartApp = [&apps](const std::string& n) { return apps.restart(n); };
      view.deleteApp = [&apps](const std::string& n) { return apps.remove(n); };
      view.appLogs = [&apps](const std::string& n) { return apps.logFiles(n); };
    }
    auto controlApi = std::make_unique<api::ControlApi>(r, runner.clock(), directory, **store,
                                                        registry, ao, std::move(view));
    api::HttpServerOptions ho;
    ho.listen = listen;
    ho.tlsCert = cert;
    ho.tlsKey = key;
    auto server = api::HttpServer::start(
        ho, [api = controlApi.get()](const api::HttpRequest& q, api::HttpResponse& a) {
          api->handle(q, a);
        });
    if (!server.ok()) return server.error();
    served.control = std::move(controlApi);
    served.http = std::move(*server);
    served.listen = listen;
    spdlog::info("{}: API on {}", name, served.http->url());
    return {};
  };
  // A ring1d's own spec: its admins exist (created once; a password changed since through the
  // API stays), its API listens where the spec says.
  auto applyOwnSpec = [&](const NodeSpec& own) -> Status {
    if (paas) {
      if (auto st = paas->configure(own); !st.ok()) {
        spdlog::error("{}: apps: {}", name, st.error().message);
      }
    }
    for (const auto& a : own.admins) {
      auto made = directory.seedAdmin(a.user, a.passwordHash);
      if (!made.ok()) return made.error();
      if (*made) spdlog::info("{}: API user '{}' created from the parent's spec", name, a.user);
    }
    if (auto st = serveApi(own.apiListen, "", ""); !st.ok()) {
      return st.error().wrap("api_listen " + own.apiListen);
    }
    return {};
  };
  if (ring == 0 && !cfg.apiListen.empty()) {
    if (auto st = serveApi(cfg.apiListen, cfg.apiTlsCert, cfg.apiTlsKey); !st.ok()) {
      return fail(st.error().wrap(cfg.source + ": [api]"));
    }
  }
  if (ring == 1 && !applied.json.empty()) {
    if (auto st = applyOwnSpec(ownSpec); !st.ok()) spdlog::error("{}: {}", name, st.error().message);
  }

  // [metrics] listen: the registry once more, without a token, for a local Prometheus.
  std::unique_ptr<MetricsServer> metricsServer;
  if (!cfg.metricsListen.empty()) {
    auto server = MetricsServer::start(cfg.metricsListen, r, registry);
    if (!server.ok()) return fail(server.error().wrap(cfg.source + ": [metrics]"));
    metricsServer = std::move(*server);
    spdlog::info("{}: metrics on {}/metrics", name, metricsServer->url());
  }

  // A ring1d reports ready only once it runs what its parent wants (stored, or received).
  auto haveSpec = [&] { return ring == 0 || !applied.digest.empty(); };
  std::function<void(const json&)> report;
  if (ring == 1) {
    ParentLink::Handlers h;
    h.onSpec = [&](const json& specJson, const std::string& digest) -> Status {
      auto spec = nodeSpecFromJson(specJson, 1);
      if (!spec.ok()) return spec.error();
      if (auto st = applyAndStoreSpec(**store, applied, {specJson.dump(), digest},
                                      [&]() -> Status {
                                        if (auto t = parent.setTenantUids(spec->tenantUids);
                                            !t.ok()) {
                                          return t;
                                        }
                                        return applyDeclared(spec->nodes);
                                      });
          !st.ok()) {
        (void)parent.setTenantUids(ownSpec.tenantUids);
        return st;
      }
      ownSpec = *spec;
      Status own = applyOwnSpec(ownSpec);
      report(parent.tree());
      return own;
    };
    h.onCommand = [&](const std::string& op, const std::string& path, ParentLink::Reply reply) {
      parent.command(op, path, std::move(reply));
    };
    h.observe = [&] {
      json t = parent.tree();
      if (paas) t["offer"] = {{"ports_free", paas->apps().portsFree()}};
      return t;
    };
    if (auto st = runner.linkToParent(cfg, std::move(h), applied.digest); !st.ok()) {
      return fail(st.error());
    }
  }

  auto reload = [&]() -> Status {
    if (ring != 0) return Error{"ring1d's desired state comes from its parent, not from a reload"};
    auto next = loadConfig(configPath, ring, opts.stateDir);
    if (next.ok()) {
      if (auto st = checkConfig(*next, nodeStrategies, processStrategies); !st.ok()) {
        next = st.error();
      }
    }
    if (!next.ok()) {
      spdlog::error("{}: reload refused, the running config stays: {}", name, next.error().message);
      return next.error();
    }
    spdlog::info("{}: reloading {}", name, configPath);
    Status st = applyDeclared(next->nodes);
    if (!st.ok()) spdlog::error("{}: reload refused: {}", name, st.error().message);
    return st;
  };
  runner.setReload(reload);
  supervise::ControlServer control(r, parent.supervisor(), cfg.label, reload);
  control.setExtension([&](const json& req, supervise::ControlServer::Respond respond) {
    const std::string cmd = req.value("cmd", "");
    if (cmd == "tree") {
      const auto& c = parent.upCounters();
      json bus{{"accepted", c.accepted},
               {"rejected", c.rejectedTotal()},
               {"refused", parent.refusedMessages()}};
      for (size_t i = 0; i < bus::kRejectReasonCount; ++i) {
        bus[std::string(bus::rejectReasonName(static_cast<bus::RejectReason>(i)))] = c.rejected[i];
      }
      json tree = parent.tree();
      if (fleet) tree["fleet"] = fleet->status();
      respond(json{{"ok", true},
                   {"tree", std::move(tree)},
                   {"up_bus", bus},
                   {"observe", cfg.observe},
                   {"public_key", parent.publicKeyHex()}});
      return true;
    }
    if (cmd == "revoke") {
      const std::string label = req.value("label", "");
      Status st = parent.revoke(label);
      respond(st.ok() ? json{{"ok", true}} : json{{"ok", false}, {"error", st.error().message}});
      return true;
    }
    if (cmd == "command") {
      parent.command(req.value("op", ""), req.value("path", ""), std::move(respond));
      return true;
    }
    return false;
  });
  if (auto st = control.listen(cfg.stateDir + "/control.sock"); !st.ok()) return fail(st.error());

  // Whoever started this daemon (systemd for ring0d, the parent's engine for ring1d) hears
  // READY=1 once the children are up, a STATUS= line on every change, and WATCHDOG=1 from the
  // reactor, which proves the loop turns. READY=1 is repeated with each beat: a parent that
  // re-adopted this daemon without having seen the first one learns it within a beat.
  std::string lastStatus;
  report = [&](const json& t) {
    if (paas) paas->apps().observe(t);
    std::string status = summary(t);
    if (!runner.ready() && haveSpec() && t.value("state", "") != "starting") {
      spdlog::info("{}: ready: {}", name, status);
      runner.notifyReady(status);
      lastStatus = status;
    } else if (status != lastStatus) {
      lastStatus = status;
      (void)systemd::notify("STATUS=" + status);
    }
    // A fleet member's host record carries its nodes' trees (coalesced by the agent).
    if (fleet) fleet->treeChanged();
    runner.changed();
  };
  parent.setOnChange(report);
  report(parent.tree());
  runner.startNotifyBeat(ring > 0 ? cfg.heartbeatMs : 0);
  return runner.run(name + " '" + cfg.label + "' (" + cfg.uuid + ") running, state in " +
                    cfg.stateDir);
}

}  // namespace enjin::ring
