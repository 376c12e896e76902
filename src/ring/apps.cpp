#include "enjin/ring/apps.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "enjin/api/http_server.hpp"
#include "enjin/base/clock.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/ring/tenant.hpp"
#include "enjin/router/router.hpp"
#include "enjin/store/store.hpp"
#include "enjin/supervise/limits.hpp"
#include "enjin/supervise/spec_file.hpp"

namespace enjin::ring {

using nlohmann::json;

namespace {

constexpr int kMaxInstances = 100;
constexpr int64_t kTickMs = 250;
// How long a leaving instance stays out of rotation, still running, before it is stopped: the
// requests the router sent it before the drain finish meanwhile.
constexpr int64_t kDrainMs = 1000;
// Tasks an instance needs without a processes limit: ring2d, its holder, the app, its threads.
constexpr uint64_t kSlotsPerInstance = 16;
// After a restart, how long the instances' first reports are waited for before acting anyway.
constexpr int64_t kSettleMs = 5000;

bool validAppName(const std::string& s) {
  if (s.empty() || s.size() > 40 || s.front() == '-' || s.back() == '-') return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

bool validDomain(const std::string& s) {
  if (s.empty() || s.size() > 200 || s.front() == '.' || s.back() == '.') return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
  });
}

// "http:/PATH" or "tcp" (or "" where allowed).
Status checkCheck(const std::string& value, bool emptyOk) {
  if (value.empty() && emptyOk) return {};
  if (value == "tcp") return {};
  if (value.rfind("http:/", 0) == 0 && value.find_first_of(" \t\r\n") == std::string::npos) {
    return {};
  }
  return Error{"expected \"tcp\" or \"http:/PATH\"" + std::string(emptyOk ? " (or \"\")" : "") +
               ", not '" + value + "'"};
}

std::string fmtBytes(uint64_t b) {
  char buf[32];
  if (b >= (1ull << 30)) {
    std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(b) / (1ull << 30));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(b) / (1ull << 20));
  }
  return buf;
}

}  // namespace

Result<PortRange> parsePortRange(std::string_view text) {
  auto r = splitNumberRange(text);
  if (!r || r->first < 1024 || r->second > 65535 || r->first > r->second) {
    return Error{"ports: expected FIRST-LAST within 1024-65535 (\"20000-29999\"), not '" +
                 std::string(text) + "'"};
  }
  return PortRange{static_cast<int>(r->first), static_cast<int>(r->second)};
}

Status checkAppSettings(const NodeSpec& node, int ring) {
  const bool any = !node.ports.empty() || !node.routerListen.empty() || !node.domain.empty();
  if (any && ring != 1) return Error{"ports, router_listen, domain: only a ring-1 node runs apps"};
  if (!node.ports.empty()) {
    if (auto r = parsePortRange(node.ports); !r.ok()) return r.error();
  }
  if (!node.routerListen.empty()) {
    if (auto hp = api::parseListen(node.routerListen); !hp.ok()) {
      return hp.error().wrap("router_listen");
    }
  }
  if (!node.domain.empty() && !validDomain(node.domain)) {
    return Error{"domain: expected a DNS name in lower case (\"apps.example.com\"), not '" +
                 node.domain + "'"};
  }
  return {};
}

Status checkNodeSockets(const std::vector<NodeSocket>& sockets) {
  std::set<std::string> names;
  std::set<int> ports;
  for (const auto& s : sockets) {
    if (!supervise::validName(s.name) || s.name.find(':') != std::string::npos) {
      return Error{"socket '" + s.name + "': name: expected 1 to 64 of A-Z a-z 0-9 _ . -"};
    }
    if (s.port < 1 || s.port > 65535) {
      return Error{"socket '" + s.name + "': port " + std::to_string(s.port) + " is not 1-65535"};
    }
    if (!names.insert(s.name).second) return Error{"socket '" + s.name + "' appears twice"};
    if (!ports.insert(s.port).second) {
      return Error{"socket '" + s.name + "': port " + std::to_string(s.port) + " appears twice"};
    }
  }
  return {};
}

std::string loopbackSocketKey(int port) {
  return "tcp/127.0.0.1:" + std::to_string(port);
}

bool AppSpec::sameRevision(const AppSpec& a, const AppSpec& b) {
  return a.command == b.command && a.cwd == b.cwd && a.strategy == b.strategy &&
         a.health == b.health && a.readiness == b.readiness && a.env == b.env &&
         a.limitsJson == b.limitsJson;
}

