// The metrics of a parent daemon (ring0d, a ring1d) beyond the API's own, for GET /metrics:
//
//   enjin_nodes{ring,state}                               gauge    nodes below, by ring and state
//   enjin_node_restarts_total{node}                       counter  restarts of a node's daemon
//   enjin_process_up{node,process}                        gauge    1 while the process runs
//   enjin_process_restarts_total{node,process}            counter
//   enjin_process_cpu_seconds_total{node,process}         counter  user + system, read by ring2d
//   enjin_process_resident_memory_bytes{node,process}     gauge
//   enjin_bus_messages_accepted_total                     counter  up bus, signed and verified
//   enjin_bus_messages_rejected_total{reason}             counter  up bus, by rejectReasonName
//   enjin_bus_messages_refused_total                      counter  verified, but broke the protocol
//   enjin_bus_connections_admitted_total{bus}             counter  CURVE clients ZAP admitted
//   enjin_bus_connections_rejected_total{bus,reason}      counter  refused: plaintext, unknown_key,
//                                                                  handshake (tcp:// buses only)
//   enjin_reactor_lag_seconds                             histogram  how late the loop's timers fire
//
// `node` is the node's path below this daemon ("r1/web" on ring0d, "web" on a ring1d), as
// enjinctl names it. The tree's families are computed from NodeParent::tree() at each render.
//
// Threading: the collectors read the NodeParent, so the registry must be rendered on the reactor
// thread (the API's GET /metrics and MetricsServer do); the lag histogram is updated there too.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "enjin/base/result.hpp"
#include "enjin/metrics/metrics.hpp"

namespace enjin {
class Reactor;
namespace bus {
struct BusCounters;
struct ConnectionCounters;
}
namespace api {
class HttpServer;
}
}  // namespace enjin

namespace enjin::ring {

class NodeParent;

// Registers the families above in `registry` and the reactor's lag observer. `parent` and
// `reactor` must outlive the registry; the registry must outlive the reactor's last turn.
void addDaemonMetrics(metrics::Registry& registry, NodeParent& parent, Reactor& reactor);

// The tree's families, from a tree as NodeParent::tree() makes it (pure; for tests).
void writeTreeMetrics(metrics::Registry::Writer& out, const nlohmann::json& tree);
// The up bus's families.
void writeBusMetrics(metrics::Registry::Writer& out, const bus::BusCounters& counters,
                     uint64_t refused);

// The CURVE connection families, one `bus` label per ZAP domain.
void writeConnectionMetrics(metrics::Registry::Writer& out,
                            const std::map<std::string, bus::ConnectionCounters>& byBus);

// The token-less listener of [metrics] listen, for a local Prometheus: GET /metrics, rendered on
// the reactor thread (503 when it does not answer within 5 s); anything else is a 404 (JSON).
// Start and destroy on the reactor thread; `reactor` and `registry` must outlive it.
class MetricsServer {
 public:
  static Result<std::unique_ptr<MetricsServer>> start(const std::string& listen, Reactor& reactor,
                                                      metrics::Registry& registry);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  std::string url() const;  // "http://127.0.0.1:PORT"

 private:
  struct Impl;
  explicit MetricsServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace enjin::ring
