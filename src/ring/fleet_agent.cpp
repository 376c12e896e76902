#include "enjin/ring/fleet_agent.hpp"

#include <sodium.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <set>

#include "enjin/acl/tokens.hpp"
#include "enjin/api/http_server.hpp"
#include "enjin/directory/directory.hpp"
#include "enjin/fleet/etcd.hpp"
#include "enjin/fleet/placement.hpp"
#include "enjin/reactor/handoff.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/ring/node_spec_json.hpp"
#include "enjin/ring/offer.hpp"
#include "enjin/store/store.hpp"

namespace enjin::ring {

using nlohmann::json;
using fleet::Compare;
using fleet::EtcdClient;
using fleet::TxnOp;

namespace {

constexpr const char* kRoot = "/enjin/";
const std::string kFleetKey = "/enjin/fleet";
const std::string kSchedulerKey = "/enjin/scheduler";
const std::string kTrust = "/enjin/trust/";
const std::string kTokens = "/enjin/tokens/";
const std::string kHosts = "/enjin/hosts/";
const std::string kNodes = "/enjin/nodes/";
const std::string kAssign = "/enjin/assign/";
const std::string kPending = "/enjin/pending/";
constexpr int64_t kMinRecordIntervalMs = 500;  // host record updates, coalesced
constexpr int64_t kRenewRetryMs = 20;           // after a renewal that failed

std::string sha256Hex(const std::string& s) {
  unsigned char out[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(out, reinterpret_cast<const unsigned char*>(s.data()), s.size());
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : out) {
    hex += kHex[c >> 4];
    hex += kHex[c & 15];
  }
  return hex;
}

json parseOr(const std::string& text, json fallback = json::object()) {
  json j = json::parse(text, nullptr, false);
  return j.is_discarded() ? fallback : j;
}

// The fleet's fields of a node body, taken off before it is parsed as a ring-1 node.
struct FleetFields {
  std::string spread;
  std::string onLostQuorum = "fence";
};

Result<FleetFields> takeFleetFields(json& body) {
  FleetFields f;
  if (!body.is_object()) return Error{"node: expected a JSON object", 400};
  if (auto it = body.find("spread"); it != body.end()) {
    if (!it->is_string()) return Error{"node: spread: expected a compartment level name", 400};
    f.spread = *it;
    body.erase(it);
  }
  if (auto it = body.find("on_lost_quorum"); it != body.end()) {
    if (!it->is_string() || (*it != "fence" && *it != "keep")) {
      return Error{"node: on_lost_quorum: expected \"fence\" or \"keep\"", 400};
    }
    f.onLostQuorum = *it;
    body.erase(it);
  }
  return f;
}

// What a ring-1 node asks of a host: one slot, and the memory its ring-2 nodes' limits name.
fleet::Capacity needOf(const NodeSpec& spec) {
  fleet::Capacity need{1, 0};
  for (const auto& child : spec.nodes) {
    if (child.limitsJson.empty()) continue;
    json l = parseOr(child.limitsJson);
    if (auto it = l.find("memory"); it != l.end() && it->is_number_integer()) {
      need.memoryBytes += it->get<int64_t>();
    }
  }
  return need;
}

Error unavailable(const Error& e) {
  Error out = e;
  if (out.code == 0 || out.code >= 500) out.code = 503;
  return out.wrap("the fleet's etcd");
}

// One entry of a compact tree: what names it, its state and pid; nodes and processes below.
json compactEntry(const json& n, int depth) {
  json out = json::object();
  if (!n.is_object()) return out;
  if (n.contains("label")) out["label"] = n.value("label", "");
  if (n.contains("name")) out["name"] = n.value("name", "");
  out["state"] = n.value("state", "");
  if (const int pid = n.value("pid", 0); pid > 0) out["pid"] = pid;
  // Ring 1 -> ring 2 -> processes: three levels at most, whatever a child reports.
  if (depth >= 2) return out;
  for (const char* key : {"nodes", "processes"}) {
    auto it = n.find(key);
    if (it == n.end() || !it->is_array() || it->empty()) continue;
    json kids = json::array();
    for (const auto& k : *it) kids.push_back(compactEntry(k, depth + 1));
    out[key] = std::move(kids);
  }
  return out;
}

}  // namespace

json compactNodeTree(const json& node) {
  return compactEntry(node, 0);
}

std::string fleetObserveEndpoint(const std::string& observe, const std::string& advertise) {
  constexpr std::string_view kTcp = "tcp://";
  if (!observe.starts_with(kTcp)) return "";
  if (advertise.empty()) return observe;
  const size_t colon = observe.rfind(':');
  if (colon == std::string::npos || colon < kTcp.size()) return observe;
  return std::string(kTcp) + advertise + observe.substr(colon);
}

class FleetAgent::Impl {
 public:
  Impl(Reactor& reactor, const Clock& clock, store::Store& store, FleetSettings settings,
       std::string publicKeyHex, std::string apiUrl, FleetHooks hooks)
      : reactor_(reactor),
        clock_(clock),
        store_(store),
        s_(std::move(settings)),
        publicKey_(std::move(publicKeyHex)),
        apiUrl_(std::move(apiUrl)),
        hooks_(std::move(hooks)),
        handoff_(reactor) {}

  ~Impl() {
    handoff_.close();
    watch_.reset();
  }