Result<AppSpec> appFromJson(const json& body, const AppSpec* base,
                            const std::string& defaultStrategy) {
  if (!body.is_object()) return Error{"app: expected a JSON object", 400};
  AppSpec app = base != nullptr ? *base : AppSpec{};
  const auto named = body.find("name");
  const std::string given = named != body.end() && named->is_string() ? named->get<std::string>() : "";
  std::string where = "app '" + (base != nullptr ? base->name : given) + "'";
  auto bad = [&](const std::string& field, const std::string& why) {
    return Error{where + ": " + field + ": " + why, 400};
  };
  static const std::set<std::string> kKnown = {
      "name",      "command", "cwd",    "instances", "strategy",        "health",
      "readiness", "env",     "limits", "max_surge", "max_unavailable", "ready_timeout_ms"};
  for (const auto& [k, v] : body.items()) {
    // The fields GET answers with may come back in a PUT of what was read: they change nothing.
    if (k == "revision" || k == "status") continue;
    if (!kKnown.count(k)) return bad(k, "unknown field");
  }
  auto str = [&](const char* key, std::string& out) -> Status {
    auto it = body.find(key);
    if (it == body.end()) return {};
    if (!it->is_string()) return bad(key, "expected a string");
    out = it->get<std::string>();
    return {};
  };
  auto num = [&](const char* key, auto& out, int64_t lo, int64_t hi) -> Status {
    auto it = body.find(key);
    if (it == body.end()) return {};
    if (!it->is_number_integer() || it->get<int64_t>() < lo || it->get<int64_t>() > hi) {
      return bad(
          key, "expected a whole number from " + std::to_string(lo) + " to " + std::to_string(hi));
    }
    out = static_cast<std::remove_reference_t<decltype(out)>>(it->get<int64_t>());
    return {};
  };
  if (base == nullptr) {
    if (auto st = str("name", app.name); !st.ok()) return st.error();
    if (!validAppName(app.name)) {
      return bad("name", "expected 1 to 40 of a-z 0-9 - (a DNS label: NAME.localhost), not '" +
                             app.name + "'");
    }
  } else if (body.contains("name") && body["name"] != base->name) {
    return bad("name", "an app cannot be renamed");
  }
  if (auto it = body.find("command"); it != body.end()) {
    if (!it->is_array() || it->empty()) return bad("command", "expected [PROGRAM, ARG...]");
    app.command.clear();
    for (const auto& a : *it) {
      if (!a.is_string() || a.get<std::string>().empty() ||
          a.get<std::string>().find('\0') != std::string::npos) {
        return bad("command", "expected non-empty strings");
      }
      app.command.push_back(a.get<std::string>());
    }
  } else if (base == nullptr) {
    return bad("command", "required: [PROGRAM, ARG...]");
  }
  for (auto st :
       {str("cwd", app.cwd), str("strategy", app.strategy), str("health", app.health),
        str("readiness", app.readiness), num("instances", app.instances, 0, kMaxInstances),
        num("max_surge", app.maxSurge, 0, kMaxInstances),
        num("max_unavailable", app.maxUnavailable, 0, kMaxInstances),
        num("ready_timeout_ms", app.readyTimeoutMs, 1000, 3'600'000)}) {
    if (!st.ok()) return st.error();
  }
  if (app.strategy.empty()) app.strategy = defaultStrategy;
  if (app.strategy != "unix-user" && app.strategy != "sandbox") {
    return bad("strategy",
               "expected unix-user or sandbox (each instance runs as ids of its own), "
               "not '" +
                   app.strategy + "'");
  }
  if (!app.cwd.empty() && app.cwd.front() != '/') return bad("cwd", "expected an absolute path");
  if (auto st = checkCheck(app.health, true); !st.ok()) return bad("health", st.error().message);
  if (auto st = checkCheck(app.readiness, false); !st.ok()) {
    return bad("readiness", st.error().message);
  }
  if (app.maxSurge == 0 && app.maxUnavailable == 0) {
    return bad("max_surge", "max_surge and max_unavailable cannot both be 0 (nothing could move)");
  }
  if (auto it = body.find("env"); it != body.end()) {
    if (!it->is_object()) return bad("env", "expected {\"KEY\": \"VALUE\", ...}");
    app.env.clear();
    for (const auto& [k, v] : it->items()) {
      if (!v.is_string()) return bad("env", k + ": expected a string");
      if (k.empty() || k.find_first_of("=\0", 0, 2) != std::string::npos) {
        return bad("env", "'" + k + "' is not a variable name");
      }
      if (k == "PORT" || k.rfind("LISTEN_", 0) == 0) {
        return bad("env", k + " is set by enjin (the instance's port and socket)");
      }
      app.env[k] = v.get<std::string>();
    }
  }
  if (auto it = body.find("limits"); it != body.end()) {
    if (it->is_null() || (it->is_object() && it->empty())) {
      app.limitsJson.clear();
    } else {
      auto limits = supervise::parseLimits(*it);
      if (!limits.ok()) return bad("limits", limits.error().message);
      app.limitsJson = supervise::limitsToJson(*limits).dump();
    }
  }
  return app;
}

json appToJson(const AppSpec& app) {
  json j{{"name", app.name},
         {"command", app.command},
         {"instances", app.instances},
         {"strategy", app.strategy},
         {"health", app.health},
         {"readiness", app.readiness},
         {"env", app.env},
         {"max_surge", app.maxSurge},
         {"max_unavailable", app.maxUnavailable},
         {"ready_timeout_ms", app.readyTimeoutMs}};
  if (!app.cwd.empty()) j["cwd"] = app.cwd;
  j["limits"] = app.limitsJson.empty() ? json::object() : json::parse(app.limitsJson);
  return j;
}

// --- the manager -----------------------------------------------------------------------------

