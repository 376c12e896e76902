// One ring0d's part in a fleet of ring-0 hosts that share their desired ring-1 nodes in etcd.
//
// The keys (all under /enjin/):
//
//   fleet                 {"created_by","created_at"}: the fleet exists (its first host made it)
//   trust/<host>          the host's ring-0 public key (hex): a member, trusted fleet-wide
//   tokens/<sha256>       an enrolment token's hash, under a lease of its lifetime: one join
//   hosts/<host>          the host record under the host's lease: public key, compartment,
//                         capacity, API, observe endpoint (tcp:// only), its ring-1 nodes
//                         with a compact tree each (compactNodeTree), rewritten at most every
//                         500 ms
//   nodes/<label>         a desired ring-1 node: the meta API's body, plus "spread" and
//                         "on_lost_quorum"
//   assign/<label>        {"host": ...}: where it runs; written by the scheduler only, with
//                         compare-and-swap
//   pending/<label>       why it runs nowhere (the scheduler's reason)
//   scheduler             the scheduler's host name, under its lease (the election)
//
// Safety ("no ring-1 node on two hosts"): a host runs a node only while the node is assigned to
// it and it can prove its lease is alive. It fences itself (stops those nodes) once
// `lease_ttl - fence margin` has passed since the send time of its last keep-alive that
// succeeded, that is before etcd can let the lease expire. The scheduler moves a lost host's
// nodes only `grace` after it saw the host's record go (the lease expired), and only in a
// transaction that checks the record is still absent. So a partitioned host has stopped its
// nodes margin + grace before another host may start them. A host whose lease expired makes a
// new one and reads the whole fleet again before it runs anything. A ring0d that dies cannot
// fence: the nodes it hands its parent carry orphanStopMs (70 % of the TTL), after which their
// holder stops them.
//
// on_lost_quorum (per node): "fence" (default) stops the node as above; "keep" leaves it running
// while the host cannot reach etcd. With "keep", a second copy runs when the host is cut off from
// a majority that still has quorum: that side's scheduler moves the node after grace. When no
// side has quorum (etcd itself is down), nothing moves and "keep" is safe.
//
// Threads: the agent lives on the reactor; etcd calls run on EtcdWorkers and the watch's thread,
// and their results come back through Handoffs. The API's calls (createNode, view, ...) block
// their own (HTTP) thread on etcd and touch no reactor state.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "enjin/base/clock.hpp"
#include "enjin/base/result.hpp"
#include "enjin/ring/config.hpp"

namespace enjin {
class Reactor;
namespace store {
class Store;
}
}  // namespace enjin

namespace enjin::ring {

struct FleetHooks {
  // The fleet's nodes this host must run now (label order), whenever that set changes: an
  // assignment, a changed spec, a fence or its end. On the reactor. An error is logged, and the
  // same set is tried again at the next change.
  std::function<Status(std::vector<NodeSpec> nodes)> run;
  // A node body the API was given, parsed and checked as a ring-1 node (without the fleet's
  // fields). Thread-safe: called on HTTP threads.
  std::function<Result<NodeSpec>(const nlohmann::json& body)> parseNode;
  // The local tree (ring0d's), for the host record's summary of its nodes. On the reactor.
  std::function<nlohmann::json()> tree;
  // Every fleet node (label) and where its ring-1 router is reached now ("10.0.0.2:8080", from
  // the record of the host it is assigned to; "" while that is unknown or unreachable), whenever
  // that changes. On the reactor; must not block (the traffic manager's route()).
  std::function<void(const std::map<std::string, std::string>& routers)> routes;
};

// A ring-1 node of the local tree as the host record carries it: label, state, pid, and below
// it its ring-2 nodes and their processes with label/name, state and pid only (no usage figures,
// no state dirs, no timestamps), so the record changes only when a state or a pid does.
nlohmann::json compactNodeTree(const nlohmann::json& node);

// Where other hosts reach an observe endpoint: `observe` with its address replaced by
// `advertise` ("tcp://0.0.0.0:7000", "10.0.0.1" -> "tcp://10.0.0.1:7000"); empty for a
// non-tcp:// endpoint (ipc:// is reachable on its own host only), and `observe` as it is when
// `advertise` is empty.
std::string fleetObserveEndpoint(const std::string& observe, const std::string& advertise);

class FleetAgent {
 public:
  // The fence margin: the share of the lease's TTL before its earliest end at which a host that
  // could not renew it stops its nodes. Small, so that an etcd election (no leader, no renewal)
  // ends before it: the nodes then still have the margin and the scheduler's grace to stop
  // before a copy may start elsewhere.
  static constexpr double kFenceMargin = 0.1;
  // The share of the TTL a holder waits with no ring0d connected before it stops the fleet's
  // nodes (NodeSpec::orphanStopMs). It counts from when the ring0d went, which may be as late as
  // just before its own fence: a ring0d that dies after failing to renew for 0.9 × TTL has its
  // nodes stopped 1.6 × TTL after its last renewal, 0.6 × TTL after the lease can end, so a
  // fleet needs grace_ms above that plus the nodes' stop time (docs/fleet.md).
  static constexpr double kOrphanStopShare = 0.7;
  // So the least grace_ms, as a share of the TTL: how long after the lease's end that orphan
  // stop can come (0.6; the config refuses less).
  static constexpr double kMinGraceShare = kOrphanStopShare - kFenceMargin;

  // `reactor`, `clock` and `store` must outlive the agent; create it on the reactor thread.
  static Result<std::unique_ptr<FleetAgent>> create(Reactor& reactor, const Clock& clock,
                                                    store::Store& store, FleetSettings settings,
                                                    std::string publicKeyHex, std::string apiUrl,
                                                    FleetHooks hooks);
  ~FleetAgent();

  // Blocking and bounded (at start, before the reactor runs): becomes a member (founds the
  // fleet, joins with `joinToken`, or is one already), takes its lease (the stored one, if it
  // still lives: a restarted ring0d keeps its nodes), registers the host, reads the fleet and
  // starts watching it. Errors name etcd's endpoints or the membership problem.
  Status start(const std::string& joinToken);
  // The fleet's nodes this host runs now (what `run` was last given, or would be).
  std::vector<NodeSpec> running() const;
  // Revokes the lease (the host leaves at once: the scheduler moves its nodes after grace).
  void stop();

  // The meta API in a fleet (HTTP threads; errors carry their HTTP status: 503 when etcd cannot
  // be written, naming why).
  Result<nlohmann::json> getNode(const std::string& label);
  Result<nlohmann::json> createNode(const nlohmann::json& body);
  Result<nlohmann::json> updateNode(const std::string& label, const nlohmann::json& body);
  Status deleteNode(const std::string& label);
  // GET /v1/fleet: hosts (compartment, nodes and their states), assignments, pending nodes with
  // reasons, the scheduler.
  Result<nlohmann::json> view();
  // A single-use enrolment token valid `ttlSeconds`: {"token","expires_at"}.
  Result<nlohmann::json> mintToken(int64_t ttlSeconds);

  // The local tree changed (reactor): the host record is rewritten, coalesced to at most one
  // write every 500 ms, and only if its content changed.
  void treeChanged();

  // This host's part, for the tree and the metrics (reactor): host, scheduler, lease state.
  nlohmann::json status() const;

 private:
  FleetAgent();
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace enjin::ring
