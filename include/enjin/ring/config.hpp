// What a ring daemon is told: its config file (TOML, one per daemon) and the desired state of
// the nodes below it.
//
// ring0d's file is written by the operator (/etc/enjin/ring0d.toml): where its state lives, its
// buses, and the ring-1 nodes it runs, each with its ring-2 nodes and their processes. A ring-1
// or ring-2 daemon's file is written by its parent into the child's own state dir when it
// creates the node: identity, key files and the parent's endpoints. The desired state of a
// child never travels in its config: the parent publishes it on the down bus.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "enjin/base/result.hpp"
#include "enjin/supervise/process_spec.hpp"

namespace enjin::ring {

// A ring-1 node's first administrator, given by its parent: the user is created with this
// argon2id hash and the role "admin" (allow * on *) if it does not exist yet.
struct AdminSeed {
  std::string user;
  std::string passwordHash;  // "$argon2id$..."

  bool operator==(const AdminSeed&) const = default;
};

// A listening socket a parent binds for a ring-2 node and hands to its daemon (LISTEN_FDS,
// under `name`); the node's processes name it in their `sockets`. It stays open in the parent's
// keeping across restarts of the node, so a connection made meanwhile waits in the accept queue.
struct NodeSocket {
  std::string name;  // LISTEN_FDNAMES: [A-Za-z0-9_.-]{1,64}
  int port = 0;      // 127.0.0.1:port

  bool operator==(const NodeSocket&) const = default;
};

// What a parent wants one child node to be.
struct NodeSpec {
  std::string label;             // [A-Za-z0-9_-]{1,64}, unique among its siblings
  std::string strategy = "exec"; // spawn strategy of the child's daemon (supervision_strategy),
                                 // one the parent's node registry knows
  std::string user;              // with strategy "unix-user": the account it runs as
  std::string compartment;       // where it runs; free text until compartments are modelled
  std::vector<supervise::ProcessSpec> processes;  // a ring-2 node: the application's processes
  std::vector<NodeSpec> nodes;                    // a ring-1 node: its ring-2 nodes
  std::string apiListen;          // a ring-1 node: where its ring-1 API listens ("" = none)
  std::vector<AdminSeed> admins;  // a ring-1 node: its API's first users
  std::string tenantUids;         // a ring-1 node: the ids its tenant nodes get ("60000-60999")
  // A ring-1 node: the least isolation its ring-2 nodes' strategies must give ("exec",
  // "unix-user", "sandbox", "vm"; "" = no demand), see ring/isolation_policy.hpp.
  std::string minIsolation;
  // A ring-2 node: its limits (memory, processes, cpu, open_files) as canonical JSON
  // (supervise::limitsToJson); "" = none.
  std::string limitsJson;
  std::vector<NodeSocket> sockets;  // a ring-2 node: what its parent binds for it
  // A ring-1 node's apps (ring/apps.hpp): the loopback ports its instances are given
  // ("20000-29999"; "" = no apps), where its router listens ("127.0.0.1:8080"; "" = no router)
  // and the domain it serves besides NAME.localhost ("apps.example.com"; "" = none).
  std::string ports;
  std::string routerListen;
  std::string domain;
  // Not in any file or body: set by the fleet agent on the nodes it hands its ring0d. The node's
  // daemon is stopped by its holder once its parent has been gone this long
  // (ProcessSpec::orphanStopMs), so that a dead ring0d's fleet nodes stop before the fleet may
  // start them elsewhere. 0: never.
  int64_t orphanStopMs = 0;