namespace {

struct Instance {
  std::string label;
  AppSpec spec;  // the definition it runs: its revision's, until it is replaced
  int port = 0;
  uint64_t revision = 0;
  int64_t createdMs = 0;   // wall clock: survives a restart of ring1d
  int64_t drainingMs = 0;  // > 0: leaving since then
  bool everReady = false;  // seen ready by this run of ring1d (or made by an earlier one)
  bool everRouted = false;  // in the router's rotation once (or made by an earlier run)
};

struct App {
  AppSpec spec;
  uint64_t revision = 1;
  uint64_t nextOrdinal = 1;
  std::vector<Instance> instances;
  std::string halted;  // why the roll-out stopped; "" = it did not
  bool removing = false;  // deleted: its instances drain, then it is gone
};

// What the tree says of one instance node.
struct Seen {
  std::string state = "pending";
  int64_t pid = 0;
  int64_t restarts = 0;
  bool ready = false;
  bool known = false;  // the tree had the instance's process (its ring2d reported)
  std::string detail;
};

json instanceToJson(const Instance& i) {
  json j{{"label", i.label},
         {"port", i.port},
         {"revision", i.revision},
         {"created_ms", i.createdMs},
         {"spec", appToJson(i.spec)}};
  if (i.drainingMs > 0) j["draining_ms"] = i.drainingMs;
  return j;
}

}  // namespace

class AppManager::Impl {
 public:
  Impl(Reactor& reactor, const Clock& clock, store::Store& store, AppHost host)
      : reactor_(reactor), clock_(clock), store_(store), host_(std::move(host)) {}

  ~Impl() {
    if (timer_ != 0) reactor_.cancelTimer(timer_);
  }

  Status load() {
    loadedMs_ = clock_.wallMillis();
    auto text = store_.meta("apps");
    if (!text.ok()) return text.error();
    if (!text->has_value()) return {};
    const std::string where = store_.path() + ": meta apps";
    json j = json::parse(**text, nullptr, false);
    if (!j.is_array()) return Error{where + ": not a JSON array"};
    // A field of the wrong type makes json throw: the store is then refused, naming it, like
    // any set that does not parse.
    try {
      return loadApps(j, where);
    } catch (const json::exception& e) {
      apps_.clear();
      return Error{where + ": " + e.what()};
    }
  }

  Status loadApps(const json& j, const std::string& where) {
    for (const auto& a : j) {
      if (!a.is_object()) return Error{where + ": an app that is not a JSON object"};
      auto spec = appFromJson(a.value("spec", json()), nullptr, "unix-user");
      if (!spec.ok()) return spec.error().wrap(where);
      App app;
      app.spec = std::move(*spec);
      app.revision = a.value("revision", uint64_t{1});
      app.nextOrdinal = a.value("next_ordinal", uint64_t{1});
      app.halted = a.value("halted", "");
      app.removing = a.value("removing", false);
      for (const auto& i : a.value("instances", json::array())) {
        if (!i.is_object()) return Error{where + ": an instance that is not a JSON object"};
        Instance in;
        in.label = i.value("label", "");
        in.port = i.value("port", 0);
        in.revision = i.value("revision", uint64_t{0});
        in.createdMs = i.value("created_ms", int64_t{0});
        in.drainingMs = i.value("draining_ms", int64_t{0});
        in.everReady = true;  // made by an earlier run: judged by its process, not halted on
        in.everRouted = true;
        auto ispec = appFromJson(i.value("spec", json()), nullptr, "unix-user");
        if (!ispec.ok()) return ispec.error().wrap(where + ": instance " + in.label);
        in.spec = std::move(*ispec);
        if (!supervise::validName(in.label) || in.port <= 0) {
          return Error{where + ": app '" + app.spec.name + "': a bad instance"};
        }
        app.instances.push_back(std::move(in));
      }
      apps_.push_back(std::move(app));
    }
    return {};
  }

  void start() {
    if (timer_ == 0) tick();
  }

  void configure(PortRange ports, std::vector<std::string> urls, router::Router* router) {
    host_.ports = ports;
    host_.urls = std::move(urls);
    if (router != host_.router) {
      host_.router = router;
      routerError_.clear();
      lastRouted_.reset();
      routed_.clear();
      routeAll();
    }
  }

  std::vector<NodeSpec> nodes() const {
    std::vector<NodeSpec> out;
    for (const auto& a : apps_) {
      for (const auto& i : a.instances) out.push_back(instanceNode(a, i));
    }
    return out;
  }

  bool ownsLabel(const std::string& label) const { return appOfInstance(label) != nullptr; }
  std::string appNameOf(const std::string& label) const {
    const App* a = appOfInstance(label);
    return a != nullptr ? a->spec.name : "";
  }

  void observe(const json& tree) {
    std::map<std::string, Seen> seen;
    for (const auto& n : tree.value("nodes", json::array())) {
      const std::string label = n.value("label", "");
      const App* app = appOfInstance(label);
      if (app == nullptr) continue;
      Seen s;
      s.state = n.value("state", "pending");
      s.detail = n.value("detail", "");
      bool procReady = false;
      for (const auto& p : n.value("processes", json::array())) {
        if (p.value("name", "") != app->spec.name) continue;
        s.known = true;
        s.pid = p.value("pid", int64_t{0});
        s.restarts = p.value("restarts", int64_t{0});
        procReady = p.value("state", "") == "ready";
        if (!procReady) {
          s.state = p.value("state", s.state);
          if (p.contains("detail") && p["detail"].is_string()) s.detail = p["detail"];
        }
      }
      s.ready = procReady && n.value("state", "") == "ready" && n.value("spec_applied", true);
      seen.emplace(label, std::move(s));
    }
    seen_ = std::move(seen);
    for (auto& a : apps_) {
      for (auto& i : a.instances) i.everReady = i.everReady || isReady(i);
    }
    if (!settled_) {
      // After a restart of ring1d the instances are running, but the tree knows them only once
      // their ring2d reports: until then nothing is judged, routed or replaced.
      bool all = true;
      for (const auto& a : apps_) {
        for (const auto& i : a.instances) {
          auto it = seen_.find(i.label);
          all = all && (i.drainingMs > 0 || (it != seen_.end() && it->second.known));
        }
      }
      settled_ = all || clock_.wallMillis() - loadedMs_ >= kSettleMs;
      if (!settled_) return;
    }
    step();
  }