  Status init() {
    fleet::EtcdOptions o;
    o.endpoints = s_.etcd;
    o.caFile = s_.etcdCa;
    o.certFile = s_.etcdCert;
    o.keyFile = s_.etcdKey;
    // A keep-alive must come back well inside the margin, and the other calls too: a call that
    // hangs delays the next one on its worker.
    o.timeoutMs = std::max<int64_t>(100, ttlMs() / 10);
    auto lease = EtcdClient::create(o);
    if (!lease.ok()) return lease.error();
    leaseClient_ = std::move(*lease);
    o.timeoutMs = std::max<int64_t>(500, ttlMs() / 2);
    auto main = EtcdClient::create(o);
    if (!main.ok()) return main.error();
    etcd_ = std::move(*main);
    if (auto path = fleet::parseCompartmentPath(s_.compartment); !path.ok()) return path.error();
    return {};
  }

  int64_t ttlMs() const { return s_.leaseTtlMs; }
  // From the last lease renewal sent that succeeded until this host must have stopped its nodes.
  int64_t fenceAfterMs() const {
    return static_cast<int64_t>(static_cast<double>(ttlMs()) * (1 - kFenceMargin));
  }
  int64_t orphanStopMs() const {
    return static_cast<int64_t>(static_cast<double>(ttlMs()) * kOrphanStopShare);
  }
  int64_t nowNs() const { return clock_.monotonicNanos(); }

  // ---- start (blocking) -------------------------------------------------------------------

  Status join(const std::string& token) {
    auto trusted = etcd_->get(kTrust + s_.host);
    if (!trusted.ok()) return unavailable(trusted.error());
    if (!trusted->kvs.empty()) {
      if (trusted->kvs[0].value != publicKey_) {
        return Error{"host name '" + s_.host +
                     "' is taken in the fleet by another ring-0 key (" + trusted->kvs[0].value +
                     "): give this host another [fleet] host name"};
      }
      return {};
    }
    const json founded{{"created_by", s_.host}, {"created_at", directory::rfc3339(clock_.wallMillis())}};
    if (token.empty()) {
      // No fleet yet: this host founds it.
      auto t = etcd_->txn({Compare::absent(kFleetKey), Compare::absent(kTrust + s_.host)},
                          {TxnOp::put(kFleetKey, founded.dump()), TxnOp::put(kTrust + s_.host, publicKey_)});
      if (!t.ok()) return unavailable(t.error());
      if (!t->succeeded) {
        return Error{"host '" + s_.host +
                     "' is not a member of the fleet: join it with ring0d --join TOKEN (a token "
                     "from `enjinctl fleet token` on a member)"};
      }
      spdlog::info("ring0d: fleet founded by host '{}'", s_.host);
      return {};
    }
    const std::string tokenKey = kTokens + sha256Hex(token);
    auto t = etcd_->txn({Compare{tokenKey, Compare::Target::kVersion, Compare::Op::kGreater, 0, ""},
                         Compare::absent(kTrust + s_.host)},
                        {TxnOp::del(tokenKey), TxnOp::put(kTrust + s_.host, publicKey_)});
    if (!t.ok()) return unavailable(t.error());
    if (!t->succeeded) {
      return Error{"enrolment token refused for host '" + s_.host +
                   "': unknown, used or expired (tokens are single use; mint one with "
                   "`enjinctl fleet token` on a member)"};
    }
    spdlog::info("ring0d: host '{}' joined the fleet", s_.host);
    return {};
  }

  Status takeLease() {
    auto stored = store_.meta("fleet_lease");
    if (!stored.ok()) return stored.error();
    const int64_t sent = nowNs();
    if (stored->has_value()) {
      const int64_t id = std::strtoll((*stored)->c_str(), nullptr, 10);
      auto ttl = leaseClient_->leaseKeepAlive(id);
      if (ttl.ok() && *ttl > 0) {
        lease_ = id;
        lastOkNs_ = sent;
        spdlog::info("ring0d: fleet: lease {:x} still alive, kept", id);
        return {};
      }
    }
    auto granted = etcd_->leaseGrant(ttlMs() / 1000);
    if (!granted.ok()) return unavailable(granted.error());
    lease_ = *granted;
    lastOkNs_ = sent;
    return store_.setMeta("fleet_lease", std::to_string(lease_));
  }

  json hostRecord() const {
    json offer = hostOffer();
    json nodes = json::array();
    if (hooks_.tree) {
      json t = hooks_.tree();
      for (const auto& n : t.value("nodes", json::array())) nodes.push_back(compactNodeTree(n));
    }
    return {{"host", s_.host},
            {"public_key", publicKey_},
            {"compartment", s_.compartment},
            {"capacity",
             {{"slots", s_.maxNodes},
              {"memory_bytes", offer.value("memory_bytes", int64_t{0})},
              {"cpus", offer.value("cpus", int64_t{0})}}},
            {"api", apiUrl_},
            {"advertise", s_.advertise},
            {"observe", fleetObserveEndpoint(s_.observe, s_.advertise)},
            {"nodes", std::move(nodes)},
            {"routers", routersHere()}};
  }

