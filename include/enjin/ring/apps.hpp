// Apps: what a ring1d runs as a PaaS. An app is a name, a command, an instance count, a node
// strategy (unix-user or sandbox), readiness and health checks, env and limits. Each instance is
// a ring-2 node of its own ("shop-3": its own tenant ids, its own loopback port), made from the
// app's definition; the instances of one app share nothing else.
//
// The AppManager keeps the apps in ring1d's store (meta "apps"), turns them into the ring-2
// nodes the parent runs beside the declared and API-made ones, gives each instance a port from
// the ring-1 node's `ports` range (the parent binds it and hands it down, NodeSocket), and moves
// every app toward its definition one step at a time on the reactor:
//
//   - a new app, or more instances: every missing instance is made at once;
//   - a changed definition (command, env, strategy, checks, limits) or a restart: a new revision,
//     rolled out like a Kubernetes Deployment: at most `instances + max_surge` instances live and
//     at least `instances - max_unavailable` ready; an old instance is drained from the router
//     and stopped only once a new one is ready and routed. A new instance not ready within
//     `ready_timeout` halts the roll-out: it is removed, the old ones keep serving, and the app
//     says why;
//   - fewer instances: the surplus is drained, then stopped.
//
// The router (router/router.hpp) hears every change of the set of ready instances: an instance
// is in rotation only while it is ready, and leaves it (drain) before it is stopped.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "enjin/api/log_tail.hpp"
#include "enjin/base/result.hpp"
#include "enjin/ring/config.hpp"

namespace enjin {
class Clock;
class Reactor;
namespace store {
class Store;
}
namespace router {
class Router;
}
}  // namespace enjin

namespace enjin::ring {

// A ring-1 node's `ports = "20000-29999"`: both ends included, 1024..65535.
struct PortRange {
  int first = 0;
  int last = -1;  // first > last: no ports
  int size() const { return last - first + 1; }
};
Result<PortRange> parsePortRange(std::string_view text);

// The app settings of a ring-1 node (ports, router_listen, domain) and that only a ring-1 node
// has them. Errors name the key.
Status checkAppSettings(const NodeSpec& node, int ring);
// A ring-2 node's sockets: valid names, ports 1..65535, each name and port once.
Status checkNodeSockets(const std::vector<NodeSocket>& sockets);

// The socket table's key a parent keeps the listening socket of 127.0.0.1:port under
// ("tcp/127.0.0.1:20001").
std::string loopbackSocketKey(int port);

// One app as the API gives it. The JSON form (appToJson / appFromJson) is the API's body:
//   {"name","command":[ARGV..],"instances":N,"strategy","health":"http:/PATH"|"tcp"|"",
//    "readiness":"http:/PATH"|"tcp","env":{..},"limits":{..},"cwd","max_surge","max_unavailable",
//    "ready_timeout_ms"}
struct AppSpec {
  std::string name;                  // [a-z0-9-]{1,40}, a DNS label (NAME.localhost)
  std::vector<std::string> command;  // argv; command[0] absolute or on PATH
  std::string cwd;                   // the bundle directory it runs in ("" = its home)
  int instances = 1;                 // 0..100
  std::string strategy;              // unix-user | sandbox
  std::string health;                // "" (none), "tcp", "http:/PATH"
  std::string readiness = "tcp";     // "tcp", "http:/PATH"
  std::map<std::string, std::string> env;
  std::string limitsJson;  // canonical, supervise::limitsToJson; "" = none
  int maxSurge = 1;
  int maxUnavailable = 0;
  int64_t readyTimeoutMs = 30'000;

  bool operator==(const AppSpec&) const = default;
  // Whether running instances must be replaced to go from `a` to `b` (anything but the count
  // and the roll-out settings).
  static bool sameRevision(const AppSpec& a, const AppSpec& b);
};

// Reads a body. With `base`, only the fields given change (PUT); without, the name and the
// command are required. `defaultStrategy` fills an absent strategy. Errors are 400 and name the
// app and the field.
Result<AppSpec> appFromJson(const nlohmann::json& body, const AppSpec* base,
                            const std::string& defaultStrategy);
nlohmann::json appToJson(const AppSpec& app);

// What the apps need of their ring1d, given once.
struct AppHost {
  std::string nodeLabel;  // the ring-1 node, for messages
  // Set by AppManager::configure (they come with the node's spec):
  PortRange ports;  // size 0: apps are refused
  std::vector<std::string>
      urls;  // "http://NAME.localhost:8080/", NAME for the app (none: no router)
  // What the node offers now (ring/offer.hpp's hostOffer(): memory_bytes, process_slots).
  std::function<nlohmann::json()> offer;
  // The instance nodes changed: the parent must run the union of its nodes and these
  // (AppManager::nodes()). An error is reported with the change that caused it, which is undone.
  std::function<Status()> applyNodes;
  // Binds and keeps 127.0.0.1:port for the instance `label` (the parent's socket table), or
  // frees it. holdPort fails when the port is taken (the manager then tries the next one).
  std::function<Status(int port, const std::string& label)> holdPort;
  std::function<void(int port)> releasePort;
  // The node that holds or declares a socket on `port` ("" if none): a port some node's spec
  // names is never dealt to an instance. Unset: none.
  std::function<std::string(int port)> portOwner;
  router::Router* router = nullptr;  // told the routed instances after every change; or none
  // Where each instance's logs are: the state dir of a node by its label ("" = not known yet).
  std::function<std::string(const std::string& label)> nodeStateDir;
  // The uid a node's daemon runs as (its tenant uid; 0: root, or not known).
  std::function<uint32_t(const std::string& label)> nodeUid;
};

class AppManager {
 public:
  // `reactor`, `clock` and `store` must outlive the manager.
  AppManager(Reactor& reactor, const Clock& clock, store::Store& store, AppHost host);
  ~AppManager();
  AppManager(const AppManager&) = delete;
  AppManager& operator=(const AppManager&) = delete;

  // Reads the apps from the store (a stored set that does not parse is an error naming the
  // store). Call before the parent starts: nodes() is then what it must run.
  Status load();
  // Starts the roll-out timer. Call once the parent runs.
  void start();
  // The node's port range, the apps' URL patterns and the router (nullptr: none), from its spec.
  void configure(PortRange ports, std::vector<std::string> urls, router::Router* router);

  // The ring-2 nodes of every app's instances.
  std::vector<NodeSpec> nodes() const;
  bool ownsLabel(const std::string& label) const;
  // The app whose instance `label` is ("" if none).
  std::string appOfInstance(const std::string& label) const;
  // The labels the parent's other nodes use: an app whose instances would collide is refused.
  void setTakenLabels(std::function<bool(const std::string& label)> taken);

  // The tree changed (the parent's tree, as NodeParent::tree() gives it).
  void observe(const nlohmann::json& tree);

  // The API. Errors carry their HTTP status: 400 a bad body, 404 no such app, 409 a name in use
  // or an app that does not fit (naming what ran out).
  Result<nlohmann::json> list() const;
  Result<nlohmann::json> get(const std::string& name) const;
  Result<nlohmann::json> create(const nlohmann::json& body);
  Result<nlohmann::json> update(const std::string& name, const nlohmann::json& body);
  Result<nlohmann::json> restart(const std::string& name);
  Status remove(const std::string& name);
  // Each instance's log file, for `app logs`: below its node's state dir, owned by its uid.
  Result<api::LogFiles> logFiles(const std::string& name) const;

  // The ports of the range no instance holds (the node's job offer: ports_free).
  int portsFree() const;
  // The default node strategy of an app on this host.
  void setDefaultStrategy(std::string strategy);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace enjin::ring