  Result<json> list() const {
    json out = json::array();
    for (const auto& a : apps_) {
      if (!a.removing) out.push_back(show(a));
    }
    return out;
  }

  Result<json> get(const std::string& name) const {
    const App* a = find(name);
    if (a == nullptr) return notFound(name);
    return show(*a);
  }

  Result<json> create(const json& body) {
    if (host_.ports.size() == 0) {
      return Error{"ring-1 node '" + host_.nodeLabel +
                       "' runs no apps: its [[ring1]] table has no ports range "
                       "(ports = \"20000-29999\")",
                   409};
    }
    auto spec = appFromJson(body, nullptr, defaultStrategy_);
    if (!spec.ok()) return spec.error();
    if (find(spec->name) != nullptr) {
      return Error{
          "app '" + spec->name + "' exists (change it with PUT /v1/apps/" + spec->name + ")", 409};
    }
    if (findAny(spec->name) != nullptr) {
      return Error{"app '" + spec->name +
                       "' is being removed: its instances are draining (try again in a second)",
                   409};
    }
    if (taken_) {
      for (int k = 1; k <= spec->instances + spec->maxSurge; ++k) {
        const std::string label = spec->name + "-" + std::to_string(k);
        if (taken_(label)) {
          return Error{"app '" + spec->name + "': its instance label '" + label +
                           "' is a node of this ring-1 node already",
                       409};
        }
      }
    }
    if (auto st = fits(*spec, nullptr); !st.ok()) return st.error();
    App app;
    app.spec = std::move(*spec);
    apps_.push_back(std::move(app));
    App& a = apps_.back();
    const std::string name = a.spec.name;
    // Every instance now, so that an app that cannot be placed leaves nothing behind.
    if (auto st = grow(a, a.spec.instances); !st.ok()) {
      dropApp(name);
      (void)host_.applyNodes();
      (void)save();
      return st.error();
    }
    if (auto st = save(); !st.ok()) {
      dropApp(name);
      (void)host_.applyNodes();
      return st.error();
    }
    spdlog::info("ring1d: app '{}' deployed: {} instance(s), {}", name, a.spec.instances,
                 a.spec.strategy);
    routeAll();
    return show(*find(name));
  }

  // update, restart and remove are transactions: the new state is computed on a copy, stored,
  // and only then made the one in memory; a store that refuses the write leaves both as they
  // were (the error names the store).
  Result<json> update(const std::string& name, const json& body) {
    const App* a = find(name);
    if (a == nullptr) return notFound(name);
    auto spec = appFromJson(body, &a->spec, defaultStrategy_);
    if (!spec.ok()) return spec.error();
    if (auto st = fits(*spec, a); !st.ok()) return st.error();
    App next = *a;
    const bool newRevision = !AppSpec::sameRevision(next.spec, *spec);
    next.spec = std::move(*spec);
    if (newRevision) {
      ++next.revision;
      next.halted.clear();
    }
    if (auto st = commit(std::move(next)); !st.ok()) return st.error();
    spdlog::info(
        "ring1d: app '{}' changed{}", name,
        newRevision ? ": revision " + std::to_string(find(name)->revision) + " rolls out" : "");
    step();
    return show(*find(name));
  }

  Result<json> restart(const std::string& name) {
    const App* a = find(name);
    if (a == nullptr) return notFound(name);
    App next = *a;
    ++next.revision;
    next.halted.clear();
    if (auto st = commit(std::move(next)); !st.ok()) return st.error();
    spdlog::info("ring1d: app '{}': rolling restart (revision {})", name, find(name)->revision);
    step();
    return show(*find(name));
  }

  // The app is gone from the API at once; its instances leave as in a roll-out: out of the
  // router's rotation first (drain), stopped kDrainMs later (stepApp), and the app is forgotten
  // once none is left. A restart of ring1d meanwhile carries on from the store.
  Status remove(const std::string& name) {
    const App* a = find(name);
    if (a == nullptr) return notFound(name);
    App next = *a;
    next.removing = true;
    next.halted.clear();
    const int64_t now = clock_.wallMillis();
    for (auto& i : next.instances) i.drainingMs = i.drainingMs > 0 ? i.drainingMs : now;
    if (auto st = commit(std::move(next)); !st.ok()) return st;
    spdlog::info("ring1d: app '{}' removed: its instances drain", name);
    step();
    routeAll();
    return {};
  }

  Result<api::LogFiles> logFiles(const std::string& name) const {
    const App* a = find(name);
    if (a == nullptr) return notFound(name);
    api::LogFiles out;
    for (const auto& i : a->instances) {
      const std::string dir = host_.nodeStateDir ? host_.nodeStateDir(i.label) : "";
      if (dir.empty()) continue;
      out.push_back({i.label, dir, "logs/" + a->spec.name + ".log",
                     host_.nodeUid ? host_.nodeUid(i.label) : 0});
    }
    return out;
  }

  int portsFree() const { return std::max(0, host_.ports.size() - portsHeld()); }