  // Where the routers of the ring-1 nodes this host runs are reached, by label: a router on a
  // wildcard address (0.0.0.0:P, [::]:P) at this host's advertised address, one on a given
  // address at that address (a loopback one is reached from this host only).
  json routersHere() const {
    json out = json::object();
    for (const auto& spec : running_) {
      if (spec.routerListen.empty()) continue;
      auto hp = api::parseListen(spec.routerListen);
      if (!hp.ok()) continue;
      std::string host = hp->first;
      if (host == "0.0.0.0" || host == "::" || host.empty()) {
        if (s_.advertise.empty()) continue;
        host = s_.advertise;
      }
      const bool v6 = host.find(':') != std::string::npos;
      out[spec.label] = (v6 ? "[" + host + "]" : host) + ":" + std::to_string(hp->second);
    }
    return out;
  }

  // Every fleet node and where its router is reached now, for the traffic manager.
  std::map<std::string, std::string> routers() const {
    std::map<std::string, std::string> out;
    for (const auto& [label, n] : nodes_) {
      std::string& at = out[label];
      auto a = assign_.find(label);
      if (a == assign_.end()) continue;
      auto h = hosts_.find(a->second.host);
      if (h == hosts_.end()) continue;  // lost: nowhere until it moves
      const json r = h->second.record.value("routers", json::object());
      auto it = r.find(label);
      if (it == r.end() || !it->is_string()) continue;
      const std::string address = *it;
      if (address.starts_with("127.") && a->second.host != s_.host) continue;
      at = address;
    }
    return out;
  }

  void announceRoutes() {
    if (!hooks_.routes) return;
    auto now = routers();
    if (routesAnnounced_ && now == lastRoutes_) return;
    routesAnnounced_ = true;
    lastRoutes_ = now;
    hooks_.routes(lastRoutes_);
  }

  Status start(const std::string& token) {
    if (auto st = join(token); !st.ok()) return st;
    if (auto st = takeLease(); !st.ok()) return st;
    if (auto put = etcd_->put(kHosts + s_.host, hostRecord().dump(), lease_); !put.ok()) {
      return unavailable(put.error());
    }
    auto all = etcd_->prefix(kRoot);
    if (!all.ok()) return unavailable(all.error());
    loadAll(*all);
    startWatch(all->revision + 1);
    running_ = wanted();
    scheduleKeepAlive();
    armFence();
    handoff_.post([this] { reconcile(); });
    spdlog::info("ring0d: fleet: host '{}' ({}) registered, {} node(s) assigned here, {}", s_.host,
                 s_.compartment, running_.size(),
                 scheduler_.empty() ? std::string("no scheduler yet") : "scheduler '" + scheduler_ + "'");
    return {};
  }

  void stop() {
    stopped_ = true;
    timers_.cancelAll();  // no fence, renewal or schedule after this
    watch_.reset();
    if (schedLease_ != 0) (void)leaseClient_->leaseRevoke(schedLease_);
    if (lease_ != 0) (void)leaseClient_->leaseRevoke(lease_);
    lease_ = schedLease_ = 0;
  }

  // ---- the fleet's state, from reads and the watch ------------------------------------------

  void loadAll(const fleet::RangeResult& all) {
    hosts_.clear();
    nodes_.clear();
    assign_.clear();
    pending_.clear();
    scheduler_.clear();
    for (const auto& kv : all.kvs) applyPut(kv);
  }

  void applyPut(const fleet::KeyValue& kv) {
    const std::string& k = kv.key;
    if (k.starts_with(kHosts)) {
      const std::string name = k.substr(kHosts.size());
      json rec = parseOr(kv.value);
      auto path = fleet::parseCompartmentPath(rec.value("compartment", name));
      Host h;
      h.record = rec;
      h.path = path.ok() ? *path : std::vector<std::string>{name};
      const json cap = rec.value("capacity", json::object());
      h.capacity = {cap.value("slots", int64_t{0}), cap.value("memory_bytes", int64_t{0})};
      hosts_[name] = std::move(h);
      lostSince_.erase(name);
    } else if (k.starts_with(kNodes)) {
      const std::string label = k.substr(kNodes.size());
      json body = parseOr(kv.value, nullptr);
      json stripped = body;
      auto fields = takeFleetFields(stripped);
      Result<NodeSpec> spec = fields.ok() ? hooks_.parseNode(stripped) : Result<NodeSpec>(fields.error());
      if (!spec.ok()) {
        spdlog::error("ring0d: fleet: node '{}' in etcd is not a valid node, not run: {}", label,
                      spec.error().message);
        nodes_.erase(label);
        return;
      }
      Node n{body, std::move(*spec), fields->spread, fields->onLostQuorum, {}, kv.modRevision};
      n.need = needOf(n.spec);
      nodes_[label] = std::move(n);
    } else if (k.starts_with(kAssign)) {
      assign_[k.substr(kAssign.size())] = {parseOr(kv.value).value("host", ""), kv.modRevision};
    } else if (k.starts_with(kPending)) {
      pending_[k.substr(kPending.size())] = kv.value;
    } else if (k == kSchedulerKey) {
      scheduler_ = kv.value;
    }
  }

  void applyDelete(const std::string& k) {
    if (k.starts_with(kHosts)) {
      hosts_.erase(k.substr(kHosts.size()));
    } else if (k.starts_with(kNodes)) {
      nodes_.erase(k.substr(kNodes.size()));
    } else if (k.starts_with(kAssign)) {
      assign_.erase(k.substr(kAssign.size()));
    } else if (k.starts_with(kPending)) {
      pending_.erase(k.substr(kPending.size()));
    } else if (k == kSchedulerKey) {
      scheduler_.clear();
    }
  }

