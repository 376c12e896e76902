#include "enjin/ring/parent.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "enjin/base/file.hpp"
#include "enjin/bus/publisher.hpp"
#include "enjin/bus/subscriber.hpp"
#include "enjin/bus/trust_store.hpp"
#include "enjin/crypto/keys.hpp"
#include "enjin/ring/apps.hpp"
#include "enjin/ring/daemon.hpp"
#include "enjin/ring/messages.hpp"
#include "enjin/ring/node_spec_json.hpp"
#include "enjin/ring/tenant.hpp"
#include "enjin/ring/tree.hpp"
#include "enjin/store/store.hpp"
#include "enjin/supervise/control_server.hpp"
#include "enjin/supervise/spawn.hpp"
#include "enjin/supervise/supervisor.hpp"

namespace enjin::ring {

using nlohmann::json;
using supervise::ProcessState;

namespace {

constexpr int64_t kChangeCoalesceMs = 5;   // a burst of changes makes one event pass
constexpr int64_t kSeqMarkSaveEveryMs = 5000;
// Messages a bus queues per subscriber before it drops: a whole tree's specs at once fit.
constexpr int kBusSendHighWater = 10'000;
// A command waits this long at ring 0, a second less at each ring below (at least the minimum),
// so an answer, if only "timed out", always reaches the control socket above in time.
constexpr int64_t kCommandTimeoutRing0Ms = 4000;
constexpr int64_t kCommandTimeoutStepMs = 1000;
constexpr int64_t kCommandTimeoutMinMs = 1000;

supervise::SupervisorOptions supervisorOptions(const std::string& stateDir,
                                               const ParentOptions& opts,
                                               supervise::SocketTable& sockets) {
  supervise::SupervisorOptions so{stateDir, opts.holderExe};
  so.observations = opts.nodeObservations;
  so.sockets = &sockets;
  return so;
}

// A listening TCP socket on 127.0.0.1:port, blocking (the process it is handed accepts on it;
// O_NONBLOCK would be shared with it), close-on-exec (only the holder passes it on).
Result<UniqueFd> bindLoopback(int port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Error{std::string("socket: ") + std::strerror(errno)};
  const int one = 1;
  (void)::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(fd.get(), SOMAXCONN) != 0) {
    return Error{"127.0.0.1:" + std::to_string(port) + ": " + std::strerror(errno),
                 errno == EADDRINUSE ? 409 : 500};
  }
  return fd;
}

// How a child node's daemon is supervised. Its own processes may take their readiness timeout
// (60 s by default) first; each ring above gets 10 s more, and systemd's TimeoutStartSec= for
// ring0d is above them all.
constexpr int64_t kRing2ReadyTimeoutMs = 70'000;
constexpr int64_t kRing1ReadyTimeoutMs = 80'000;
// Its watchdog: a few heartbeat timeouts, never under 15 s (a hung daemon is restarted like a
// dead one).
constexpr int64_t kWatchdogHeartbeatTimeouts = 3;
constexpr int64_t kMinWatchdogMs = 15'000;
// Its restart budget: 10 restarts in 60 s, from 100 ms backing off to 10 s.
constexpr int64_t kNodeRestartDelayMs = 100;
constexpr int64_t kNodeBackoffMaxMs = 10'000;
constexpr uint32_t kNodeMaxRestarts = 10;
constexpr int64_t kNodeRestartWindowS = 60;
// Stopping a node stops everything under it, in order: a ring1d gets longer than the ring2d
// nodes it stops, and systemd's TimeoutStopSec= for ring0d is longer still.
constexpr int64_t kRing2StopTimeoutMs = 45'000;
constexpr int64_t kRing1StopTimeoutMs = 75'000;

bool settled(ProcessState s) {
  return s == ProcessState::kReady || s == ProcessState::kFailed || s == ProcessState::kStopped ||
         s == ProcessState::kUnhealthy || s == ProcessState::kBackoff;
}

bool live(ProcessState s) {
  return s == ProcessState::kRunning || s == ProcessState::kReady ||
         s == ProcessState::kUnhealthy;
}

// The part of a topic after its first segment: "obs.<uuid>" -> "<uuid>".
std::string_view afterFirst(std::string_view topic) {
  const size_t dot = topic.find('.');
  return dot == std::string_view::npos ? std::string_view() : topic.substr(dot + 1);
}

// What a tenant node's daemon is started with besides its ids.
struct TenantPlacement {
  TenantIds ids;
  std::string cgroup;  // its cgroup's name
  std::string home;
  std::vector<std::string> hide;  // sandbox: host folders its processes must not see
};

// How a node's daemon is started, as far as its spawn strategy is concerned. A tenant node
// without a placement is checked with stand-in ids: its own are dealt when it is made.
supervise::ProcessSpec nodeDaemonSpec(const NodeSpec& node, const std::string& exe, int ring,
                                      const TenantPlacement* tenant = nullptr) {
  supervise::ProcessSpec p;
  p.name = node.label;
  p.command = {exe};
  p.strategy = node.strategy;
  // A node's user is its strategy's business, as a process's is (ProcessSpec::strategyConfig).
  if (!node.user.empty()) p.strategyConfig = nlohmann::json{{"user", node.user}}.dump();
  if (isTenantNode(node, ring)) {
    const TenantPlacement standIn{{2, 3, 1}, "", "/", {}};
    const TenantPlacement& t = tenant != nullptr ? *tenant : standIn;
    json config{{"uid", t.ids.uid},          {"gid", t.ids.uid},
                {"app_uid", t.ids.appUid},   {"app_gid", t.ids.appUid},
                {"groups", {t.ids.busGid}},  {"home", t.home}};
    if (!t.cgroup.empty()) config["cgroup"] = t.cgroup;
    if (node.strategy == "sandbox" && !t.hide.empty()) config["hide"] = t.hide;
    if (!node.limitsJson.empty()) config["limits"] = json::parse(node.limitsJson, nullptr, false);
    p.strategyConfig = config.dump();
  }
  return p;
}

}  // namespace

bool isTenantNode(const NodeSpec& node, int ring) {
  return ring == 2 && node.user.empty() &&
         (node.strategy == "unix-user" || node.strategy == "sandbox");
}

