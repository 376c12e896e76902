#include "enjin/ring/daemon_metrics.hpp"

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>
#include <vector>

#include "enjin/api/http_server.hpp"
#include "enjin/bus/curve.hpp"
#include "enjin/bus/envelope.hpp"
#include "enjin/bus/verifier.hpp"
#include "enjin/reactor/handoff.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/ring/parent.hpp"

namespace enjin::ring {

using nlohmann::json;

namespace {

// Every state a node can be in (the engine's, and the parent's own revoked and lost): each is
// rendered for every ring below, 0 included, so a series does not vanish when its count does.
constexpr const char* kNodeStates[] = {"starting", "running", "ready",  "unhealthy", "stopping",
                                       "stopped",  "backoff", "failed", "revoked",   "lost"};

// The deepest ring a tree goes to: ring-2 nodes run the processes.
constexpr int kLeafRing = 2;

constexpr int64_t kRenderTimeoutMs = 5000;

double number(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : 0;
}

bool processUp(const json& p) {
  const std::string state = p.value("state", "");
  return number(p, "pid") > 0 && state != "stopped" && state != "failed" && state != "backoff";
}

struct TreeSamples {
  std::map<int, std::map<std::string, int>> nodes;  // ring -> state -> count
  std::vector<std::pair<metrics::Labels, double>> nodeRestarts, up, restarts, cpu, rss;
};

void walk(const json& node, int ring, const std::string& prefix, TreeSamples& out) {
  auto nodes = node.find("nodes");
  if (nodes != node.end() && nodes->is_array()) {
    for (const auto& n : *nodes) {
      if (!n.is_object()) continue;
      const int childRing = n.value("ring", ring + 1);
      const std::string path = prefix + n.value("label", "?");
      ++out.nodes[childRing][n.value("state", "unknown")];
      out.nodeRestarts.push_back({{{"node", path}}, number(n, "restarts")});
      walk(n, childRing, path + "/", out);
    }
  }
  auto procs = node.find("processes");
  if (procs == node.end() || !procs->is_array() || prefix.empty()) return;
  const std::string nodePath = prefix.substr(0, prefix.size() - 1);
  for (const auto& p : *procs) {
    if (!p.is_object()) continue;
    const metrics::Labels labels{{"node", nodePath}, {"process", p.value("name", "?")}};
    out.up.push_back({labels, processUp(p) ? 1.0 : 0.0});
    out.restarts.push_back({labels, number(p, "restarts")});
    if (p.contains("cpu_seconds")) out.cpu.push_back({labels, number(p, "cpu_seconds")});
    if (p.contains("resident_memory_bytes")) {
      out.rss.push_back({labels, number(p, "resident_memory_bytes")});
    }
  }
}

void writeAll(metrics::Registry::Writer& out, const char* name, const char* type, const char* help,
              const std::vector<std::pair<metrics::Labels, double>>& samples) {
  out.family(name, type, help);
  for (const auto& [labels, value] : samples) out.sample(labels, value);
}

}  // namespace

void writeTreeMetrics(metrics::Registry::Writer& out, const json& tree) {
  if (!tree.is_object()) return;
  const int ring = tree.value("ring", 0);
  TreeSamples s;
  walk(tree, ring, "", s);
  out.family("enjin_nodes", "gauge", "Nodes below this daemon, by ring and state");
  for (int r = ring + 1; r <= kLeafRing; ++r) s.nodes[r];  // every ring below, even empty
  for (const auto& [r, byState] : s.nodes) {
    std::set<std::string> states(std::begin(kNodeStates), std::end(kNodeStates));
    for (const auto& [state, count] : byState) states.insert(state);
    for (const auto& state : states) {
      auto it = byState.find(state);
      out.sample({{"ring", std::to_string(r)}, {"state", state}},
                 it == byState.end() ? 0 : it->second);
    }
  }
  writeAll(out, "enjin_node_restarts_total", "counter",
           "Restarts of a node's daemon by its parent's engine", s.nodeRestarts);
  writeAll(out, "enjin_process_up", "gauge", "1 while the process runs, else 0", s.up);
  writeAll(out, "enjin_process_restarts_total", "counter",
           "Restarts of a process by its ring-2 node", s.restarts);
  writeAll(out, "enjin_process_cpu_seconds_total", "counter",
           "User and system CPU time of a process, as its ring-2 node last read it", s.cpu);
  writeAll(out, "enjin_process_resident_memory_bytes", "gauge",
           "Resident memory of a process, as its ring-2 node last read it", s.rss);
}

void writeBusMetrics(metrics::Registry::Writer& out, const bus::BusCounters& c, uint64_t refused) {
  out.family("enjin_bus_messages_accepted_total", "counter",
             "Messages from children accepted on the up bus");
  out.sample({}, static_cast<double>(c.accepted));
  out.family("enjin_bus_messages_rejected_total", "counter",
             "Messages on the up bus rejected by their envelope's check, by reason");
  for (size_t i = 0; i < bus::kRejectReasonCount; ++i) {
    out.sample({{"reason", std::string(bus::rejectReasonName(static_cast<bus::RejectReason>(i)))}},
               static_cast<double>(c.rejected[i]));
  }
  out.family("enjin_bus_messages_refused_total", "counter",
             "Verified messages from children refused for breaking the protocol");
  out.sample({}, static_cast<double>(refused));
}

void writeConnectionMetrics(metrics::Registry::Writer& out,
                            const std::map<std::string, bus::ConnectionCounters>& byBus) {
  out.family("enjin_bus_connections_admitted_total", "counter",
             "CURVE clients the ZAP handler admitted to a tcp:// bus");
  for (const auto& [bus, c] : byBus) out.sample({{"bus", bus}}, static_cast<double>(c.admitted));
  out.family("enjin_bus_connections_rejected_total", "counter",
             "Connections to a tcp:// bus refused before any message, by reason");
  for (const auto& [bus, c] : byBus) {
    for (size_t i = 0; i < bus::kConnectionRejectCount; ++i) {
      out.sample({{"bus", bus},
                  {"reason",
                   std::string(bus::connectionRejectName(static_cast<bus::ConnectionReject>(i)))}},
                 static_cast<double>(c.rejected[i]));
    }
  }
}

namespace {

constexpr int64_t kLagProbeMs = 50;
constexpr int64_t kLagProbeIdleNs = 600'000'000'000;  // 10 min without a scrape: it stops

// A timer every 50 ms that does nothing but be timed: with it the lag histogram has 20 samples a
// second however quiet the daemon's own timers are, so its p99 is the loop's and not the worst
// of a handful. It runs only while someone reads the metrics: a scrape starts it, and it stops
// once nobody has scraped for 10 min, so a daemon nobody watches (most ring1d of a host) does
// not wake 20 times a second for it.
struct LagProbe {
  explicit LagProbe(Reactor& r) : reactor(r) {}
  Reactor& reactor;
  int64_t lastReadNs = 0;
  bool running = false;