  void startWatch(int64_t fromRevision) {
    watch_.reset();
    const uint64_t generation = ++watchGeneration_;
    watch_ = etcd_->watch(
        kRoot, fleet::prefixEnd(kRoot), fromRevision,
        [this, generation](std::vector<fleet::WatchEvent> events, int64_t) {
          handoff_.post([this, generation, events = std::move(events)] {
            if (generation != watchGeneration_) return;
            for (const auto& e : events) {
              if (e.type == fleet::WatchEvent::Type::kPut) {
                applyPut(e.kv);
              } else {
                applyDelete(e.kv.key);
              }
            }
            reconcile();
          });
        },
        [this, generation](const Error& e) {
          handoff_.post([this, generation, e] {
            if (generation != watchGeneration_) return;
            spdlog::warn("ring0d: fleet: watch ended ({}): reading the fleet again", e.message);
            reread();
          });
        });
  }

  // A whole new read (after a compaction, or a new lease): the state is replaced, the watch
  // starts after it.
  void reread(std::function<void()> then = {}) {
    worker_->run<fleet::RangeResult>(
        [](EtcdClient& c) { return c.prefix(kRoot); },
        [this, then = std::move(then)](Result<fleet::RangeResult> all) {
          if (!all.ok()) {
            spdlog::warn("ring0d: fleet: {}", all.error().message);
            timers_.after(ttlMs() / 2, [this, then] { reread(then); });
            return;
          }
          loadAll(*all);
          startWatch(all->revision + 1);
          if (then) then();
          reconcile();
        });
  }

  // ---- lease, fence -------------------------------------------------------------------------

  void scheduleKeepAlive() {
    keepTimer_ = timers_.after(std::max<int64_t>(50, ttlMs() / 5), [this] {
      keepTimer_ = 0;
      keepAlive();
      keepSchedulerLease();
      if (!stopped_) scheduleKeepAlive();
    });
  }

  void keepAlive() {
    if (renewing_ || lease_ == 0 || stopped_) return;
    renewing_ = true;
    const int64_t sent = nowNs();
    const int64_t lease = lease_;
    leaseWorker_->run<int64_t>(
        [lease](EtcdClient& c) { return c.leaseKeepAlive(lease); },
        [this, sent, lease](Result<int64_t> ttl) {
          renewing_ = false;
          if (lease != lease_ || stopped_) return;
          if (ttl.ok() && *ttl > 0) {
            lastOkNs_ = std::max(lastOkNs_, sent);
            if (unreachableSince_ != 0) {
              spdlog::info("ring0d: fleet: etcd reachable again");
              unreachableSince_ = 0;
            }
            armFence();
            if (fenced_) unfence();
            return;
          }
          if (ttl.ok() || ttl.error().code == 404) return rejoin();
          if (unreachableSince_ == 0) {
            unreachableSince_ = sent;
            spdlog::warn("ring0d: fleet: cannot renew the lease: {}", ttl.error().message);
          }
          // Unreachable or no leader (503): again at once rather than at the next tick, since
          // etcd may only be electing one, and the first renewal after the election keeps this
          // host from fencing. Any other refusal (401, a TLS failure) waits for the next tick.
          if (ttl.error().code == 503 && retryTimer_ == 0) {
            retryTimer_ = timers_.after(kRenewRetryMs, [this] {
              retryTimer_ = 0;
              keepAlive();
            });
          }
        });
  }

  void armFence() {
    if (fenceTimer_ != 0) timers_.cancel(fenceTimer_);
    const int64_t deadline = lastOkNs_ + fenceAfterMs() * 1'000'000;
    fenceTimer_ = timers_.at(deadline, [this] {
      fenceTimer_ = 0;
      fence("its lease could not be renewed for " +
            std::to_string((nowNs() - lastOkNs_) / 1'000'000) + " ms");
    });
  }

  void fence(const std::string& why) {
    if (fenced_) return;
    fenced_ = true;
    ++fences_;
    spdlog::warn("ring0d: fleet: host '{}' fenced: {}: its nodes with on_lost_quorum \"fence\" stop",
                 s_.host, why);
    updateRunning();
  }

  void unfence() {
    if (!fenced_ || lease_ == 0) return;
    fenced_ = false;
    spdlog::info("ring0d: fleet: host '{}' holds its lease again: running what is assigned to it",
                 s_.host);
    reconcile();
  }

  // The lease is gone (expired while this host was cut off): a new one, the host record again,
  // and a whole new read before anything runs here again.
  void rejoin() {
    if (rejoining_) return;
    rejoining_ = true;
    lease_ = 0;
    fence("its lease expired");
    const int64_t sent = nowNs();
    const std::string host = s_.host;
    const int64_t ttlS = ttlMs() / 1000;
    json record = hostRecord();
    worker_->run<int64_t>(
        [ttlS, host, record](EtcdClient& c) -> Result<int64_t> {
          auto lease = c.leaseGrant(ttlS);
          if (!lease.ok()) return lease.error();
          if (auto put = c.put(kHosts + host, record.dump(), *lease); !put.ok()) return put.error();
          return *lease;
        },
        [this, sent](Result<int64_t> lease) {
          if (!lease.ok()) {
            rejoining_ = false;
            spdlog::warn("ring0d: fleet: rejoin: {}", lease.error().message);
            timers_.after(ttlMs() / 4, [this] { rejoin(); });
            return;
          }
          (void)store_.setMeta("fleet_lease", std::to_string(*lease));
          reread([this, sent, lease = *lease] {
            lease_ = lease;
            lastOkNs_ = sent;
            rejoining_ = false;
            armFence();
            spdlog::info("ring0d: fleet: host '{}' rejoined with a new lease", s_.host);
            unfence();
          });
        });
  }

