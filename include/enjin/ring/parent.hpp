// The parent half of a ring daemon (ring0d, ring1d): it creates the nodes of the ring below,
// owns their keys and their trust, runs their daemons through the supervision engine, and
// keeps them told and watched over the bus it hosts.
//
//   down (PUB, bound)  spec.<uuid>    the child's full desired state, every heartbeat and on
//                                     change, and at once when the child subscribes
//                      cmd.<uuid>     a command with a request id
//                      revoke.<uuid>  the child's key is revoked
//   up (SUB, bound)    obs.<uuid>     the child's full observed state; also its heartbeat
//                      reply.<uuid>   the answer to a command
//   out (PUB, bound)   event.<path>   one message per change anywhere below (tree_event)
//                      tree           the whole tree, every heartbeat (level-triggered)
//
// A child's key may publish only under obs.<uuid> and reply.<uuid>. Level-triggered: every
// message repeats the whole state, so losing any one changes nothing for longer than a period.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "enjin/base/clock.hpp"
#include "enjin/base/result.hpp"
#include "enjin/bus/curve.hpp"
#include "enjin/bus/verifier.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/ring/config.hpp"

namespace enjin::store {
class Store;
}
namespace enjin::supervise {
class ObservationRegistry;
class SpawnRegistry;
class Supervisor;
}

namespace enjin::ring {

struct ParentOptions {
  DaemonConfig config;     // this daemon's own config (ring 0 or 1)
  std::string childExe;    // ring1d or ring2d
  std::string holderExe;   // enjin-holder
  double dropFraction = 0; // fault injection (test builds): drop this share of received messages
  // The spawn strategies a child's daemon may be started with: a node whose strategy it does
  // not know, or whose strategy refuses it, is refused before anything changes. Required; must
  // outlive the parent.
  const supervise::SpawnRegistry* nodeStrategies = nullptr;
  // The observations a child's daemon is watched with: its exit and READY=1 (notify). Required;
  // must outlive the parent.
  const supervise::ObservationRegistry* nodeObservations = nullptr;
  // The ZAP handler of the parent's ZeroMQ context: required when a bus it binds is tcp://
  // (CURVE, enjin/bus/curve.hpp); must outlive the parent.
  bus::ZapHandler* zap = nullptr;
};

// Whether `registry` can start the daemon of `node` (a node of ring `ring`) as the node asks:
// its strategy is known and accepts the node's settings (user). Errors name the node.
Status checkNodeStrategy(const NodeSpec& node, int ring, const supervise::SpawnRegistry& registry);
// A ring-2 node that runs as ids of its own: strategy unix-user (without a named user) or
// sandbox. Its ids come from its ring-1 node's tenant_uids (ring/tenant.hpp).
bool isTenantNode(const NodeSpec& node, int ring);

class NodeParent {
 public:
  using Reply = std::function<void(nlohmann::json reply)>;

  // `reactor`, `clock`, `zmq` and `store` must outlive the parent.
  NodeParent(Reactor& reactor, const Clock& clock, zmq::context_t& zmq, store::Store& store,
             ParentOptions options, std::function<uint64_t()> random);
  ~NodeParent();

  // Binds the buses, loads the nodes and keys from the store, then creates what `desired`
  // adds, re-adopts the children still running and starts the rest. Without `desired`, the
  // nodes in the store are run as they are (a ring1d that has not heard from its parent yet).
  Status start(std::optional<std::vector<NodeSpec>> desired);
  // A new desired set (a reloaded config, or a spec from this daemon's own parent): new nodes
  // are created and started, removed ones stopped and forgotten, changed ones told.
  Status apply(std::vector<NodeSpec> desired);
  // The ids this daemon's tenant nodes (unix-user and sandbox ring-2 nodes) are dealt from: a
  // ring-1 node's tenant_uids ("60000-60999"; "" = none, and such nodes are refused). Set before
  // start() and before each apply() whose nodes need it; shares the buses with the range's bus
  // group (include/enjin/ring/tenant.hpp).
  Status setTenantUids(const std::string& range);
  // Stops every child in reverse order, then `done`.
  void stopAll(std::function<void()> done);

  // Revokes a child's key: a signed revocation on the down bus, the key dropped from the trust
  // store (its messages are rejected as unknown_key from then on), the node stopped.
  Status revoke(const std::string& label);

  // Runs `op` (start, stop, restart) on the node or process at `path` ("r1/web/app"): the
  // first segment is a child of this daemon; deeper paths travel down the bus as commands with
  // a request id. `reply` gets {"ok":true} or {"ok":false,"error":...}, once.
  void command(const std::string& op, const std::string& path, Reply reply);

  // The whole tree below this daemon, with this daemon at its root. Its "state" is "starting"
  // until every child has settled: ready, or not going to be soon (failed, stopped, revoked,
  // or backing off / unhealthy: a crash-looping node must not hold the whole tree's READY back).
  nlohmann::json tree() const;
  // Hears that something in the tree changed (coalesced), with the tree as it now is, for
  // READY/STATUS and for a parent link to republish.
  void setOnChange(std::function<void(const nlohmann::json& tree)> onChange);
  // Hears every tree_event as it is published on the out bus (`topicPath` is the topic's form of
  // the event's path, "r1.web.app"; `body` the message body, whose "path" is "r1/web/app"), on
  // the reactor thread.
  void setOnEvent(std::function<void(const std::string& topicPath, const nlohmann::json& body)> onEvent);
  // Publishes a signed message of this daemon's own on its out bus (an audit record, ...).
  Status publishOut(const std::string& topic, std::string_view type, const nlohmann::json& body);
  // This daemon's public key (it signs the down and out buses), hex.
  std::string publicKeyHex() const;

  const bus::BusCounters& upCounters() const;
  // Connections refused and admitted on the tcp:// (CURVE) buses, by ZAP domain ("down", "up",
  // "observe"); empty without a ZAP handler.
  std::map<std::string, bus::ConnectionCounters> connectionCounters() const;
  // Signed messages from children that broke the protocol (a malformed observation or reply).
  uint64_t refusedMessages() const;
  // The listening socket 127.0.0.1:port a ring-2 node's spec names (NodeSpec::sockets), bound
  // and kept here for `node` until no node names it; holding one already held for the same node
  // is a no-op. 409: in use, or held for or declared by another node (the error names both
  // nodes and the port).
  Status holdSocket(int port, const std::string& node);
  // The node that holds or declares the socket of `port`; "" if none.
  std::string socketOwner(int port) const;
  void releaseSocket(int port);
  // A child node's state dir ("" if there is no such child).
  std::string nodeStateDir(const std::string& label) const;
  // The uid a child node's daemon runs as: its tenant uid, or 0 (root; no such child).
  uint32_t nodeUid(const std::string& label) const;
  // The engine that runs the children's daemons (for the control socket's process commands).
  supervise::Supervisor& supervisor();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace enjin::ring
