// The control plane's HTTP API of one ring daemon (ring0d's meta API, a ring1d's ring-1 API):
// one table of routes, each with the action it needs; sessions; the directory's objects; the
// tree; the audit log; the metrics. Requests are served on the HTTP server's threads; what reads
// or writes the daemon's state runs on its reactor thread through a Handoff, so the store keeps
// one writer. Password hashing runs on the HTTP threads, never on the reactor.
//
// Authorization: every route but POST /v1/sessions needs `Authorization: Bearer TOKEN`; the
// session's user must be allowed the route's action on its resource by the rules of its roles
// (deny by default, an explicit deny beats any allow) before the handler runs.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "enjin/api/http_server.hpp"
#include "enjin/api/log_tail.hpp"
#include "enjin/base/result.hpp"

namespace enjin {
class Clock;
class Reactor;
namespace directory {
class Directory;
}
namespace metrics {
class Registry;
}
namespace store {
class Store;
}
}  // namespace enjin

namespace enjin::api {

struct ControlApiOptions {
  int ring = 0;                          // whose API: 0 the meta API, 1 a ring-1 node's
  int64_t sessionTtlMs = 12 * 3'600'000; // a token's life
  int64_t reactorTimeoutMs = 5000;       // a reactor that does not answer in this long: 503
};

class EventLog;

// What the API reads and changes of its daemon. The functions are called on the reactor thread;
// an empty one makes its routes answer 405 ("not served by this daemon").
struct DaemonView {
  std::function<nlohmann::json()> tree;  // as `enjinctl status --json` shows it
  // The nodes of the ring below made through the API (body: a node spec as JSON, proto/rings.md).
  // Errors carry their HTTP status: 400 a bad spec, 404 no such node, 409 a node the daemon's
  // file (or its parent's spec) declares, or a label in use.
  std::function<Result<nlohmann::json>(const nlohmann::json& body)> createNode;
  std::function<Result<nlohmann::json>(const std::string& label, const nlohmann::json& body)>
      updateNode;
  std::function<Status(const std::string& label)> deleteNode;
  // A ring1d's apps (ring/apps.hpp: bodies and answers as GET /v1/apps/NAME shows them). Errors
  // carry their HTTP status: 400 a bad body, 404 no such app, 409 a name in use or an app that
  // does not fit. Empty: 405.
  std::function<Result<nlohmann::json>()> listApps;
  std::function<Result<nlohmann::json>(const std::string& name)> getApp;
  std::function<Result<nlohmann::json>(const nlohmann::json& body)> createApp;
  std::function<Result<nlohmann::json>(const std::string& name, const nlohmann::json& body)>
      updateApp;
  std::function<Result<nlohmann::json>(const std::string& name)> restartApp;
  std::function<Status(const std::string& name)> deleteApp;
  // Each instance's log file, for GET /v1/apps/NAME/logs (read on the HTTP thread, never on the
  // reactor).
  std::function<Result<LogFiles>(const std::string& name)> appLogs;
  // Each audit record once stored (its JSON as GET /v1/audit shows it): the daemon publishes it
  // signed on its out bus.
  std::function<void(const nlohmann::json& record)> onAudit;
  // A fleet member's (ring0d with [fleet], ring/fleet_agent.hpp): the fleet's nodes, its view
  // and its enrolment tokens. Called on the HTTP thread (they wait on etcd, never on the
  // reactor). With createNode set, POST, PUT and DELETE /v1/nodes change the fleet's nodes;
  // GET /v1/nodes still lists what runs on this host. Errors carry their HTTP status (503: etcd
  // cannot be reached or has no quorum).
  struct Fleet {
    std::function<Result<nlohmann::json>(const nlohmann::json& body)> createNode;
    std::function<Result<nlohmann::json>(const std::string& label, const nlohmann::json& body)>
        updateNode;
    std::function<Status(const std::string& label)> deleteNode;
    std::function<Result<nlohmann::json>()> view;
    std::function<Result<nlohmann::json>(int64_t ttlSeconds)> token;
  } fleet;
  // The observation stream GET /v1/events serves (nullptr: 405). Must outlive the API.
  EventLog* events = nullptr;
};

class ControlApi {
 public:
  // Create on the reactor thread; everything given must outlive the API.
  ControlApi(Reactor& reactor, const Clock& clock, directory::Directory& directory,
             store::Store& store, metrics::Registry& metrics, ControlApiOptions options,
             DaemonView view);
  ~ControlApi();
  ControlApi(const ControlApi&) = delete;
  ControlApi& operator=(const ControlApi&) = delete;

  // Before the HTTP server stops: requests waiting for the reactor are answered 503 at once
  // (the reactor thread may be the one joining them), and later ones too.
  void close();

  // Answers one request; thread-safe (the HTTP server's handler).
  void handle(const HttpRequest& request, HttpResponse& response);

  struct RouteInfo {
    std::string method;
    std::string pattern;  // "/v1/users/{name}"
    std::string action;   // "users:read"; "" = any signed-in user; "-" = no session needed
  };
  // Every route, for docs and for tests that walk the table.
  std::vector<RouteInfo> routes() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace enjin::api