  // ---- what runs here -----------------------------------------------------------------------

  std::vector<NodeSpec> wanted() const {
    std::vector<NodeSpec> out;
    for (const auto& [label, a] : assign_) {
      if (a.host != s_.host) continue;
      auto n = nodes_.find(label);
      if (n == nodes_.end()) continue;
      if ((fenced_ || lease_ == 0) && n->second.onLostQuorum != "keep") continue;
      out.push_back(n->second.spec);
      // A dead ring0d cannot fence: its holder stops the node once this ring0d has been gone
      // for kOrphanStopShare of the TTL (a fence node only: a keep node outlives its host's
      // silence).
      if (n->second.onLostQuorum != "keep") out.back().orphanStopMs = orphanStopMs();
    }
    return out;
  }

  void updateRunning() {
    auto next = wanted();
    if (next == running_ && !runFailed_) return;
    running_ = next;
    if (!hooks_.run) return;
    Status st = hooks_.run(running_);
    runFailed_ = !st.ok();
    if (!st.ok()) spdlog::error("ring0d: fleet: {}", st.error().message);
    recordSoon();
  }

  void reconcile() {
    if (stopped_) return;
    updateRunning();
    announceRoutes();
    if (fenced_ || lease_ == 0) return;
    if (scheduler_.empty()) campaign();
    if (scheduler_ == s_.host && schedLease_ != 0) schedule();
    recordSoon();
  }

  // The host record again (its nodes' states), at most every kMinRecordIntervalMs.
  void recordSoon() {
    if (recordTimer_ != 0 || lease_ == 0 || stopped_) return;
    recordTimer_ = timers_.after(kMinRecordIntervalMs, [this] {
      recordTimer_ = 0;
      if (lease_ == 0) return;
      const std::string rec = hostRecord().dump();
      if (rec == lastRecord_) return;
      lastRecord_ = rec;
      const int64_t lease = lease_;
      const std::string key = kHosts + s_.host;
      worker_->run<int64_t>([key, rec, lease](EtcdClient& c) { return c.put(key, rec, lease); },
                            [](Result<int64_t>) {});
    });
  }

  // ---- the scheduler ------------------------------------------------------------------------

  // The election: the scheduler key under a lease of its own, so that a restarted ring0d, which
  // keeps its host lease (and its nodes), does not keep the scheduler's role as well: another
  // host takes it once that lease ends.
  void campaign() {
    if (campaigning_) return;
    campaigning_ = true;
    const std::string host = s_.host;
    const int64_t ttlS = ttlMs() / 1000;
    worker_->run<int64_t>(
        [host, ttlS](EtcdClient& c) -> Result<int64_t> {
          auto lease = c.leaseGrant(ttlS);
          if (!lease.ok()) return lease.error();
          auto t = c.txn({Compare::absent(kSchedulerKey)}, {TxnOp::put(kSchedulerKey, host, *lease)});
          if (t.ok() && t->succeeded) return *lease;
          (void)c.leaseRevoke(*lease);
          if (!t.ok()) return t.error();
          return int64_t{0};
        },
        [this](Result<int64_t> lease) {
          campaigning_ = false;
          if (lease.ok() && *lease != 0) {
            if (stopped_) {
              (void)leaseClient_->leaseRevoke(*lease);  // won while stopping: give it back
              return;
            }
            // The transaction proved the key ours, whether or not the watch has brought it yet;
            // and a reconcile it brought before this answer did not schedule (no lease then),
            // while a quiet fleet may send no other event: schedule now.
            schedLease_ = *lease;
            scheduler_ = s_.host;
            spdlog::info("ring0d: fleet: host '{}' is the scheduler", s_.host);
            ++elections_;
            reconcile();
          }
        });
  }

  void keepSchedulerLease() {
    if (schedLease_ == 0 || renewingSched_) return;
    renewingSched_ = true;
    const int64_t lease = schedLease_;
    schedWorker_->run<int64_t>([lease](EtcdClient& c) { return c.leaseKeepAlive(lease); },
                               [this, lease](Result<int64_t> ttl) {
                                 renewingSched_ = false;
                                 if (lease != schedLease_) return;
                                 if ((ttl.ok() && *ttl == 0) || (!ttl.ok() && ttl.error().code == 404)) {
                                   spdlog::warn("ring0d: fleet: host '{}' is no longer the scheduler",
                                                s_.host);
                                   schedLease_ = 0;
                                 }
                               });
  }