Status checkNodeStrategy(const NodeSpec& node, int ring, const supervise::SpawnRegistry& registry) {
  if (auto known = registry.find(node.strategy); !known.ok()) {
    return known.error().wrap("ring-" + std::to_string(ring) + " node '" + node.label + "'");
  }
  // A ring1d deals ids to its tenants and shares its buses with them: it needs root, and so
  // runs as its parent does.
  if (ring == 1 && node.strategy != "exec") {
    return Error{"ring-1 node '" + node.label + "': strategy " + node.strategy +
                     ": a ring-1 node runs as ring0d's user (strategy exec); its ring-2 nodes "
                     "may be unix-user or sandbox",
                 400};
  }
  if (auto st = registry.validate(nodeDaemonSpec(node, daemonName(ring), ring)); !st.ok()) {
    return st.error().wrap("ring-" + std::to_string(ring) + " node '" + node.label + "'");
  }
  return {};
}

class NodeParent::Impl {
 public:
  Impl(Reactor& reactor, const Clock& clock, zmq::context_t& zmq, store::Store& store,
       ParentOptions options, std::function<uint64_t()> random)
      : reactor_(reactor),
        clock_(clock),
        zmq_(zmq),
        store_(store),
        opts_(std::move(options)),
        cfg_(opts_.config),
        random_(random),
        supervisor_(reactor, supervisorOptions(cfg_.stateDir, opts_, sockets_), std::move(random)) {}

  ~Impl() {
    for (auto& [id, p] : pending_) reactor_.cancelTimer(p.timer);
    if (changeTimer_) reactor_.cancelTimer(changeTimer_);
    if (tickTimer_) reactor_.cancelTimer(tickTimer_);
    if (down_) reactor_.removeSocket(down_->socket());
    if (out_) reactor_.removeSocket(out_->socket());
    if (up_) reactor_.removeSocket(up_->socket());
    // The handler outlives this parent: it must not read the trust stores that die with it.
    if (opts_.zap != nullptr) {
      for (const char* domain : {"down", "up", "observe"}) opts_.zap->admit(domain, {});
    }
  }

  struct Child {
    store::NodeRecord rec;
    NodeSpec spec;
    json specBody;        // what goes on the wire
    std::string digest;   // specDigest(specBody)
    json observed;        // the child's last obs body, cleaned (null until one arrives)
    bool observedStale = false;  // from an earlier run of the child's daemon
    std::string lastRefusal;
    int64_t lastSeenNs = 0;
    bool lost = false;
    std::optional<TenantIds> tenant;  // a tenant node's ids, once dealt
  };

  Status start(std::optional<std::vector<NodeSpec>> desired) {
    startedNs_ = clock_.monotonicNanos();
    if (auto st = openBuses(); !st.ok()) return st;
    if (auto st = shareWithTenants(); !st.ok()) return st;
    if (auto st = loadNodes(); !st.ok()) return st;
    for (auto& [label, c] : children_) {
      if (auto st = dealTenantIds(c); !st.ok()) {
        spdlog::error("{}: node '{}': {}", name(), label, st.error().message);
      }
    }
    if (desired) {
      if (auto st = ensureNodes(*desired); !st.ok()) return st;
    }
    supervisor_.setObserver([this](const supervise::StateEvent& ev) { onProcessEvent(ev); });
    // A socket the holder still keeps (the node ran before this daemon restarted) cannot be
    // bound again: the holder's hello gives it back. Every other one is bound now.
    holdNodeSockets(/*quietIfInUse=*/true);
    if (auto st = supervisor_.start(processSpecs()); !st.ok()) return st;
    tick();
    return {};
  }

  // One socket, one node: a port held for (or declared by) another node is refused, so that
  // two nodes never share a listening fd.
  Status holdSocket(int port, const std::string& node) {
    const std::string key = loopbackSocketKey(port);
    if (const std::string other = socketOwner(port, node); !other.empty()) {
      return Error{"port " + std::to_string(port) + ": node '" + node + "' cannot have socket " +
                       key + ": node '" + other + "' has it",
                   409};
    }
    if (sockets_.find(key) < 0) {
      auto fd = bindLoopback(port);
      if (!fd.ok()) return fd.error();
      sockets_.put(key, std::move(*fd));
    }
    socketFor_[key] = node;
    return {};
  }

  void releaseSocket(int port) {
    sockets_.erase(loopbackSocketKey(port));
    socketFor_.erase(loopbackSocketKey(port));
  }

  // The node other than `except` that holds the socket of `port` or whose spec declares it; ""
  // if none.
  std::string socketOwner(int port, const std::string& except = "") const {
    if (auto it = socketFor_.find(loopbackSocketKey(port));
        it != socketFor_.end() && it->second != except) {
      return it->second;
    }
    for (const auto& [label, c] : children_) {
      if (label == except) continue;
      for (const auto& s : c.spec.sockets) {
        if (s.port == port) return label;
      }
    }
    return "";
  }

  // Two nodes of one set that declare the same port are refused before anything changes.
  static Status checkSocketPorts(const std::vector<NodeSpec>& desired) {
    std::map<int, std::string> byPort;
    for (const NodeSpec& spec : desired) {
      for (const auto& s : spec.sockets) {
        auto [it, fresh] = byPort.emplace(s.port, spec.label);
        if (!fresh && it->second != spec.label) {
          return Error{"port " + std::to_string(s.port) + ": nodes '" + it->second + "' and '" +
                           spec.label + "' both declare it (a socket is one node's)",
                       409};
        }
      }
    }
    return {};
  }

  void holdNodeSockets(bool quietIfInUse) {
    // Who has each socket is what the specs say now (a node may have let go of a port another
    // takes in the same change).
    ownSocketsBySpec();
    for (const auto& [label, c] : children_) {
      for (const auto& s : c.spec.sockets) {
        if (auto st = holdSocket(s.port, label); !st.ok()) {
          if (quietIfInUse && st.error().code == 409) continue;
          spdlog::error("{}: node '{}': socket '{}': {}", name(), label, s.name,
                        st.error().message);
        }
      }
    }
  }