  // The ports of the range the instances hold or other nodes declare.
  int portsHeld() const {
    std::set<int> used;
    for (const auto& a : apps_) {
      for (const auto& i : a.instances) used.insert(i.port);
    }
    int held = static_cast<int>(used.size());
    if (!host_.portOwner) return held;
    for (int p = host_.ports.first; p <= host_.ports.last; ++p) {
      if (!used.count(p) && !host_.portOwner(p).empty()) ++held;
    }
    return held;
  }

  void setTaken(std::function<bool(const std::string&)> taken) { taken_ = std::move(taken); }
  void setDefaultStrategy(std::string s) { defaultStrategy_ = std::move(s); }

 private:
  static Error notFound(const std::string& name) {
    return Error{"app '" + name + "' does not exist", 404};
  }

  // The app of that name the API knows: not one being removed.
  App* find(const std::string& name) {
    App* a = findAny(name);
    return a != nullptr && !a->removing ? a : nullptr;
  }
  // Also one being removed (its instances still draining).
  App* findAny(const std::string& name) {
    for (auto& a : apps_) {
      if (a.spec.name == name) return &a;
    }
    return nullptr;
  }
  const App* find(const std::string& name) const { return const_cast<Impl*>(this)->find(name); }
  const App* appOfInstance(const std::string& label) const {
    for (const auto& a : apps_) {
      for (const auto& i : a.instances) {
        if (i.label == label) return &a;
      }
    }
    return nullptr;
  }
  void dropApp(const std::string& name) {
    apps_.erase(std::remove_if(apps_.begin(), apps_.end(),
                               [&](const App& a) { return a.spec.name == name; }),
                apps_.end());
  }

  // The ring-2 node of one instance: one process, the app, handed the instance's socket.
  NodeSpec instanceNode(const App&, const Instance& i) const {
    const AppSpec& spec = i.spec;
    NodeSpec n;
    n.label = i.label;
    n.strategy = spec.strategy;
    n.limitsJson = spec.limitsJson;
    n.sockets.push_back({"http", i.port});
    supervise::ProcessSpec p;
    p.name = spec.name;
    p.command = spec.command;
    p.env = spec.env;
    p.env["PORT"] = std::to_string(i.port);
    p.cwd = spec.cwd;
    p.sockets.push_back({"http", "http"});
    // A crashing instance is restarted for as long as it crashes, backing off from 50 ms to
    // 500 ms (the accept queue holds its connections meanwhile): an app is never given up on
    // (its roll-out halts instead, and says why).
    p.restart.delayMs = 50;
    p.restart.backoffMaxMs = 500;
    p.restart.stableAfterMs = 5000;
    p.restart.maxRestarts = 1'000'000;
    const std::string base = "http://127.0.0.1:" + std::to_string(i.port);
    if (spec.readiness == "tcp") {
      p.readiness.kind = "tcp";
      p.readiness.port = i.port;
    } else {
      p.readiness.kind = "http";
      p.readiness.url = base + spec.readiness.substr(5);
    }
    p.readiness.timeoutMs = spec.readyTimeoutMs;
    if (spec.health == "tcp") {
      p.health.kind = "tcp";
      p.health.port = i.port;
    } else if (!spec.health.empty()) {
      p.health.kind = "http";
      p.health.url = base + spec.health.substr(5);
    }
    if (p.health.kind != "none") {
      p.health.intervalMs = 2000;
      p.health.timeoutMs = 1000;
      p.health.failures = 3;
    }
    p.stopTimeoutMs = 5000;
    n.processes.push_back(std::move(p));
    return n;
  }

  // Whether `next` (replacing `current`, or new) fits what the node offers.
  Status fits(const AppSpec& next, const App* current) const {
    const int have = current != nullptr ? static_cast<int>(current->instances.size()) : 0;
    const int want = next.instances + next.maxSurge;
    const int more = std::max(0, want - have);
    const std::string what =
        "app '" + next.name + "' does not fit on ring-1 node '" + host_.nodeLabel + "': ";
    const int freePorts = host_.ports.size() - portsHeld();
    if (more > freePorts) {
      return Error{what + "ports: " + std::to_string(want) + " needed (" +
                       std::to_string(next.instances) + " instances + " +
                       std::to_string(next.maxSurge) + " surge), " + std::to_string(freePorts) +
                       " of " + std::to_string(host_.ports.first) + "-" +
                       std::to_string(host_.ports.last) + " left",
                   409};
    }
    if (more == 0 || !host_.offer) return {};
    const json offer = host_.offer();
    std::optional<supervise::Limits> limits;
    if (!next.limitsJson.empty()) {
      if (auto l = supervise::parseLimits(json::parse(next.limitsJson)); l.ok()) limits = *l;
    }
    const uint64_t memOffered = offer.value("memory_bytes", uint64_t{0});
    if (limits && limits->memoryBytes && memOffered > 0) {
      const uint64_t need = *limits->memoryBytes * static_cast<uint64_t>(more);
      if (need > memOffered) {
        return Error{what + "memory: " + std::to_string(more) + " instances × " +
                         fmtBytes(*limits->memoryBytes) + " = " + fmtBytes(need) + " needed, " +
                         fmtBytes(memOffered) + " offered",
                     409};
      }
    }
    const uint64_t slotsOffered = offer.value("process_slots", uint64_t{0});
    const uint64_t per = limits && limits->processes ? *limits->processes : kSlotsPerInstance;
    if (slotsOffered > 0 && per * static_cast<uint64_t>(more) > slotsOffered) {
      return Error{what + "process slots: " + std::to_string(per * more) + " needed, " +
                       std::to_string(slotsOffered) + " offered",
                   409};
    }
    return {};
  }