  void schedule() {
    const int64_t now = nowNs();
    const int64_t graceNs = s_.graceMs * 1'000'000;
    for (const auto& [label, a] : assign_) {
      if (!hosts_.count(a.host) && !lostSince_.count(a.host)) {
        lostSince_[a.host] = now;
        spdlog::warn("ring0d: fleet: host '{}' is lost (its lease expired): its nodes move in {} ms",
                     a.host, s_.graceMs);
      }
    }
    std::vector<fleet::HostInfo> hosts;
    for (const auto& [name, h] : hosts_) hosts.push_back({name, h.path, h.capacity});
    std::vector<fleet::NodeRequest> requests;
    int64_t nextGrace = 0;
    for (const auto& [label, n] : nodes_) {
      fleet::NodeRequest q{label, n.spec.compartment, n.spread, n.need, ""};
      // A write under way: counted where it goes (its room, its spread group), not placed again.
      if (auto w = writing_.find(label); w != writing_.end()) {
        if (!w->second.empty() && hosts_.count(w->second)) {
          q.assigned = w->second;
          requests.push_back(std::move(q));
        }
        continue;
      }
      if (auto a = assign_.find(label); a != assign_.end()) {
        if (hosts_.count(a->second.host)) {
          q.assigned = a->second.host;
        } else if (const int64_t since = lostSince_[a->second.host]; now - since < graceNs) {
          nextGrace = nextGrace == 0 ? since + graceNs : std::min(nextGrace, since + graceNs);
          continue;  // its host may only be late: wait out the grace
        }
      }
      requests.push_back(std::move(q));
    }
    if (nextGrace != 0 && graceTimer_ == 0) {
      graceTimer_ = timers_.at(nextGrace + 1'000'000, [this] {
        graceTimer_ = 0;
        reconcile();
      });
    }
    const auto placed = fleet::place(hosts, requests, s_.levels);
    for (const auto& label : placed.changed) writeAssignment(label, placed.assign.at(label));
    for (const auto& [label, why] : placed.pending) {
      auto p = pending_.find(label);
      if (p != pending_.end() && p->second == why) continue;
      if (p == pending_.end() || pendingLogged_[label] != why) {
        spdlog::warn("ring0d: fleet: node '{}' pending: {}", label, why);
        pendingLogged_[label] = why;
      }
      const std::string key = kPending + label;
      worker_->run<int64_t>([key, why](EtcdClient& c) { return c.put(key, why); },
                            [](Result<int64_t>) {});
    }
    // Assignments of nodes that are gone.
    for (const auto& [label, a] : assign_) {
      if (nodes_.count(label) || writing_.count(label)) continue;
      writing_[label] = "";
      const std::string key = kAssign + label;
      const int64_t rev = a.modRev;
      worker_->run<fleet::TxnResult>(
          [key, rev](EtcdClient& c) {
            return c.txn({Compare::modRevisionIs(key, rev)}, {TxnOp::del(key)});
          },
          [this, label](Result<fleet::TxnResult>) { writing_.erase(label); });
    }
  }

  void writeAssignment(const std::string& label, const std::string& host) {
    writing_[label] = host;
    std::vector<Compare> compares{Compare::valueIs(kSchedulerKey, s_.host)};
    std::string from;
    if (auto a = assign_.find(label); a != assign_.end()) {
      from = a->second.host;
      compares.push_back(Compare::modRevisionIs(kAssign + label, a->second.modRev));
      compares.push_back(Compare::absent(kHosts + from));  // it did not come back meanwhile
    } else {
      compares.push_back(Compare::absent(kAssign + label));
    }
    const json value{{"host", host}, {"at", directory::rfc3339(clock_.wallMillis())}};
    std::vector<TxnOp> ops{TxnOp::put(kAssign + label, value.dump()), TxnOp::del(kPending + label)};
    worker_->run<fleet::TxnResult>(
        [compares, ops](EtcdClient& c) { return c.txn(compares, ops); },
        [this, label, host, from](Result<fleet::TxnResult> t) {
          writing_.erase(label);
          if (!t.ok()) {
            spdlog::warn("ring0d: fleet: assign node '{}' to '{}': {}", label, host, t.error().message);
            return;
          }
          if (t->succeeded) {
            pendingLogged_.erase(label);
            if (from.empty()) {
              spdlog::info("ring0d: fleet: node '{}' assigned to host '{}'", label, host);
            } else {
              ++moves_;
              spdlog::info("ring0d: fleet: node '{}' moved from lost host '{}' to '{}'", label, from,
                           host);
            }
          }
          // Either way the watch brings the outcome, and the next reconcile goes on from it.
        });
  }

  // ---- the API (HTTP threads) ---------------------------------------------------------------

  Result<std::pair<json, NodeSpec>> checkBody(json body, const std::string& label) {
    if (!body.is_object()) return Error{"node: expected a JSON object", 400};
    if (!label.empty()) {
      if (!body.contains("label")) body["label"] = label;
      if (body["label"] != label) return Error{"node '" + label + "': the body names another label", 400};
    }
    json stripped = body;
    auto fields = takeFleetFields(stripped);
    if (!fields.ok()) return fields.error();
    auto spec = hooks_.parseNode(stripped);
    if (!spec.ok()) return spec.error();
    if (!fields->spread.empty() &&
        std::find(s_.levels.begin(), s_.levels.end(), fields->spread) == s_.levels.end()) {
      std::string known;
      for (const auto& l : s_.levels) known += (known.empty() ? "" : ", ") + l;
      return Error{"node '" + spec->label + "': spread '" + fields->spread +
                       "' is not a compartment level (" + known + ")",
                   400};
    }
    if (!spec->compartment.empty()) {
      if (auto p = fleet::parseCompartmentPath(spec->compartment); !p.ok()) {
        return p.error().wrap("node '" + spec->label + "'");
      }
    }
    return std::make_pair(std::move(body), std::move(*spec));
  }

