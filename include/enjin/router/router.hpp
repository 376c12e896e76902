// The HTTP router in front of a node's apps: `Host: NAME.localhost` (and `NAME.<domain>`) goes to
// the ready instances of app NAME. ring1d runs the router as one of its processes (processSpec())
// and tells it, whenever instances come, go or change health, which servers each app has
// (apply()). One interface, so another proxy is one more implementation; HAProxy is the first.
//
// Contracts:
// - Not thread-safe: one owner (ring1d's reactor) calls every member. apply() and stats() do
//   blocking I/O on local unix sockets, each read and write bounded by a short timeout.
// - apply() is idempotent: the same backends twice change nothing the second time.
// - apply() once before the process is started: it writes the configuration the process reads.
//   apply() while the process is not running succeeds; the configuration waits for its start.
// - A server that disappears from an app (or is given kDrain) receives no new requests once
//   apply() returned; the caller stops the instance only after that.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "enjin/base/result.hpp"
#include "enjin/metrics/metrics.hpp"
#include "enjin/supervise/process_spec.hpp"

namespace enjin::router {

// One instance of an app, where the router reaches it.
struct RouterServer {
  std::string name;                // the instance, unique in its app ([A-Za-z0-9_.-]{1,64})
  std::string host = "127.0.0.1";  // an IPv4 or IPv6 address, no name to resolve
  int port = 0;
  // kReady: receives requests. kDrain: no new requests, the ones under way finish. kMaint: none.
  enum class State { kReady, kDrain, kMaint } state = State::kReady;
  bool operator==(const RouterServer&) const = default;
};

struct RouterBackend {
  std::string app;  // a DNS label: [a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?
  std::vector<RouterServer> servers;
  bool operator==(const RouterBackend&) const = default;
};

struct RouterSettings {
  std::string listenHost = "127.0.0.1";
  int listenPort = 0;
  std::vector<std::string> domains;  // NAME.<domain> is routed too; "localhost" always is
  // Also every name below NAME.<domain> (`*.NAME.<domain>`): the traffic manager of a fleet
  // host, whose NAME is a ring-1 node that routes its own apps' names further down. Off for the
  // app router of a ring1d, where NAME.<domain> is an app's one name.
  bool subdomains = false;
  std::string stateDir;  // the config, the sockets and the pid file live here
  std::string exe = "/usr/sbin/haproxy";
};

// One app's traffic since the router's process started (or since this Router was made, whichever
// is later). Counts survive the router's own reloads, less what the old worker served while the
// new one started (the old worker's counts are read just before the reload).
struct RouterAppStats {
  std::string app;
  uint64_t requests = 0;
  uint64_t responses2xx = 0;
  uint64_t responses4xx = 0;
  uint64_t responses5xx = 0;
  uint64_t connectErrors = 0;     // connections to an instance that failed
  uint64_t responseErrors = 0;    // instances that closed or broke a response
  uint64_t retries = 0;           // connection attempts retried
  uint64_t redispatches = 0;      // requests moved to another instance
  double avgResponseSeconds = 0;  // time to the response's head, over the last 1024 requests
};

class Router {
 public:
  virtual ~Router();

  // How ring1d runs the router: name "router", restarted always, ready once it listens.
  virtual supervise::ProcessSpec processSpec() const = 0;
  // Makes the router send each app's requests to its kReady servers. Servers that changed only
  // (address, state, one more or one less) change at run time; a new set of apps, or an app
  // that outgrew its server slots, re-renders the configuration and reloads the router without
  // dropping a connection. A configuration the proxy rejects never reaches the running router
  // (error 500, the proxy's own message); a bad app or server name is a 400.
  virtual Status apply(const std::vector<RouterBackend>& backends) = 0;
  // Per app, in the order of the last apply().
  virtual Result<std::vector<RouterAppStats>> stats() = 0;
};

// The HAProxy implementation (src/router/haproxy.cpp). Creates settings.stateDir if missing.
std::unique_ptr<Router> makeHaproxyRouter(RouterSettings settings);

// Prometheus families of the router, from one stats() snapshot:
//   enjin_router_requests_total{app}, enjin_router_responses_total{app,code="2xx|4xx|5xx"},
//   enjin_router_errors_total{app,kind="connect|response"}, enjin_router_retries_total{app},
//   enjin_router_redispatches_total{app}, enjin_router_response_time_seconds{app} (gauge).
void writeRouterMetrics(metrics::Registry::Writer& out, const std::vector<RouterAppStats>& stats);
// Registers a collector that renders writeRouterMetrics(snapshot()) at each scrape. `snapshot`
// runs on the rendering thread: it returns a copy the router's owner keeps, it does not call
// Router::stats() (which belongs to the owner's thread).
void addRouterMetrics(metrics::Registry& registry,
                      std::function<std::vector<RouterAppStats>()> snapshot);

}  // namespace enjin::router