  // Makes `count` instances of the app's current revision: a port each, then the parent runs
  // them. On failure nothing of them is left.
  Status grow(App& a, int count) {
    std::vector<Instance> made;
    auto undo = [&] {
      for (const auto& i : made) {
        auto& v = a.instances;
        v.erase(std::remove_if(v.begin(), v.end(),
                               [&](const Instance& x) { return x.label == i.label; }),
                v.end());
        host_.releasePort(i.port);
      }
    };
    for (int k = 0; k < count; ++k) {
      Instance i;
      do {
        i.label = a.spec.name + "-" + std::to_string(a.nextOrdinal++);
      } while (taken_ && taken_(i.label));
      auto port = allocatePort(a.spec.name, i.label);
      if (!port.ok()) {
        undo();
        return port.error();
      }
      i.port = *port;
      i.revision = a.revision;
      i.spec = a.spec;
      i.createdMs = clock_.wallMillis();
      a.instances.push_back(i);
      made.push_back(i);
    }
    if (made.empty()) return {};
    if (auto st = host_.applyNodes(); !st.ok()) {
      undo();
      (void)host_.applyNodes();
      return Error{"app '" + a.spec.name + "': " + st.error().message,
                   st.error().code != 0 ? st.error().code : 409};
    }
    for (const auto& i : made) {
      spdlog::info("ring1d: app '{}': instance {} on port {} (revision {})", a.spec.name, i.label,
                   i.port, i.revision);
    }
    return {};
  }

  // The lowest port of the range no instance holds, no other node declares, and this host lets
  // us bind, held for the instance `label`.
  Result<int> allocatePort(const std::string& app, const std::string& label) {
    std::set<int> used;
    for (const auto& a : apps_) {
      for (const auto& i : a.instances) used.insert(i.port);
    }
    int refused = 0, declared = 0;
    for (int p = host_.ports.first; p <= host_.ports.last; ++p) {
      if (used.count(p)) continue;
      if (host_.portOwner && !host_.portOwner(p).empty()) {
        ++declared;
        continue;
      }
      if (host_.holdPort(p, label).ok()) return p;
      ++refused;
    }
    return Error{"app '" + app + "' does not fit on ring-1 node '" + host_.nodeLabel +
                     "': ports: none of " + std::to_string(host_.ports.first) + "-" +
                     std::to_string(host_.ports.last) + " is free (" + std::to_string(used.size()) +
                     " held by instances, " + std::to_string(declared) +
                     " declared by other nodes, " + std::to_string(refused) +
                     " taken by other programs)",
                 409};
  }

  bool isReady(const Instance& i) const {
    auto it = seen_.find(i.label);
    return it != seen_.end() && it->second.ready;
  }
  // Ready, and in the router's rotation (when there is a router).
  bool isServing(const Instance& i) const {
    return i.drainingMs == 0 && isReady(i) && (host_.router == nullptr || routed_.count(i.label));
  }

  void tick() {
    // The settle deadline holds even when the tree stops changing.
    if (!settled_ && clock_.wallMillis() - loadedMs_ >= kSettleMs) settled_ = true;
    step();
    timer_ = reactor_.addTimerAfterMillis(kTickMs, [this] { tick(); });
  }

  // One step toward every app's definition; repeated on each tree change and every tick.
  void step() {
    if (!settled_) return;
    if (stepping_) {
      again_ = true;
      return;
    }
    stepping_ = true;
    bool changed = false;
    do {
      again_ = false;
      for (auto& a : apps_) changed |= stepApp(a);
      // A removed app whose instances are all gone is forgotten.
      changed |= std::erase_if(apps_, [](const App& a) {
                   if (!a.removing || !a.instances.empty()) return false;
                   spdlog::info("ring1d: app '{}' is gone", a.spec.name);
                   return true;
                 }) > 0;
      routeAll();
    } while (again_);
    stepping_ = false;
    if (changed) (void)save();
  }

  void startDrain(App& a, Instance& i, const char* why) {
    if (i.drainingMs > 0) return;
    i.drainingMs = clock_.wallMillis();
    spdlog::info("ring1d: app '{}': draining instance {} ({})", a.spec.name, i.label, why);
  }