  json shown(const json& body, const std::string& label, const std::map<std::string, std::string>& hosts,
             const std::map<std::string, std::string>& pending) {
    json j = body;
    if (auto it = j.find("admins"); it != j.end() && it->is_array()) {
      for (auto& a : *it) {
        if (a.is_object()) a.erase("password_hash");
      }
    }
    j["source"] = "fleet";
    auto h = hosts.find(label);
    j["host"] = h == hosts.end() ? json(nullptr) : json(h->second);
    auto p = pending.find(label);
    if (p != pending.end()) j["pending"] = p->second;
    return j;
  }

  Result<json> listNodes() {
    auto all = etcd_->prefix(kRoot);
    if (!all.ok()) return unavailable(all.error());
    std::map<std::string, std::string> hosts, pending;
    std::map<std::string, json> bodies;
    for (const auto& kv : all->kvs) {
      if (kv.key.starts_with(kAssign)) hosts[kv.key.substr(kAssign.size())] = parseOr(kv.value).value("host", "");
      if (kv.key.starts_with(kPending)) pending[kv.key.substr(kPending.size())] = kv.value;
      if (kv.key.starts_with(kNodes)) bodies[kv.key.substr(kNodes.size())] = parseOr(kv.value);
    }
    json out = json::array();
    for (const auto& [label, body] : bodies) out.push_back(shown(body, label, hosts, pending));
    return out;
  }

  Result<json> getNode(const std::string& label) {
    auto list = listNodes();
    if (!list.ok()) return list.error();
    for (auto& n : *list) {
      if (n.value("label", "") == label) return n;
    }
    return Error{"no node '" + label + "' in the fleet", 404};
  }

  Result<json> createNode(const json& body) {
    auto checked = checkBody(body, "");
    if (!checked.ok()) return checked.error();
    const std::string label = checked->second.label;
    auto t = etcd_->txn({Compare::absent(kNodes + label)}, {TxnOp::put(kNodes + label, checked->first.dump())});
    if (!t.ok()) return unavailable(t.error());
    if (!t->succeeded) return Error{"node '" + label + "' exists in the fleet", 409};
    spdlog::info("ring0d: fleet: node '{}' made through the API", label);
    return shown(checked->first, label, {}, {});
  }

  Result<json> updateNode(const std::string& label, const json& body) {
    auto checked = checkBody(body, label);
    if (!checked.ok()) return checked.error();
    auto t = etcd_->txn({Compare{kNodes + label, Compare::Target::kVersion, Compare::Op::kGreater, 0, ""}},
                        {TxnOp::put(kNodes + label, checked->first.dump())});
    if (!t.ok()) return unavailable(t.error());
    if (!t->succeeded) return Error{"no node '" + label + "' in the fleet", 404};
    spdlog::info("ring0d: fleet: node '{}' changed through the API", label);
    return getNode(label);
  }

  Status deleteNode(const std::string& label) {
    auto t = etcd_->txn({Compare{kNodes + label, Compare::Target::kVersion, Compare::Op::kGreater, 0, ""}},
                        {TxnOp::del(kNodes + label), TxnOp::del(kAssign + label), TxnOp::del(kPending + label)});
    if (!t.ok()) return unavailable(t.error());
    if (!t->succeeded) return Error{"no node '" + label + "' in the fleet", 404};
    spdlog::info("ring0d: fleet: node '{}' deleted through the API", label);
    return {};
  }

  Result<json> view() {
    auto all = etcd_->prefix(kRoot);
    if (!all.ok()) return unavailable(all.error());
    json hosts = json::array(), members = json::object(), pending = json::object();
    std::map<std::string, std::string> assigned;
    std::string scheduler;
    std::vector<std::string> labels;
    for (const auto& kv : all->kvs) {
      if (kv.key.starts_with(kHosts)) hosts.push_back(parseOr(kv.value));
      if (kv.key.starts_with(kTrust)) members[kv.key.substr(kTrust.size())] = kv.value;
      if (kv.key.starts_with(kPending)) pending[kv.key.substr(kPending.size())] = kv.value;
      if (kv.key.starts_with(kAssign)) assigned[kv.key.substr(kAssign.size())] = parseOr(kv.value).value("host", "");
      if (kv.key.starts_with(kNodes)) labels.push_back(kv.key.substr(kNodes.size()));
      if (kv.key == kSchedulerKey) scheduler = kv.value;
    }
    json nodes = json::array();
    for (const auto& l : labels) {
      json n{{"label", l}};
      auto a = assigned.find(l);
      n["host"] = a == assigned.end() ? json(nullptr) : json(a->second);
      if (pending.contains(l)) n["pending"] = pending[l];
      nodes.push_back(std::move(n));
    }
    return json{{"scheduler", scheduler.empty() ? json(nullptr) : json(scheduler)},
                {"hosts", std::move(hosts)},
                {"members", std::move(members)},
                {"nodes", std::move(nodes)},
                {"revision", all->revision}};
  }

  Result<json> mintToken(int64_t ttlSeconds) {
    if (ttlSeconds < 1 || ttlSeconds > 7 * 24 * 3600) {
      return Error{"fleet token: ttl must be 1 s to 7 days, got " + std::to_string(ttlSeconds) + " s", 400};
    }
    std::string token = acl::newToken();
    auto lease = etcd_->leaseGrant(ttlSeconds);
    if (!lease.ok()) return unavailable(lease.error());
    const json rec{{"created_by", s_.host}, {"created_at", directory::rfc3339(clock_.wallMillis())}};
    if (auto put = etcd_->put(kTokens + sha256Hex(token), rec.dump(), *lease); !put.ok()) {
      return unavailable(put.error());
    }
    json out{{"token", token}, {"expires_at", directory::rfc3339(clock_.wallMillis() + ttlSeconds * 1000)}};
    sodium_memzero(token.data(), token.size());
    return out;
  }