  // Sockets no node names any more are closed (the holder closes its copy with the process).
  void dropUnusedSockets() {
    std::set<std::string> used;
    for (const auto& [label, c] : children_) {
      for (const auto& s : c.spec.sockets) used.insert(loopbackSocketKey(s.port));
    }
    for (const auto& key : sockets_.keys()) {
      if (!used.count(key)) sockets_.erase(key);
    }
    ownSocketsBySpec();
  }

  void ownSocketsBySpec() {
    socketFor_.clear();
    for (const auto& [label, c] : children_) {
      for (const auto& s : c.spec.sockets) socketFor_.emplace(loopbackSocketKey(s.port), label);
    }
  }

  std::string nodeStateDir(const std::string& label) const {
    return children_.count(label) ? childDir(label) : "";
  }

  uint32_t nodeUid(const std::string& label) const {
    auto it = children_.find(label);
    return it != children_.end() && it->second.tenant ? it->second.tenant->uid : 0;
  }

  Status apply(std::vector<NodeSpec> desired) {
    if (auto st = checkSocketPorts(desired); !st.ok()) return st;
    if (auto st = ensureNodes(desired); !st.ok()) return st;
    holdNodeSockets(/*quietIfInUse=*/false);
    if (auto st = supervisor_.reload(processSpecs()); !st.ok()) return st;
    dropUnusedSockets();
    for (auto& [label, c] : children_) publishSpec(c);
    changed();
    return {};
  }

  void stopAll(std::function<void()> done) {
    saveSeqMarks();
    supervisor_.stopAll(std::move(done));
  }

  Status revoke(const std::string& label) {
    auto it = children_.find(label);
    if (it == children_.end()) return Error{"no node '" + label + "' under " + cfg_.label};
    Child& c = it->second;
    if (c.rec.revokedWallMs != 0) return Error{"node '" + label + "' is already revoked"};
    if (auto st = store_.revokeNode(c.rec.uuid, clock_.wallMillis()); !st.ok()) return st;
    c.rec.revokedWallMs = clock_.wallMillis();
    // Told first, while the child still trusts this key; then forgotten and stopped.
    publish(*down_, "revoke." + c.rec.uuid, RevocationMessage::kType,
            RevocationMessage{c.rec.uuid, label}.toJson());
    if (auto key = crypto::PublicKey::fromHex(c.rec.publicKeyHex); key.ok()) trust_.remove(*key);
    spdlog::warn("{}: revoked node '{}' ({}); its key is no longer trusted", name(), label,
                 c.rec.uuid);
    recordObservation(c, "revocation", "revoked", json::object());
    if (auto st = supervisor_.reload(processSpecs()); !st.ok()) return st;
    changed();
    return {};
  }

  void command(const std::string& op, const std::string& path, Reply reply) {
    const size_t slash = path.find('/');
    const std::string label = path.substr(0, slash);
    auto it = children_.find(label);
    if (it == children_.end()) {
      return reply(errorReply("no node '" + label + "' under " + cfg_.label));
    }
    Child& c = it->second;
    if (slash == std::string::npos) {
      Status st = supervisor_.runCommand(op, label);
      return reply(st.ok() ? json{{"ok", true}} : errorReply(st.error().message));
    }
    if (c.rec.revokedWallMs != 0) return reply(errorReply("node '" + label + "' is revoked"));
    // Deeper: down the bus, answered on the up bus, each ring waiting less than the one above.
    const std::string id = newUuid();
    const int64_t timeoutMs = std::max<int64_t>(
        kCommandTimeoutMinMs, kCommandTimeoutRing0Ms - kCommandTimeoutStepMs * cfg_.ring);
    Pending p;
    p.reply = std::move(reply);
    p.uuid = c.rec.uuid;
    p.body = CommandMessage{id, op, path.substr(slash + 1)}.toJson();
    p.timer = reactor_.addTimerAfterMillis(timeoutMs, [this, id, label, timeoutMs] {
      auto node = pending_.find(id);
      if (node == pending_.end()) return;
      Reply r = std::move(node->second.reply);
      pending_.erase(node);
      r(errorReply("node '" + label + "' did not answer within " + std::to_string(timeoutMs) +
                   " ms"));
    });
    const json body = p.body;
    pending_.emplace(id, std::move(p));
    publish(*down_, "cmd." + c.rec.uuid, "command", body);
  }

  json tree() const {
    const auto statuses = statusByName();
    json nodes = json::array();
    for (const auto& [label, c] : children_) {
      auto s = statuses.find(label);
      nodes.push_back(childJson(c, s == statuses.end() ? nullptr : &s->second));
    }
    json t{{"ring", cfg_.ring},
           {"uuid", cfg_.uuid},
           {"label", cfg_.label},
           {"pid", ::getpid()},
           {"state_dir", cfg_.stateDir},
           {"nodes", std::move(nodes)}};
    t["state"] = ownState(t, childrenUp(statuses));
    return t;
  }

  void setOnChange(std::function<void(const json&)> f) { onChange_ = std::move(f); }
  void setOnEvent(std::function<void(const std::string&, const json&)> f) { onEvent_ = std::move(f); }
  Status publishOut(const std::string& topic, std::string_view type, const json& body) {
    if (!out_) return Error{"the out bus is not open yet"};
    return out_->publish(topic, type, body);
  }
  std::string publicKeyHex() const { return ownPublic_.hex(); }
  const bus::BusCounters& upCounters() const { return up_->counters(); }
  std::map<std::string, bus::ConnectionCounters> connectionCounters() const {
    if (opts_.zap == nullptr) return {};
    return opts_.zap->allCounters();
  }
  uint64_t refusedMessages() const { return refused_; }
  supervise::Supervisor& supervisor() { return supervisor_; }

 private:
  // A command sent down and not yet answered. It is sent again every heartbeat until the
  // answer comes (the child answers a repeated id with the answer it gave), and only the child
  // it went to may answer it.
  struct Pending {
    Reply reply;
    Reactor::TimerId timer = 0;
    std::string uuid;
    json body;
  };

