// A fleet host's traffic manager (ring 0): an HTTP router (router/router.hpp, the same HAProxy
// the PaaS runs) in front of the fleet's ring-1 nodes. `Host: NAME.<domain>` and every name below
// it (`shop.NAME.<domain>`) go to the ring-1 router of the host that runs node NAME now, so that
// traffic follows a node across a failover. ring0d runs the router as the one process of a
// supervisor of its own, in STATE/traffic: a dead HAProxy is restarted, a restarted ring0d
// re-adopts the one still serving.
//
// Threads: made, fed and stopped on the reactor. The router's blocking admin I/O (apply(),
// stats()) runs on a thread of the manager's own; route() only hands it the latest backends.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "enjin/base/result.hpp"

namespace enjin {
class Reactor;
namespace metrics {
class Registry;
}
}  // namespace enjin

namespace enjin::ring {

struct TrafficOptions {
  std::string stateDir;   // ring0d's; the router lives in STATE/traffic
  std::string holderExe;  // enjin-holder, for the router's supervisor
  std::string listen;     // ADDR:PORT the traffic manager listens on
  std::string domain;     // NAME.<domain>; NAME.localhost always
  std::string routerExe = "/usr/sbin/haproxy";
};

class TrafficManager {
 public:
  // Writes the router's first configuration (unless one from a previous ring0d is there: the
  // router it started may still serve from it), starts (or re-adopts) the router, registers its
  // counters in `metrics` (enjin_router_*{app=NODE}). Blocking and bounded, before the reactor
  // runs. `reactor` and `metrics` must outlive the manager.
  static Result<std::unique_ptr<TrafficManager>> start(Reactor& reactor, metrics::Registry& metrics,
                                                       TrafficOptions options,
                                                       std::function<uint64_t()> random);
  ~TrafficManager();

  // The fleet's ring-1 nodes and where each one's router is reached now ("10.0.0.2:8080", or ""
  // while it runs nowhere that can be reached). Never blocks: the router thread applies the
  // latest routes given (a router that refuses them is tried again every 2 s). A node label that
  // is not a DNS label is not routed.
  void route(const std::map<std::string, std::string>& routers);
  // Stops the router, then `done`.
  void stop(std::function<void()> done);

 private:
  TrafficManager();
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace enjin::ring