  static void arm(const std::shared_ptr<LagProbe>& self) {
    self->reactor.addTimerAfterMillis(kLagProbeMs, [self] {
      if (self->reactor.clock().monotonicNanos() - self->lastReadNs > kLagProbeIdleNs) {
        self->running = false;
        return;
      }
      arm(self);
    });
  }
  // On the reactor, at each render.
  static void read(const std::shared_ptr<LagProbe>& self) {
    self->lastReadNs = self->reactor.clock().monotonicNanos();
    if (self->running) return;
    self->running = true;
    arm(self);
  }
};

}  // namespace

void addDaemonMetrics(metrics::Registry& registry, NodeParent& parent, Reactor& reactor) {
  metrics::Histogram& lag =
      registry.histogram("enjin_reactor_lag_seconds", "How late the reactor fires its timers",
                         // 0.1 ms to 1.6 s, doubling: a p99 read from the buckets is
                         // within a factor of two.
                         metrics::exponentialBuckets(0.0001, 2, 15));
  reactor.setLagObserver(
      [&lag](int64_t lateNanos) { lag.observe(static_cast<double>(lateNanos) / 1e9); });
  registry.addCollector(
      [probe = std::make_shared<LagProbe>(reactor)](metrics::Registry::Writer&) {
        LagProbe::read(probe);
      });
  registry.addCollector([&parent](metrics::Registry::Writer& out) {
    writeTreeMetrics(out, parent.tree());
    writeBusMetrics(out, parent.upCounters(), parent.refusedMessages());
    writeConnectionMetrics(out, parent.connectionCounters());
  });
}

struct MetricsServer::Impl {
  Impl(Reactor& reactor, metrics::Registry& reg) : handoff(reactor), registry(reg) {}

  void handle(const api::HttpRequest& req, api::HttpResponse& res) {
    if ((req.method != "GET" && req.method != "HEAD") || req.path != "/metrics") {
      return api::jsonError(
          res, 404, "not_found",
          "no route " + req.method + " " + req.path + "; this listener serves GET /metrics only");
    }
    auto body = handoff.call<std::string>([this] { return registry.render(); }, kRenderTimeoutMs);
    if (!body) {
      return api::jsonError(res, 503, "unavailable", "the daemon did not answer in time; retry");
    }
    res.status = 200;
    res.contentType = "text/plain; version=0.0.4";
    res.body = std::move(*body);
  }

  Handoff handoff;  // declared before the server: destroyed after it, once no handler runs
  metrics::Registry& registry;
  std::unique_ptr<api::HttpServer> http;
};

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const std::string& listen,
                                                            Reactor& reactor,
                                                            metrics::Registry& registry) {
  auto impl = std::make_unique<Impl>(reactor, registry);
  api::HttpServerOptions ho;
  ho.listen = listen;
  ho.threads = 2;
  ho.maxConnections = 16;
  auto server = api::HttpServer::start(
      ho, [p = impl.get()](const api::HttpRequest& q, api::HttpResponse& a) { p->handle(q, a); });
  if (!server.ok()) return server.error();
  impl->http = std::move(*server);
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(impl)));
}

MetricsServer::MetricsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MetricsServer::~MetricsServer() {
  if (impl_) impl_->http.reset();  // no handler runs (or waits on the handoff) past this
}
std::string MetricsServer::url() const {
  return impl_->http->url();
}

}  // namespace enjin::ring