  static json errorReply(const std::string& message) {
    return json{{"ok", false}, {"error", message}};
  }

  std::string name() const { return daemonName(cfg_.ring); }
  std::string childDir(const std::string& label) const {
    return cfg_.stateDir + "/nodes/" + label;
  }
  std::string childConfigPath(const std::string& label) const {
    return childDir(label) + "/" + daemonName(cfg_.ring + 1) + ".toml";
  }

  Status openBuses() {
    auto loadKey = [&]() { return crypto::SecretKey::load(cfg_.key); };
    auto k1 = loadKey();
    if (!k1.ok()) return k1.error();
    ownPublic_ = k1->publicKey();
    // On tcp:// each bus is a CURVE server (enjin/bus/curve.hpp). down and up admit the
    // children's keys; observe admits them and the operator's observers (observers/*.pub).
    if (opts_.zap != nullptr) {
      if (auto st = loadObservers(); !st.ok()) return st;
      opts_.zap->admit("down", {&trust_});
      opts_.zap->admit("up", {&trust_});
      opts_.zap->admit("observe", {&trust_, &observers_});
    }
    bus::PublisherOptions dpo{cfg_.down, true, cfg_.stateDir + "/down.seq", kBusSendHighWater, {}};
    dpo.curve = {opts_.zap, "down", std::nullopt};
    auto down = bus::Publisher::open(zmq_, std::move(*k1), clock_, dpo);
    if (!down.ok()) return down.error().wrap("down bus");
    down_ = std::move(*down);
    auto k2 = loadKey();
    if (!k2.ok()) return k2.error();
    bus::PublisherOptions opo{
        cfg_.observe, true, cfg_.stateDir + "/out.seq", kBusSendHighWater, {}};
    opo.curve = {opts_.zap, "observe", std::nullopt};
    auto out = bus::Publisher::open(zmq_, std::move(*k2), clock_, opo);
    if (!out.ok()) return out.error().wrap("observation bus");
    out_ = std::move(*out);
    auto k3 = loadKey();
    if (!k3.ok()) return k3.error();
    bus::SubscriberOptions so;
    so.endpoint = cfg_.up;
    so.bind = true;
    so.verify.prefixes = {"obs", "reply"};
    so.key = &*k3;
    so.curve = {opts_.zap, "up", std::nullopt};
    auto up = bus::Subscriber::open(zmq_, trust_, clock_, so);
    if (!up.ok()) return up.error().wrap("up bus");
    up_ = std::move(*up);
    reactor_.addSocket(down_->socket(), [this] {
      down_->pollSubscriptions([this](std::string_view prefix, bool subscribed) {
        // A child (re)joined: tell it what it should be now, not a period from now.
        if (!subscribed || !prefix.starts_with("spec.")) return;
        auto c = byUuid_.find(std::string(afterFirst(prefix)));
        if (c != byUuid_.end()) publishSpec(children_.at(c->second));
      });
    });
    reactor_.addSocket(out_->socket(), [this] { out_->pollSubscriptions(); });
    reactor_.addSocket(up_->socket(), [this] { drainUp(); });
    return {};
  }