  bool stepApp(App& a) {
    bool changed = false;
    const int64_t now = clock_.wallMillis();
    // Drained instances go.
    std::vector<int> freed;
    auto& v = a.instances;
    for (auto it = v.begin(); it != v.end();) {
      if (it->drainingMs > 0 && now - it->drainingMs >= kDrainMs) {
        spdlog::info("ring1d: app '{}': instance {} stopped", a.spec.name, it->label);
        freed.push_back(it->port);
        it = v.erase(it);
        changed = true;
      } else {
        ++it;
      }
    }
    if (!freed.empty()) {
      if (auto st = host_.applyNodes(); !st.ok()) {
        spdlog::error("ring1d: app '{}': {}", a.spec.name, st.error().message);
      }
      for (int p : freed) host_.releasePort(p);
    }
    if (a.removing) return changed;  // its instances only drain
    std::vector<Instance*> cur, old;
    for (auto& i : v) {
      if (i.drainingMs > 0) continue;
      (i.revision == a.revision ? cur : old).push_back(&i);
    }
    const int n = a.spec.instances;
    // A new instance that is not ready in time halts the roll-out.
    if (a.halted.empty()) {
      for (Instance* i : cur) {
        // An instance made before this run of ring1d gets its whole timeout from the start.
        const int64_t since = std::max(i->createdMs, loadedMs_);
        // Only an instance that has never been ready halts a roll-out; one that was and
        // crashed since is restarted, like any process.
        if (now - since < a.spec.readyTimeoutMs) continue;
        const std::string after = std::to_string(a.spec.readyTimeoutMs / 1000) + " s: ";
        const char* drainWhy = "not ready";
        if (!i->everReady && !isReady(*i)) {
          const auto s = seen_.find(i->label);
          std::string why = s == seen_.end() ? "not started" : s->second.state;
          if (s != seen_.end() && !s->second.detail.empty()) why += ": " + s->second.detail;
          a.halted = "roll-out halted: instance " + i->label + " not ready after " + after + why;
        } else if (host_.router != nullptr && !i->everRouted && !routerError_.empty()) {
          // Ready, but the router takes no change: the roll-out cannot move, and says why.
          a.halted = "roll-out halted: instance " + i->label + " not in the router after " + after +
                     "router: " + routerError_;
          drainWhy = "not in the router";
        } else {
          continue;
        }
        spdlog::warn("ring1d: app '{}': {}", a.spec.name, a.halted);
        changed = true;
        // During a roll-out the old instances keep serving and the failed one goes; a first
        // deploy keeps trying (its logs tell why) until its definition changes.
        if (!old.empty()) startDrain(a, *i, drainWhy);
      }
      if (!a.halted.empty()) return true;
    }
    // Too many of the current revision: the surplus leaves, those not ready first.
    if (static_cast<int>(cur.size()) > n) {
      std::stable_sort(cur.begin(), cur.end(),
                       [&](Instance* x, Instance* y) { return isReady(*x) < isReady(*y); });
      for (size_t k = n; k < cur.size(); ++k) startDrain(a, *cur[k], "scaled down");
      return true;
    }
    if (!a.halted.empty()) return changed;
    // An old instance leaves when availability allows, or when the new ones are all there (the
    // surge is spent). Before any new one is made: making one may move the instances in memory.
    if (!old.empty()) {
      int serving = 0;
      for (Instance* i : cur) serving += isServing(*i) ? 1 : 0;
      for (Instance* i : old) serving += isServing(*i) ? 1 : 0;
      // Those not serving first: removing them costs no availability.
      std::stable_sort(old.begin(), old.end(),
                       [&](Instance* x, Instance* y) { return isServing(*x) < isServing(*y); });
      Instance* o = old.front();
      const int after = serving - (isServing(*o) ? 1 : 0);
      const int live = static_cast<int>(cur.size() + old.size());
      if (after >= n - a.spec.maxUnavailable || live > n + a.spec.maxSurge) {
        startDrain(a, *o, "replaced");
        old.erase(old.begin());
        changed = true;
      }
    }
    const int missing = n - static_cast<int>(cur.size());
    if (missing > 0) {
      if (old.empty()) {
        changed |= growOrHalt(a, missing);
      } else {
        // One at a time: the next only after the last is ready, and no more than the surge,
        // counting those still draining (they hold a port and memory until they are gone).
        const bool pending =
            std::any_of(cur.begin(), cur.end(), [&](Instance* i) { return !isServing(*i); });
        const int live = static_cast<int>(a.instances.size());
        if (!pending && live < n + a.spec.maxSurge) changed |= growOrHalt(a, 1);
      }
    }
    return changed;
  }

  bool growOrHalt(App& a, int count) {
    if (auto st = grow(a, count); !st.ok()) {
      a.halted = "roll-out halted: " + st.error().message;
      spdlog::warn("ring1d: app '{}': {}", a.spec.name, a.halted);
    }
    return true;
  }

  // The router's view: every app's instances, ready ones in rotation, leaving ones draining.
  void routeAll() {
    // Before the instances have reported (a restart of ring1d), the router keeps what it has.
    if (host_.router == nullptr || !settled_) return;
    std::vector<router::RouterBackend> backends;
    std::set<std::string> serving;
    for (const auto& a : apps_) {
      router::RouterBackend b;
      b.app = a.spec.name;
      for (const auto& i : a.instances) {
        router::RouterServer s;
        s.name = i.label;
        s.port = i.port;
        if (i.drainingMs > 0) {
          s.state = router::RouterServer::State::kDrain;
        } else if (isReady(i)) {
          s.state = router::RouterServer::State::kReady;
          serving.insert(i.label);
        } else {
          s.state = router::RouterServer::State::kMaint;
        }
        b.servers.push_back(std::move(s));
      }
      backends.push_back(std::move(b));
    }
    if (lastRouted_ && backends == *lastRouted_ && serving == routed_) return;
    if (auto st = host_.router->apply(backends); !st.ok()) {
      // Tried again next tick: lastRouted_ is not what the router has.
      if (st.error().message != routerError_) {
        spdlog::warn("ring1d: router: {}", st.error().message);
      }
      routerError_ = st.error().message;
      return;
    }
    routerError_.clear();
    lastRouted_ = std::move(backends);
    routed_ = std::move(serving);
    for (auto& a : apps_) {
      for (auto& i : a.instances) i.everRouted = i.everRouted || routed_.count(i.label) > 0;
    }
  }