  bool operator==(const NodeSpec&) const = default;
};

// ring0d's [fleet] table: this host is one of a fleet of ring-0 hosts that share their desired
// ring-1 nodes in etcd (ring/fleet_agent.hpp). No etcd endpoints: no fleet, the host runs what
// its file and its API say, alone.
struct FleetSettings {
  std::string host;                // this host's name in the fleet; default: its hostname
  std::string compartment;         // its compartment path, outermost first ("dc/rack-a/h1");
                                   // default: the host's name
  std::vector<std::string> etcd;   // client URLs of the etcd members ("https://10.0.0.1:2379")
  std::string etcdCa, etcdCert, etcdKey;  // TLS to etcd: its CA, this host's client cert and key
  int64_t leaseTtlMs = 2000;       // the host's lease in etcd (whole seconds, at least 1 s)
  // After a lost host's lease expired, until its nodes move; at least 0.6 x the TTL (the file's
  // default: the TTL).
  int64_t graceMs = 2000;
  int64_t maxNodes = 32;           // ring-1 nodes this host takes at most
  std::vector<std::string> levels = {"dc", "rack", "host"};  // what the path's depths are
  std::string advertise;           // the address other hosts reach this one at ("10.0.0.1")
  // The traffic manager (ring/traffic.hpp): where it listens ("10.0.0.1:80"; empty: none), and
  // the domain under which `*.NODE.<domain>` goes to ring-1 node NODE wherever it runs.
  std::string trafficListen;
  std::string domain;
  // Not read from the file: the daemon's own observe endpoint, put in the host record as other
  // hosts reach it (tcp:// only, its address replaced by `advertise`; see fleetObserveEndpoint).
  std::string observe;

  bool enabled() const { return !etcd.empty(); }
  bool operator==(const FleetSettings&) const = default;
};

struct DaemonConfig {
  int ring = 0;
  std::string source;            // the file it was read from, for messages
  std::string stateDir;
  std::string logLevel = "info";

  // Identity. ring 0 makes its own on first start; ring 1 and 2 are given theirs.
  std::string uuid;
  std::string label;
  std::string key;               // secret key file, mode 0600 (ring 0: generated if missing)

  // The parent's bus (ring 1 and 2).
  std::string parentKey;         // the parent's .pub: the only key commands are accepted from
  std::string parentDown;        // connect a SUB here: specs, commands, revocations
  std::string parentUp;          // connect a PUB here: observations, heartbeats, replies

  // The bus this daemon hosts for its children (ring 0 and 1), and its observation stream.
  std::string down;              // bind a PUB
  std::string up;                // bind a SUB
  std::string observe;           // bind a PUB for outside subscribers

  // The control plane's HTTP API ([api] in ring0d.toml): no listen address, no listener.
  std::string apiListen;         // "127.0.0.1:8480"
  std::string apiTlsCert;        // PEM; with apiTlsKey, the API speaks HTTPS
  std::string apiTlsKey;
  // [metrics] listen in ring0d.toml: GET /metrics without a token (plain HTTP), for a local
  // Prometheus. Empty: the metrics are served by the API only.
  std::string metricsListen;     // "127.0.0.1:9480"

  FleetSettings fleet;           // ring 0: [fleet]

  int64_t heartbeatMs = 1000;        // full state is republished this often, both ways
  int64_t heartbeatTimeoutMs = 5000; // no heartbeat for this long: the child is `lost`

  std::vector<NodeSpec> nodes;   // ring 0: the ring-1 nodes to run (from the file)
};

// The daemon names by ring: "ring0d", "ring1d", "ring2d".
std::string daemonName(int ring);

// The state dir of a daemon of `ring` when neither its config nor a flag names one:
// /var/lib/enjin/LEAF as root, else ~/.local/state/enjin/LEAF, with LEAF ring0, ring1 or ring2d.
std::string defaultStateDir(int ring);

// Parses a config for a daemon of `ring`. Unset endpoints default to ipc sockets in the state
// dir (down.sock, up.sock, out.sock); relative key paths are relative to the state dir. Errors
// name the file, the line and the key.
// `stateDirOverride` (a --state-dir flag) replaces the file's state_dir before the defaults
// that depend on it are worked out.
Result<DaemonConfig> parseConfig(std::string_view text, const std::string& source, int ring,
                                 const std::string& stateDirOverride = "");
Result<DaemonConfig> loadConfig(const std::string& path, int ring,
                                const std::string& stateDirOverride = "");

// The config file a parent writes for a child node (identity, keys, endpoints; no nodes).
std::string renderChildConfig(const DaemonConfig& child);

// The bus endpoints a config leaves empty, from its state dir and ring: ipc://STATE/out.sock,
// and below ring 2 also ipc://STATE/down.sock and ipc://STATE/up.sock.
void fillDefaultEndpoints(DaemonConfig& c);

}  // namespace enjin::ring

namespace enjin::ring {
// A random (version 4) UUID, lowercase: a node's identity and one segment of its topics.
std::string newUuid();
}  // namespace enjin::ring