  // The outside observers of a tcp:// observation bus: every observers/*.pub of the state dir
  // (none when the folder is absent). They are admitted to connect, nothing more: they publish
  // nothing this daemon reads.
  Status loadObservers() {
    const std::string dir = cfg_.stateDir + "/observers";
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) return {};
    return observers_.load(dir, {""});
  }

  Status loadNodes() {
    auto nodes = store_.nodes();
    if (!nodes.ok()) return nodes.error();
    for (auto& rec : *nodes) {
      Child c;
      c.rec = rec;
      if (!rec.specJson.empty()) {
        json body = json::parse(rec.specJson, nullptr, false);
        auto spec = nodeSpecFromJson(body, cfg_.ring + 1);
        if (!spec.ok()) {
          return spec.error().wrap(store_.path() + ": stored spec of node '" + rec.label + "'");
        }
        c.spec = std::move(*spec);
        c.specBody = std::move(body);
        c.digest = specDigest(c.specBody);
      }
      if (rec.revokedWallMs == 0) {
        auto key = crypto::PublicKey::fromHex(rec.publicKeyHex);
        if (!key.ok()) return key.error().wrap(store_.path() + ": node '" + rec.label + "'");
        if (auto st = trustChild(*key, rec); !st.ok()) return st;
      }
      byUuid_[rec.uuid] = rec.label;
      children_.emplace(rec.label, std::move(c));
    }
    // Replays of what an earlier run accepted stay refused.
    auto marks = store_.seqMarks();
    if (!marks.ok()) return marks.error();
    for (const auto& [hex, seq] : *marks) {
      if (auto key = crypto::PublicKey::fromHex(hex); key.ok()) {
        up_->verifier().restoreMark(*key, seq);
      }
    }
    return {};
  }

  Status trustChild(const crypto::PublicKey& key, const store::NodeRecord& rec) {
    return trust_.add(key, rec.label, {"obs." + rec.uuid, "reply." + rec.uuid});
  }

  // Creates the nodes `desired` adds (uuid, keys, state dir, config), updates the specs of the
  // others, and forgets the ones it no longer lists.
  Status ensureNodes(const std::vector<NodeSpec>& desired) {
    // Everything is checked before anything changes: a refused set leaves the running one.
    for (const NodeSpec& spec : desired) {
      if (auto st = checkNodeStrategy(spec, cfg_.ring + 1, *opts_.nodeStrategies); !st.ok()) {
        return st;
      }
      if (isTenantNode(spec, cfg_.ring + 1) && !tenantRange_) {
        return Error{"ring-2 node '" + spec.label + "': strategy " + spec.strategy +
                         " needs tenant_uids in the spec of ring-1 node '" + cfg_.label +
                         "' (the ids its tenant nodes run as)",
                     409};
      }
    }
    std::set<std::string> wanted;
    for (const NodeSpec& spec : desired) {
      wanted.insert(spec.label);
      json body = nodeSpecToJson(spec);
      auto it = children_.find(spec.label);
      if (it == children_.end()) {
        auto created = createNode(spec, body);
        if (!created.ok()) return created.error();
        byUuid_[created->rec.uuid] = spec.label;
        it = children_.emplace(spec.label, std::move(*created)).first;
      } else if (it->second.spec != spec || it->second.specBody.is_null()) {
        Child& c = it->second;
        c.spec = spec;
        c.rec.specJson = body.dump();
        c.specBody = std::move(body);
        c.digest = specDigest(c.specBody);
        if (auto st = store_.putNode(c.rec); !st.ok()) return st;
      }
      if (auto st = dealTenantIds(it->second); !st.ok()) {
        return st.error().wrap("node '" + spec.label + "'");
      }
      // Rewritten every time, so a changed endpoint or heartbeat reaches the child's next start.
      if (auto st = writeChildFiles(it->second); !st.ok()) return st;
    }
    for (auto it = children_.begin(); it != children_.end();) {
      if (wanted.contains(it->first)) {
        ++it;
        continue;
      }
      spdlog::info("{}: node '{}' is no longer configured: stopping and forgetting it", name(),
                   it->first);
      if (auto key = crypto::PublicKey::fromHex(it->second.rec.publicKeyHex); key.ok()) {
        trust_.remove(*key);
      }
      if (auto st = store_.deleteNode(it->second.rec.uuid); !st.ok()) return st;
      const std::string aside = moveAside(childDir(it->first));
      if (it->second.tenant) {
        // Its files go to root before its ids can be dealt to another node.
        if (!aside.empty()) disownTenantDir(aside);
        if (auto st = retireTenantIds(store_, it->second.rec.uuid); !st.ok()) return st;
      }
      byUuid_.erase(it->second.rec.uuid);
      it = children_.erase(it);
    }
    return {};
  }

  Result<Child> createNode(const NodeSpec& spec, json body) {
    Child c;
    c.spec = spec;
    c.rec.uuid = newUuid();
    c.rec.ring = cfg_.ring + 1;
    c.rec.label = spec.label;
    c.rec.supervisionStrategy = spec.strategy;
    c.rec.compartment = spec.compartment;
    c.rec.createdWallMs = clock_.wallMillis();
    c.rec.specJson = body.dump();
    c.specBody = std::move(body);
    c.digest = specDigest(c.specBody);
    const std::string dir = childDir(spec.label);
    // What a forgotten node of the same label left (keys, its store, its children's identities)
    // must not become part of the new one.
    moveAside(dir);
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return Error{"node '" + spec.label + "': create " + dir + ": " + ec.message()};
    if (::chmod(dir.c_str(), 0700) != 0) return errnoError("chmod 0700 " + dir, errno);
    // The child's secret goes to the child only: a 0600 file in its own state dir. This
    // daemon keeps just the public half, in its store and its trust store.
    crypto::SecretKey key = crypto::SecretKey::generate();
    if (auto st = crypto::writeKeyPair(dir + "/node", key, true); !st.ok()) {
      return st.error().wrap("node '" + spec.label + "'");
    }
    c.rec.publicKeyHex = key.publicKey().hex();
    if (auto st = store_.putNode(c.rec); !st.ok()) return st.error();
    if (auto st = trustChild(key.publicKey(), c.rec); !st.ok()) return st.error();
    spdlog::info("{}: created ring-{} node '{}' ({}) in {}", name(), c.rec.ring, spec.label,
                 c.rec.uuid, dir);
    return c;
  }

  // Keeps a state dir that is no longer a node's (its logs may matter) under another name:
  // nodes/LABEL.removed-WALLMS.
  // Returns where it went ("" when there was nothing, or it could not be moved).
  std::string moveAside(const std::string& dir) {
    std::error_code ec;
    if (!std::filesystem::exists(dir, ec)) return "";
    const std::string to = dir + ".removed-" + std::to_string(clock_.wallMillis());
    std::filesystem::rename(dir, to, ec);
    if (ec) {
      spdlog::warn("{}: cannot move {} aside: {}", name(), dir, ec.message());
      return "";
    }
    spdlog::info("{}: moved the state of a forgotten node to {}", name(), to);
    return to;
  }

  // A tenant node's ids: dealt once, from the store after that.
  Status dealTenantIds(Child& c) {
    if (!isTenantNode(c.spec, cfg_.ring + 1)) {
      c.tenant.reset();
      return {};
    }
    if (!tenantRange_) return Error{"strategy " + c.spec.strategy + " needs tenant_uids", 409};
    auto ids = assignTenantIds(store_, *tenantRange_, c.rec.uuid);
    if (!ids.ok()) return ids.error();
    if (!c.tenant || c.tenant->uid != ids->uid) {
      spdlog::info("{}: node '{}' runs as uid {} (its processes as uid {})", name(), c.rec.label,
                   ids->uid, ids->appUid);
    }
    c.tenant = *ids;
    return {};
  }

  TenantPlacement placement(const Child& c) const {
    // What a sandbox hides: the whole tree's state (ring0d's dir, where this daemon's parent
    // bus is) and the host's homes; its own home is bound back in.
    std::string root = cfg_.stateDir;
    if (constexpr std::string_view kIpc = "ipc://"; cfg_.parentDown.starts_with(kIpc)) {
      root = std::filesystem::path(cfg_.parentDown.substr(kIpc.size())).parent_path().string();
    }
    // The cgroup is named by the node's uuid: unique on the host, whatever ring1d it is under.
    return {*c.tenant, c.rec.uuid, tenantHome(childDir(c.rec.label)),
            {root, "/home"}};
  }

  // With tenant nodes: their daemons (in the range's bus group) reach this daemon's buses and
  // their state dirs; nothing else of theirs does.
  Status shareWithTenants() {
    if (!tenantRange_ || !down_) return {};
    for (const std::string& endpoint : {cfg_.down, cfg_.up}) {
      if (auto st = shareSocketWithGroup(endpoint, tenantRange_->first); !st.ok()) return st;
    }
    const std::string nodes = cfg_.stateDir + "/nodes";
    std::error_code ec;
    std::filesystem::create_directories(nodes, ec);
    if (ec) return Error{"create " + nodes + ": " + ec.message()};
    return makeTraversable(nodes);
  }

 public:
  Status setTenantUids(const std::string& text) {
    if (text.empty()) {
      tenantRange_.reset();
      return {};
    }
    auto range = parseUidRange(text);
    if (!range.ok()) return range.error();
    tenantRange_ = *range;
    return shareWithTenants();
  }

 private:

  Status writeChildFiles(const Child& c) {
    const std::string dir = childDir(c.rec.label);
    DaemonConfig child;
    child.ring = cfg_.ring + 1;
    child.uuid = c.rec.uuid;
    child.label = c.rec.label;
    child.stateDir = dir;
    child.logLevel = cfg_.logLevel;
    child.key = dir + "/node.key";
    child.parentKey = dir + "/parent.pub";
    child.parentDown = cfg_.down;
    child.parentUp = cfg_.up;
    fillDefaultEndpoints(child);
    child.heartbeatMs = cfg_.heartbeatMs;
    child.heartbeatTimeoutMs = cfg_.heartbeatTimeoutMs;
    if (auto st = writeFileAtomic(dir + "/parent.pub", ownPublic_.hex() + "\n", 0644); !st.ok()) {
      return st;
    }
    if (auto st = writeFileAtomic(childConfigPath(c.rec.label), renderChildConfig(child), 0644);
        !st.ok()) {
      return st;
    }
    if (c.tenant) return prepareTenantDir(dir, *c.tenant);
    return {};
  }

  std::vector<supervise::ProcessSpec> processSpecs() const {
    std::vector<supervise::ProcessSpec> out;
    for (const auto& [label, c] : children_) {
      if (c.rec.revokedWallMs != 0) continue;
      // A tenant node whose ids could not be dealt (logged) is not started as anything else.
      if (isTenantNode(c.spec, cfg_.ring + 1) && !c.tenant) continue;
      const TenantPlacement tenant = c.tenant ? placement(c) : TenantPlacement{};
      supervise::ProcessSpec p =
          nodeDaemonSpec(c.spec, opts_.childExe, cfg_.ring + 1, c.tenant ? &tenant : nullptr);
      p.name = label;  // c.spec is empty for a node whose spec the store does not have
      for (const auto& s : c.spec.sockets) p.sockets.push_back({s.name, loopbackSocketKey(s.port)});
      p.command.insert(p.command.end(), {"--config", childConfigPath(label)});
      // The child says READY=1 once its own children are up, and WATCHDOG=1 from its reactor
      // every heartbeat: a hung daemon is restarted like a dead one.
      p.readiness.kind = "notify";
      p.readiness.timeoutMs = cfg_.ring == 0 ? kRing1ReadyTimeoutMs : kRing2ReadyTimeoutMs;
      p.readiness.watchdogMs =
          std::max<int64_t>(kWatchdogHeartbeatTimeouts * cfg_.heartbeatTimeoutMs, kMinWatchdogMs);
      p.restart.delayMs = kNodeRestartDelayMs;
      p.restart.backoffMaxMs = kNodeBackoffMaxMs;
      p.restart.maxRestarts = kNodeMaxRestarts;
      p.restart.windowS = kNodeRestartWindowS;
      p.stopTimeoutMs = cfg_.ring == 0 ? kRing1StopTimeoutMs : kRing2StopTimeoutMs;
      p.orphanStopMs = c.spec.orphanStopMs;
      // Fault injection reaches the whole tree (the engine gives children a minimal environment).
      if (opts_.dropFraction > 0) p.env["ENJIN_FAULT_DROP"] = std::to_string(opts_.dropFraction);
      out.push_back(std::move(p));
    }
    return out;
  }

  void publish(bus::Publisher& pub, const std::string& topic, std::string_view type,
               const json& body) {
    if (auto st = pub.publish(topic, type, body); !st.ok()) {
      spdlog::warn("{}: {}", name(), st.error().message);
    }
  }

  void publishSpec(Child& c) {
    if (c.rec.revokedWallMs != 0 || c.specBody.is_null()) return;
    const SpecMessage m{c.rec.uuid, c.digest, instance_, c.specBody};
    publish(*down_, "spec." + c.rec.uuid, SpecMessage::kType, m.toJson());
  }

  bool dropForTest() { return faultDropThis(opts_.dropFraction, random_); }

  void drainUp() {
    up_->drain([this](bus::Message&& m) {
      if (dropForTest()) return;
      const std::string uuid(afterFirst(m.topic));
      auto it = byUuid_.find(uuid);
      if (it == byUuid_.end()) return;
      Child& c = children_.at(it->second);
      if (m.type == kObservationType) {
        auto clean = cleanObservation(m.body, cfg_.ring + 1);
        if (!clean.ok()) return refuse(c, clean.error().message);
        onObservation(c, std::move(*clean));
      } else if (m.type == ReplyMessage::kType) {
        auto reply = ReplyMessage::fromJson(m.body);
        if (!reply.ok()) return refuse(c, reply.error().message);
        onReply(uuid, *reply);
      }
    });
  }

  // A signed message from a child that does not say what the protocol says: counted, logged
  // once per distinct fault, never acted on.
  void refuse(Child& c, const std::string& why) {
    ++refused_;
    if (why == c.lastRefusal) return;
    c.lastRefusal = why;
    spdlog::warn("{}: refused a message from node '{}': {}", name(), c.rec.label, why);
  }

  void onObservation(Child& c, json body) {
    c.lastSeenNs = clock_.monotonicNanos();
    if (c.observedStale) {
      c.observedStale = false;
      changed();
    }
    if (c.lost) {
      c.lost = false;
      spdlog::info("{}: node '{}' heartbeats again", name(), c.rec.label);
      recordObservation(c, "heartbeat", "back", json::object());
    }
    // The child says which spec it runs: a different one means it missed ours.
    if (body.value("spec_digest", std::string()) != c.digest) publishSpec(c);
    if (body != c.observed) {
      const bool usageOnly = sameApartFromUsage(body, c.observed);
      c.observed = std::move(body);
      if (!usageOnly) changed();
    }
  }

  void onReply(const std::string& fromUuid, const ReplyMessage& reply) {
    auto it = pending_.find(reply.id);
    if (it == pending_.end() || it->second.uuid != fromUuid) return;
    reactor_.cancelTimer(it->second.timer);
    Reply r = std::move(it->second.reply);
    pending_.erase(it);
    r(reply.toAnswer());
  }

  void onProcessEvent(const supervise::StateEvent& ev) {
    auto it = children_.find(ev.status.name);
    if (it == children_.end()) return;
    Child& c = it->second;
    if (!live(ev.status.state)) {
      // A new run must heartbeat on its own account. What the child last reported stays
      // while it restarts (its own children run on and are re-adopted); once it is down for
      // good, nothing below it is known any more.
      c.lastSeenNs = 0;
      c.lost = false;
      c.observedStale = true;  // shown, but not taken for the new run's word
      if (ev.status.state == ProcessState::kStopped || ev.status.state == ProcessState::kFailed) {
        c.observed = nullptr;
      }
    }
    recordObservation(c, "process", std::string(supervise::stateName(ev.status.state)),
                      supervise::statusToJson(ev.status));
    changed();
  }

  void recordObservation(const Child& c, const std::string& strategy, const std::string& state,
                         const json& body) {
    store::ObservationRecord o;
    o.nodeUuid = c.rec.uuid;
    o.strategy = strategy;
    o.state = state;
    o.wallMs = clock_.wallMillis();
    o.bodyJson = body.dump();
    if (auto st = store_.addObservation(o); !st.ok()) {
      spdlog::warn("{}: {}", name(), st.error().message);
    }
  }

  // Every heartbeat: specs again (level-triggered), lost children, the tree on the out bus.
  void tick() {
    tickTimer_ = reactor_.addTimerAfterMillis(cfg_.heartbeatMs, [this] { tick(); });
    for (auto& [label, c] : children_) publishSpec(c);
    for (const auto& [id, p] : pending_) publish(*down_, "cmd." + p.uuid, "command", p.body);
    checkHeartbeats();
    publish(*out_, "tree", "tree", tree());
    const int64_t now = clock_.monotonicNanos();
    if (now - lastMarkSaveNs_ >= kSeqMarkSaveEveryMs * 1'000'000) {
      lastMarkSaveNs_ = now;
      saveSeqMarks();
    }
  }

  void checkHeartbeats() {
    const int64_t now = clock_.monotonicNanos();
    const auto status = statusByName();
    for (auto& [label, c] : children_) {
      auto s = status.find(label);
      if (c.lost || c.rec.revokedWallMs != 0 || s == status.end() || !live(s->second.state)) {
        continue;
      }
      // Since the last heartbeat, or since the run (or this daemon, which may have re-adopted
      // it) started if none came yet.
      int64_t since = c.lastSeenNs;
      if (since == 0) since = std::max(startedNs(s->second), startedNs_);
      if (now - since > cfg_.heartbeatTimeoutMs * 1'000'000) {
        c.lost = true;
        spdlog::warn("{}: node '{}' is lost: no heartbeat for {} ms", name(), label,
                     cfg_.heartbeatTimeoutMs);
        recordObservation(c, "heartbeat", "lost", json::object());
        changed();
      }
    }
  }

  int64_t startedNs(const supervise::ProcessStatus& s) {
    // The run's start on the monotonic clock, from its wall-clock start.
    const int64_t ageMs = std::max<int64_t>(0, clock_.wallMillis() - s.startedAtWallMs);
    return clock_.monotonicNanos() - ageMs * 1'000'000;
  }

  void saveSeqMarks() {
    std::vector<std::pair<std::string, uint64_t>> marks;
    for (const auto& [key, seq] : up_->verifier().marks()) {
      auto saved = savedMarks_.find(key.hex());
      if (saved != savedMarks_.end() && saved->second == seq) continue;
      marks.emplace_back(key.hex(), seq);
    }
    if (marks.empty()) return;
    if (auto st = store_.putSeqMarks(marks); !st.ok()) {
      spdlog::warn("{}: {}", name(), st.error().message);
      return;
    }
    for (auto& [hex, seq] : marks) savedMarks_[hex] = seq;
  }

  // The engine's view of the children's daemons, by label.
  std::map<std::string, supervise::ProcessStatus> statusByName() const {
    std::map<std::string, supervise::ProcessStatus> out;
    for (auto& s : supervisor_.status()) out.emplace(s.name, std::move(s));
    return out;
  }

  bool childrenUp(const std::map<std::string, supervise::ProcessStatus>& statuses) const {
    for (const auto& [label, c] : children_) {
      if (c.rec.revokedWallMs != 0) continue;
      auto it = statuses.find(label);
      if (it == statuses.end() || !settled(it->second.state)) return false;
    }
    return true;
  }

  // `s`: the engine's status of the child's daemon, if it has one.
  json childJson(const Child& c, const supervise::ProcessStatus* s) const {
    json j;
    if (s != nullptr) {
      j = supervise::statusToJson(*s);
    } else {
      j = json{{"state", "stopped"}, {"pid", 0}, {"restarts", 0}, {"started_wall_ms", 0}};
    }
    j.erase("name");
    j["label"] = c.rec.label;
    j["uuid"] = c.rec.uuid;
    j["ring"] = c.rec.ring;
    j["state_dir"] = childDir(c.rec.label);
    if (!c.rec.compartment.empty()) j["compartment"] = c.rec.compartment;
    if (c.rec.revokedWallMs != 0) {
      j["state"] = "revoked";
    } else if (c.lost) {
      j["state"] = "lost";
      j["detail"] = "no heartbeat for " + std::to_string(cfg_.heartbeatTimeoutMs) + " ms";
    }
    if (c.lastSeenNs != 0) {
      j["heartbeat_age_ms"] = (clock_.monotonicNanos() - c.lastSeenNs) / 1'000'000;
    }
    if (!c.observed.is_object()) {
      // Nothing from this run yet; a node that is down has nothing below it to report.
      const std::string state = j.value("state", "");
      if (state != "stopped" && state != "failed" && state != "revoked") {
        j["observed_state"] = "unknown";
      }
    } else {
      if (auto n = c.observed.find("nodes"); n != c.observed.end()) j["nodes"] = *n;
      if (auto p = c.observed.find("processes"); p != c.observed.end()) j["processes"] = *p;
      if (auto o = c.observed.find("offer"); o != c.observed.end()) j["offer"] = *o;
      if (auto i = c.observed.find("isolation"); i != c.observed.end()) j["isolation"] = *i;
      // Until the current run reports, what the last one said is shown but vouches for nothing.
      j["observed_state"] = c.observedStale ? "unknown" : c.observed.value("state", "");
      j["spec_applied"] =
          !c.observedStale && c.observed.value("spec_digest", std::string()) == c.digest;
    }
    return j;
  }

  std::string ownState(const json& t, bool up) const {
    if (!up) return "starting";
    for (const auto& n : t["nodes"]) {
      if (n.value("state", "") == "revoked") continue;
      if (n.value("state", "") != "ready" || n.value("observed_state", "") != "ready") {
        return "degraded";
      }
    }
    return "ready";
  }

  // Something below changed: after a few ms (so a burst is one pass), the events on the out bus
  // and the news to whoever listens (a parent link republishes upward).
  void changed() {
    if (changeTimer_ != 0) return;
    changeTimer_ = reactor_.addTimerAfterMillis(kChangeCoalesceMs, [this] {
      changeTimer_ = 0;
      const json t = tree();
      for (const auto& ev : diffTrees(lastFlat_, flattenTree(t), &lastFlat_)) {
        publish(*out_, "event." + ev.topicPath, "tree_event", ev.body);
        if (onEvent_) onEvent_(ev.topicPath, ev.body);
      }
      if (onChange_) onChange_(t);
    });
  }

  Reactor& reactor_;
  const Clock& clock_;
  zmq::context_t& zmq_;
  store::Store& store_;
  ParentOptions opts_;
  const DaemonConfig& cfg_;
  std::function<uint64_t()> random_;
  // The listening sockets of the ring-2 nodes (NodeSpec::sockets), by loopbackSocketKey: bound
  // here, kept by the holder with each node's daemon, and given back by it after a restart.
  supervise::SocketTable sockets_;
  // The node each held socket is for, by key: a node's spec, or an app instance about to be made.
  std::map<std::string, std::string> socketFor_;
  supervise::Supervisor supervisor_;
  bus::TrustStore trust_;
  bus::TrustStore observers_;  // admitted to a tcp:// observation bus only
  crypto::PublicKey ownPublic_{};
  std::unique_ptr<bus::Publisher> down_, out_;
  std::unique_ptr<bus::Subscriber> up_;
  std::map<std::string, Child> children_;       // by label
  std::optional<UidRange> tenantRange_;         // the ring-1 node's tenant_uids, when set
  std::map<std::string, std::string> byUuid_;   // uuid -> label
  std::map<std::string, Pending> pending_;      // request id -> who waits
  FlatTree lastFlat_;
  std::map<std::string, uint64_t> savedMarks_;
  int64_t lastMarkSaveNs_ = 0;
  int64_t startedNs_ = 0;
  // Names this run of the daemon in every spec: a child that sees a new one reports its whole
  // state at once, since the restarted parent knows nothing of it yet. (The child's XPUB would
  // not tell it: libzmq does not report a subscription again after its peer restarted.)
  const std::string instance_ = newUuid();
  Reactor::TimerId changeTimer_ = 0;
  Reactor::TimerId tickTimer_ = 0;
  std::function<void(const json&)> onChange_;
  std::function<void(const std::string&, const json&)> onEvent_;
  uint64_t refused_ = 0;  // signed messages from children that broke the protocol
};