  json show(const App& a) const {
    json j = appToJson(a.spec);
    j["revision"] = a.revision;
    json list = json::array();
    int ready = 0, updated = 0;
    bool allCurrent = true;
    for (const auto& i : a.instances) {
      auto s = seen_.find(i.label);
      const Seen seen = s != seen_.end() ? s->second : Seen{};
      const bool serving = isServing(i);
      ready += serving ? 1 : 0;
      updated += serving && i.revision == a.revision ? 1 : 0;
      if (i.revision != a.revision || i.drainingMs > 0) allCurrent = false;
      json e{{"name", i.label},
             {"node", i.label},
             {"port", i.port},
             {"state", i.drainingMs > 0 ? "draining" : seen.state},
             {"restarts", seen.restarts},
             {"revision", i.revision},
             {"pid", seen.pid},
             {"in_router", host_.router != nullptr && routed_.count(i.label) > 0}};
      if (!seen.detail.empty()) e["detail"] = seen.detail;
      list.push_back(std::move(e));
    }
    const bool complete = allCurrent && updated == a.spec.instances &&
                          static_cast<int>(a.instances.size()) == a.spec.instances;
    json urls = json::array();
    for (std::string u : host_.urls) {
      if (auto p = u.find("NAME"); p != std::string::npos) u.replace(p, 4, a.spec.name);
      urls.push_back(u);
    }
    j["status"] = {{"rollout", !a.halted.empty() ? "halted"
                               : complete        ? "complete"
                                                 : "in progress"},
                   {"message", a.halted},
                   {"urls", urls},
                   {"ready", ready},      // serving, of any revision
                   {"updated", updated},  // serving, of the app's revision
                   {"instances", list}};
    return j;
  }

  // Stores the apps with `next` in place of the app of its name, then makes that the state.
  Status commit(App next) {
    const std::string name = next.spec.name;
    std::vector<App> apps = apps_;
    for (auto& a : apps) {
      if (a.spec.name == name) a = std::move(next);
    }
    if (auto st = save(apps); !st.ok()) {
      return Error{"app '" + name + "': not changed: " + st.error().message, 500};
    }
    apps_ = std::move(apps);
    return {};
  }

  Status save() { return save(apps_); }
  Status save(const std::vector<App>& apps) {
    json out = json::array();
    for (const auto& a : apps) {
      json inst = json::array();
      for (const auto& i : a.instances) inst.push_back(instanceToJson(i));
      out.push_back({{"spec", appToJson(a.spec)},
                     {"revision", a.revision},
                     {"next_ordinal", a.nextOrdinal},
                     {"halted", a.halted},
                     {"removing", a.removing},
                     {"instances", std::move(inst)}});
    }
    return store_.setMeta("apps", out.dump());
  }

  Reactor& reactor_;
  const Clock& clock_;
  store::Store& store_;
  AppHost host_;
  std::vector<App> apps_;
  std::map<std::string, Seen> seen_;
  std::function<bool(const std::string&)> taken_;
  std::string defaultStrategy_ = "unix-user";
  // What the router was last told; none yet: the first routeAll() tells it, even of no apps.
  std::optional<std::vector<router::RouterBackend>> lastRouted_;
  std::set<std::string> routed_;
  std::string routerError_;  // the router's last refusal; "" once it takes a change again
  Reactor::TimerId timer_ = 0;
  int64_t loadedMs_ = 0;
  bool settled_ = false;
  bool stepping_ = false;
  bool again_ = false;
};

AppManager::AppManager(Reactor& reactor, const Clock& clock, store::Store& store, AppHost host)
    : impl_(std::make_unique<Impl>(reactor, clock, store, std::move(host))) {}
AppManager::~AppManager() = default;
Status AppManager::load() {
  return impl_->load();
}
void AppManager::start() {
  impl_->start();
}
void AppManager::configure(PortRange ports, std::vector<std::string> urls, router::Router* router) {
  impl_->configure(ports, std::move(urls), router);
}
std::vector<NodeSpec> AppManager::nodes() const {
  return impl_->nodes();
}
bool AppManager::ownsLabel(const std::string& label) const {
  return impl_->ownsLabel(label);
}
std::string AppManager::appOfInstance(const std::string& label) const {
  return impl_->appNameOf(label);
}
void AppManager::setTakenLabels(std::function<bool(const std::string&)> taken) {
  impl_->setTaken(std::move(taken));
}
void AppManager::observe(const json& tree) {
  impl_->observe(tree);
}
Result<json> AppManager::list() const {
  return impl_->list();
}
Result<json> AppManager::get(const std::string& name) const {
  return impl_->get(name);
}
Result<json> AppManager::create(const json& body) {
  return impl_->create(body);
}
Result<json> AppManager::update(const std::string& name, const json& body) {
  return impl_->update(name, body);
}
Result<json> AppManager::restart(const std::string& name) {
  return impl_->restart(name);
}
Status AppManager::remove(const std::string& name) {
  return impl_->remove(name);
}
Result<api::LogFiles> AppManager::logFiles(const std::string& name) const {
  return impl_->logFiles(name);
}
int AppManager::portsFree() const {
  return impl_->portsFree();
}
void AppManager::setDefaultStrategy(std::string strategy) {
  impl_->setDefaultStrategy(std::move(strategy));
}

}  // namespace enjin::ring