  json status() const {
    json pend = json::object();
    for (const auto& [l, why] : pending_) pend[l] = why;
    return {{"host", s_.host},
            {"compartment", s_.compartment},
            {"scheduler", scheduler_.empty() ? json(nullptr) : json(scheduler_)},
            {"is_scheduler", scheduler_ == s_.host},
            {"lease", lease_ != 0},
            {"fenced", fenced_},
            {"hosts", hosts_.size()},
            {"nodes_here", running_.size()},
            {"pending", std::move(pend)},
            {"fences", fences_},
            {"moves", moves_},
            {"elections", elections_}};
  }

  Reactor& reactor_;
  OwnedTimers timers_{reactor_};  // cancelled with the agent
  const Clock& clock_;
  store::Store& store_;
  FleetSettings s_;
  std::string publicKey_;
  std::string apiUrl_;
  FleetHooks hooks_;
  std::unique_ptr<EtcdClient> leaseClient_, etcd_;
  Handoff handoff_;
  // The host's lease and the scheduler's each on a thread of its own: the scheduler's
  // keep-alive, slow on a failing endpoint, never holds up the host's renewal behind it.
  std::unique_ptr<fleet::EtcdWorker> leaseWorker_, schedWorker_, worker_;
  std::unique_ptr<fleet::Watch> watch_;
  uint64_t watchGeneration_ = 0;

  struct Host {
    json record;
    std::vector<std::string> path;
    fleet::Capacity capacity;
  };
  struct Node {
    json body;
    NodeSpec spec;
    std::string spread, onLostQuorum;
    fleet::Capacity need;
    int64_t modRev = 0;
  };
  struct Assignment {
    std::string host;
    int64_t modRev = 0;
  };
  std::map<std::string, Host> hosts_;
  std::map<std::string, Node> nodes_;
  std::map<std::string, Assignment> assign_;
  std::map<std::string, std::string> pending_;
  std::map<std::string, std::string> pendingLogged_;
  std::string scheduler_;

  int64_t lease_ = 0;
  int64_t schedLease_ = 0;  // the scheduler's, while this host is the scheduler
  bool renewingSched_ = false;
  int64_t lastOkNs_ = 0;
  int64_t unreachableSince_ = 0;
  bool fenced_ = false, renewing_ = false, rejoining_ = false, campaigning_ = false;
  bool stopped_ = false, runFailed_ = false;
  std::map<std::string, int64_t> lostSince_;
  std::map<std::string, std::string> writing_;  // label -> the host an assignment goes to ("": a delete)
  std::vector<NodeSpec> running_;
  std::string lastRecord_;
  std::map<std::string, std::string> lastRoutes_;
  bool routesAnnounced_ = false;
  uint64_t fences_ = 0, moves_ = 0, elections_ = 0;
  Reactor::TimerId keepTimer_ = 0, fenceTimer_ = 0, graceTimer_ = 0, recordTimer_ = 0;
  Reactor::TimerId retryTimer_ = 0;  // a renewal again soon after one failed
};

FleetAgent::FleetAgent() = default;
FleetAgent::~FleetAgent() = default;

Result<std::unique_ptr<FleetAgent>> FleetAgent::create(Reactor& reactor, const Clock& clock,
                                                       store::Store& store, FleetSettings settings,
                                                       std::string publicKeyHex, std::string apiUrl,
                                                       FleetHooks hooks) {
  std::unique_ptr<FleetAgent> agent(new FleetAgent());
  agent->impl_ = std::make_unique<Impl>(reactor, clock, store, std::move(settings),
                                        std::move(publicKeyHex), std::move(apiUrl), std::move(hooks));
  if (auto st = agent->impl_->init(); !st.ok()) return st.error();
  agent->impl_->leaseWorker_ = std::make_unique<fleet::EtcdWorker>(reactor, *agent->impl_->leaseClient_);
  agent->impl_->schedWorker_ = std::make_unique<fleet::EtcdWorker>(reactor, *agent->impl_->leaseClient_);
  agent->impl_->worker_ = std::make_unique<fleet::EtcdWorker>(reactor, *agent->impl_->etcd_);
  return agent;
}
void FleetAgent::treeChanged() {
  impl_->recordSoon();
}

Status FleetAgent::start(const std::string& joinToken) { return impl_->start(joinToken); }
std::vector<NodeSpec> FleetAgent::running() const { return impl_->running_; }
void FleetAgent::stop() { impl_->stop(); }
Result<json> FleetAgent::getNode(const std::string& label) { return impl_->getNode(label); }
Result<json> FleetAgent::createNode(const json& body) { return impl_->createNode(body); }
Result<json> FleetAgent::updateNode(const std::string& label, const json& body) {
  return impl_->updateNode(label, body);
}
Status FleetAgent::deleteNode(const std::string& label) { return impl_->deleteNode(label); }
Result<json> FleetAgent::view() { return impl_->view(); }
Result<json> FleetAgent::mintToken(int64_t ttlSeconds) { return impl_->mintToken(ttlSeconds); }
json FleetAgent::status() const { return impl_->status(); }

}  // namespace enjin::ring