NodeParent::NodeParent(Reactor& reactor, const Clock& clock, zmq::context_t& zmq,
                       store::Store& store, ParentOptions options,
                       std::function<uint64_t()> random)
    : impl_(std::make_unique<Impl>(reactor, clock, zmq, store, std::move(options),
                                   std::move(random))) {}
NodeParent::~NodeParent() = default;
Status NodeParent::start(std::optional<std::vector<NodeSpec>> desired) {
  return impl_->start(std::move(desired));
}
Status NodeParent::apply(std::vector<NodeSpec> desired) { return impl_->apply(std::move(desired)); }
void NodeParent::stopAll(std::function<void()> done) { impl_->stopAll(std::move(done)); }
Status NodeParent::revoke(const std::string& label) { return impl_->revoke(label); }
Status NodeParent::setTenantUids(const std::string& range) { return impl_->setTenantUids(range); }
void NodeParent::command(const std::string& op, const std::string& path, Reply reply) {
  impl_->command(op, path, std::move(reply));
}
json NodeParent::tree() const { return impl_->tree(); }
void NodeParent::setOnEvent(std::function<void(const std::string&, const json&)> f) {
  impl_->setOnEvent(std::move(f));
}
Status NodeParent::publishOut(const std::string& topic, std::string_view type, const json& body) {
  return impl_->publishOut(topic, type, body);
}
std::string NodeParent::publicKeyHex() const { return impl_->publicKeyHex(); }
void NodeParent::setOnChange(std::function<void(const nlohmann::json&)> f) {
  impl_->setOnChange(std::move(f));
}
const bus::BusCounters& NodeParent::upCounters() const { return impl_->upCounters(); }
std::map<std::string, bus::ConnectionCounters> NodeParent::connectionCounters() const {
  return impl_->connectionCounters();
}
uint64_t NodeParent::refusedMessages() const { return impl_->refusedMessages(); }
supervise::Supervisor& NodeParent::supervisor() { return impl_->supervisor(); }
Status NodeParent::holdSocket(int port, const std::string& node) {
  return impl_->holdSocket(port, node);
}
std::string NodeParent::socketOwner(int port) const {
  return impl_->socketOwner(port);
}
void NodeParent::releaseSocket(int port) { impl_->releaseSocket(port); }
std::string NodeParent::nodeStateDir(const std::string& label) const {
  return impl_->nodeStateDir(label);
}
uint32_t NodeParent::nodeUid(const std::string& label) const {
  return impl_->nodeUid(label);
}

}  // namespace enjin::ring
