// What a ring1d adds to run apps (ring/apps.hpp): the AppManager, and the router in front of
// the apps' instances (router/router.hpp) run as a process of its own supervisor, in the state
// dir's router/ folder, so that neither outlives nor takes down the other: the router's holder
// keeps HAProxy running while ring1d restarts, and a dead HAProxy is restarted like any process.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "enjin/base/result.hpp"
#include "enjin/ring/apps.hpp"

namespace enjin {
class Clock;
class Reactor;
namespace metrics {
class Registry;
}
namespace store {
class Store;
}
}  // namespace enjin

namespace enjin::ring {

class NodeParent;

struct PaasOptions {
  std::string stateDir;   // ring1d's; the router lives in STATE/router
  std::string holderExe;  // enjin-holder, for the router's supervisor
  std::string nodeLabel;  // this ring-1 node
  std::string routerExe = "/usr/sbin/haproxy";
};

class Paas {
 public:
  // Everything given must outlive the Paas. `applyNodes` makes the parent run every node (the
  // declared, the API's and the apps'); `taken` says whether a label is one of the first two.
  Paas(Reactor& reactor, const Clock& clock, store::Store& store, NodeParent& parent,
       metrics::Registry& metrics, PaasOptions options, std::function<uint64_t()> random,
       std::function<Status()> applyNodes, std::function<bool(const std::string&)> taken);
  ~Paas();

  // Reads the stored apps. Before the parent starts.
  Status load();
  // This node's app settings from its spec (ports, router_listen, domain): the router is
  // started, moved or stopped to match. Called at start and with each new spec.
  Status configure(const NodeSpec& own);
  AppManager& apps();
  // Stops the router, then `done`.
  void stop(std::function<void()> done);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace enjin::ring
