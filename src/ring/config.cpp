#include "enjin/ring/config.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include "enjin/acl/password.hpp"
#include "enjin/api/http_server.hpp"
#include "enjin/fleet/placement.hpp"
#include "enjin/base/file.hpp"
#include "enjin/directory/directory.hpp"
#include "enjin/supervise/spec_file.hpp"
#include "enjin/supervise/spec_toml.hpp"
#include "enjin/ring/apps.hpp"
#include "enjin/ring/fleet_agent.hpp"
#include "enjin/ring/isolation_policy.hpp"
#include "enjin/ring/tenant.hpp"
#include "enjin/supervise/limits.hpp"
#include "enjin/supervise/toml_fields.hpp"

namespace enjin::ring {
namespace {

// Daemon configs word their errors as they did before they shared the spec files' reader:
// unknown keys quoted, with the known ones listed.
constexpr supervise::TomlWording kWording{
    .sayGot = false, .quoteUnknownKeys = true, .bracketRanges = true};
constexpr std::string_view kMs = "milliseconds";

std::string underStateDir(const std::string& stateDir, const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  return stateDir + "/" + path;
}

// Reads [[ring1]] tables (ring 1, each with its [[ring1.ring2]] tables) or [[ring1.ring2]]
// tables (ring 2, each with its processes) into `out`. `of` names the enclosing node.
uint32_t lineOf(const toml::node* node) { return node != nullptr ? node->source().begin.line : 0; }

// A ring-1 node's [[ring1.admin]] tables: user and password_hash (argon2id, as
// `enjinctl hash-password` prints it), each user once.
// A node's `limits` inline table, checked by the limits' own reader, as canonical JSON.
Result<std::string> limitsFromToml(const toml::node& node) {
  const toml::table* t = node.as_table();
  if (t == nullptr) return Error{"expected a table, e.g. {memory = \"256M\", processes = 128}"};
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [key, value] : *t) {
    if (auto v = value.value<int64_t>(); v && value.is_integer()) {
      j[std::string(key.str())] = *v;
    } else if (auto d = value.value<double>(); d && value.is_floating_point()) {
      j[std::string(key.str())] = *d;
    } else if (auto str = value.value<std::string>()) {
      j[std::string(key.str())] = *str;
    } else {
      return Error{std::string(key.str()) + ": expected a number or a string"};
    }
  }
  auto limits = supervise::parseLimits(j);
  if (!limits.ok()) return limits.error();
  return supervise::limitsToJson(*limits).dump();
}

bool readAdmins(supervise::TomlFields& r, const toml::node* tables, const std::string& of,
                std::vector<AdminSeed>& out) {
  if (tables == nullptr) return true;
  const toml::array* arr = tables->as_array();
  if (arr == nullptr || !arr->is_array_of_tables()) {
    r.failAt(lineOf(tables), of, "admin", "expected [[ring1.admin]] tables");
    return false;
  }
  for (const toml::node& n : *arr) {
    supervise::TomlTable a(r, *n.as_table(), of + " admin");
    static constexpr std::string_view kKeys[] = {"user", "password_hash"};
    a.checkKeys(kKeys);
    AdminSeed seed;
    a.read("user", seed.user);
    a.read("password_hash", seed.passwordHash);
    if (r.failed()) return false;
    if (!directory::validObjectName(seed.user)) {
      a.fail(&n, "user", "expected 1 to 64 of A-Z a-z 0-9 _ . -");
    } else if (!acl::isPasswordHash(seed.passwordHash)) {
      a.fail(&n, "password_hash", "expected an argon2id hash ($argon2id$...)");
    } else if (std::any_of(out.begin(), out.end(),
                           [&](const AdminSeed& s) { return s.user == seed.user; })) {
      a.fail(&n, "user", "'" + seed.user + "' appears twice");
    }
    if (r.failed()) return false;
    out.push_back(std::move(seed));
  }
  return true;
}

bool readNodes(supervise::TomlFields& r, const toml::node* tables, int ring, const std::string& of,
               std::vector<NodeSpec>& out) {
  if (tables == nullptr) return true;
  const std::string ringName = "ring" + std::to_string(ring);
  const toml::array* arr = tables->as_array();
  if (arr == nullptr || !arr->is_array_of_tables()) {
    r.failAt(lineOf(tables), "", "",
             (of.empty() ? "" : of + ": ") + ringName + ": expected [[" +
                 (ring == 1 ? "ring1" : "ring1.ring2") + "]] tables");
    return false;
  }
  std::map<std::string, uint32_t> seen;
  for (const toml::node& n : *arr) {
    const toml::table& t = *n.as_table();
    NodeSpec node;
    // Type errors name the key alone; the rest name the node too.
    supervise::TomlTable fields(r, t, "");
    fields.read("label", node.label);
    std::string where = ringName + " node" + (node.label.empty() ? "" : " '" + node.label + "'");
    if (!of.empty()) where += " of " + of;
    supervise::TomlTable nodeFields(r, t, where);
    static constexpr std::string_view kRing1Keys[] = {"label",    "strategy",   "user",
                                                        "compartment", "ring2", "api_listen",
                                                        "admin", "tenant_uids",
                                                        "min_isolation", "ports",
                                                        "router_listen", "domain"};
    static constexpr std::string_view kRing2Keys[] = {"label", "strategy", "user", "compartment",
                                                        "process", "limits", "sockets"};
    if (ring == 1) {
      nodeFields.checkKeys(kRing1Keys);
    } else {
      nodeFields.checkKeys(kRing2Keys);
    }
    if (!r.failed() && !supervise::validName(node.label)) {
      nodeFields.fail(&t, "label", "expected 1 to 64 of A-Z a-z 0-9 _ -");
    }
    fields.read("strategy", node.strategy);
    fields.read("user", node.user);
    fields.read("compartment", node.compartment);
    // Which strategies exist is the registry's to say (the parent's daemon checks every node
    // against it, see checkConfig in daemon.hpp); the file only names one.
    if (!r.failed() && node.strategy.empty()) {
      nodeFields.fail(t.get("strategy"), "strategy", "must not be empty");
    }
    if (r.failed()) return false;
    if (ring == 1) {
      fields.read("api_listen", node.apiListen);
      if (!r.failed() && !node.apiListen.empty()) {
        if (auto hp = api::parseListen(node.apiListen); !hp.ok()) {
          nodeFields.fail(t.get("api_listen"), "api_listen", hp.error().message);
        }
      }
      fields.read("tenant_uids", node.tenantUids);
      if (!r.failed() && !node.tenantUids.empty()) {
        if (auto range = parseUidRange(node.tenantUids); !range.ok()) {
          nodeFields.fail(t.get("tenant_uids"), "tenant_uids", range.error().message);
        }
      }
      fields.read("min_isolation", node.minIsolation);
      if (!r.failed() && !node.minIsolation.empty()) {
        if (auto st = checkIsolationName(node.minIsolation); !st.ok()) {
          nodeFields.fail(t.get("min_isolation"), "min_isolation", st.error().message);
        }
      }
      fields.read("ports", node.ports);
      fields.read("router_listen", node.routerListen);
      fields.read("domain", node.domain);
      if (!r.failed()) {
        if (auto st = checkAppSettings(node, 1); !st.ok()) {
          r.failAt(lineOf(&t), "", "", where + ": " + st.error().message);
          return false;
        }
      }
      if (!r.failed() && !readAdmins(r, t.get("admin"), where, node.admins)) return false;
      if (r.failed()) return false;
      if (!readNodes(r, t.get("ring2"), 2, where, node.nodes)) return false;
    } else {
      if (const toml::node* limits = t.get("limits")) {
        auto parsed = limitsFromToml(*limits);
        if (!parsed.ok()) {
          nodeFields.fail(limits, "limits", parsed.error().message);
          return false;
        }
        node.limitsJson = std::move(*parsed);
      }
      if (const toml::node* socks = t.get("sockets")) {
        const toml::array* sarr = socks->as_array();
        bool shaped = sarr != nullptr && sarr->is_array_of_tables();
        if (shaped) {
          for (const toml::node& sn : *sarr) {
            const toml::table& st = *sn.as_table();
            auto name = st["name"].value<std::string>();
            auto port = st["port"].value<int64_t>();
            if (!name || !port || st.size() != 2) {
              shaped = false;
              break;
            }
            node.sockets.push_back({*name, static_cast<int>(*port)});
          }
        }
        if (!shaped) {
          nodeFields.fail(socks, "sockets", "expected [{name = \"http\", port = 20001}, ...]");
          return false;
        }
        if (auto st = checkNodeSockets(node.sockets); !st.ok()) {
          nodeFields.fail(socks, "sockets", st.error().message);
          return false;
        }
      }
      if (const toml::node* procs = t.get("process")) {
        const toml::array* parr = procs->as_array();
        if (parr == nullptr) {
          nodeFields.fail(procs, "process", "expected [[ring1.ring2.process]] tables");
          return false;
        }
        auto specs = supervise::readProcessTables(*parr, r.source());
        if (!specs.ok()) {
          r.failWith(specs.error());
          return false;
        }
        node.processes = std::move(*specs);
      }
    }
    auto [it, inserted] = seen.emplace(node.label, n.source().begin.line);
    if (!inserted) {
      nodeFields.fail(&n, "label", "duplicate, already used at line " + std::to_string(it->second));
      return false;
    }
    out.push_back(std::move(node));
  }
  return true;
}

}  // namespace

namespace {
// JSON as the TOML it stands for: objects are tables, arrays of objects arrays of tables.
std::optional<Error> jsonToToml(const nlohmann::json& j, const std::string& path,
                                std::unique_ptr<toml::node>& out) {
  using nlohmann::json;
  switch (j.type()) {
    case json::value_t::object: {
      auto t = std::make_unique<toml::table>();
      for (const auto& [key, value] : j.items()) {
        std::unique_ptr<toml::node> v;
        if (auto e = jsonToToml(value, path + (path.empty() ? "" : ".") + key, v)) return e;
        t->insert(key, std::move(*v));
      }
      out = std::move(t);
      return std::nullopt;
    }
    case json::value_t::array: {
      auto a = std::make_unique<toml::array>();
      for (size_t i = 0; i < j.size(); ++i) {
        std::unique_ptr<toml::node> v;
        if (auto e = jsonToToml(j[i], path + "[" + std::to_string(i) + "]", v)) return e;
        a->push_back(std::move(*v));
      }
      out = std::move(a);
      return std::nullopt;
    }
    case json::value_t::string: out = std::make_unique<toml::value<std::string>>(j.get<std::string>()); return std::nullopt;
    case json::value_t::boolean: out = std::make_unique<toml::value<bool>>(j.get<bool>()); return std::nullopt;
    case json::value_t::number_integer: out = std::make_unique<toml::value<int64_t>>(j.get<int64_t>()); return std::nullopt;
    case json::value_t::number_unsigned:
      if (j.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) break;
      out = std::make_unique<toml::value<int64_t>>(j.get<int64_t>());
      return std::nullopt;
    case json::value_t::number_float: out = std::make_unique<toml::value<double>>(j.get<double>()); return std::nullopt;
    default: break;
  }
  return Error{(path.empty() ? std::string("the body") : path) + ": " +
                   (j.is_null() ? "null is not a value here" : "number out of range"),
               400};
}
}  // namespace

// The API's plural keys ("nodes", "admins", "processes") for the file's table names ("ring2",
// "admin", "process"), in a node object and the nodes in it.
std::optional<Error> fileKeys(nlohmann::json& node) {
  if (!node.is_object()) return std::nullopt;
  for (auto [api, file] : {std::pair<const char*, const char*>{"nodes", "ring2"},
                           {"admins", "admin"},
                           {"processes", "process"}}) {
    auto it = node.find(api);
    if (it == node.end()) continue;
    if (node.contains(file)) {
      return Error{std::string("node: '") + api + "' and '" + file + "' are the same key; give one",
                   400};
    }
    nlohmann::json v = std::move(*it);
    node.erase(api);
    node[file] = std::move(v);
  }
  if (auto it = node.find("ring2"); it != node.end() && it->is_array()) {
    for (auto& child : *it) {
      if (auto e = fileKeys(child)) return e;
    }
  }
  return std::nullopt;
}

Result<NodeSpec> nodeSpecFromTableJson(const nlohmann::json& given, int ring) {
  const std::string source = "node";
  if (!given.is_object()) return Error{"node: expected a JSON object", 400};
  nlohmann::json body = given;
  if (auto e = fileKeys(body)) return std::move(*e);
  std::unique_ptr<toml::node> node;
  if (auto e = jsonToToml(body, "", node)) return std::move(*e);
  toml::array tables;
  tables.push_back(std::move(*node));
  supervise::TomlFields r(source, kWording);
  std::vector<NodeSpec> out;
  if (!readNodes(r, &tables, ring, "", out) || r.failed()) {
    Error e = r.failed() ? r.takeError() : Error{"node: not a node table"};
    e.code = 400;
    return e;
  }
  return std::move(out.front());
}

std::string daemonName(int ring) { return "ring" + std::to_string(ring) + "d"; }

std::string defaultStateDir(int ring) {
  // ring0 and ring1 for the parents, ring2d for ring 2: what docs/rings.md and docs/ring2d.md
  // have promised, and what existing installations use.
  const std::string leaf = ring == 2 ? daemonName(ring) : "ring" + std::to_string(ring);
  if (::geteuid() == 0) return "/var/lib/enjin/" + leaf;
  const char* home = ::getenv("HOME");
  return std::string(home != nullptr ? home : "/tmp") + "/.local/state/enjin/" + leaf;
}

namespace {
// [fleet]: etcd (required), the host's name and compartment, the lease and its grace.
void readFleet(supervise::TomlFields& r, supervise::TomlTable& root, const toml::node& node,
               FleetSettings& out) {
  if (!node.is_table()) {
    root.fail(&node, "fleet", "expected a table: [fleet] etcd = [\"https://10.0.0.1:2379\"]");
    return;
  }
  supervise::TomlTable t(r, *node.as_table(), "fleet");
  static constexpr std::string_view kFleetKeys[] = {
      "host",     "compartment", "etcd",     "etcd_ca",   "etcd_cert", "etcd_key",
      "lease_ttl_ms", "grace_ms", "max_nodes", "levels", "advertise", "traffic_listen", "domain"};
  t.checkKeys(kFleetKeys);
  if (const toml::node* e = node.as_table()->get("etcd")) {
    if (auto v = t.strings(*e, "etcd", 1)) out.etcd = std::move(*v);
  } else if (!r.failed()) {
    t.failAt(t.lineOf(&node), "etcd", "required: the client URLs of the fleet's etcd members");
  }
  for (const auto& url : out.etcd) {
    if (!r.failed() && !url.starts_with("http://") && !url.starts_with("https://")) {
      t.fail(node.as_table()->get("etcd"), "etcd", "'" + url + "': expected http://HOST:PORT or https://HOST:PORT");
    }
  }
  t.read("host", out.host, false);
  t.read("compartment", out.compartment, false);
  t.read("etcd_ca", out.etcdCa);
  t.read("etcd_cert", out.etcdCert);
  t.read("etcd_key", out.etcdKey);
  t.read("advertise", out.advertise);
  t.read("traffic_listen", out.trafficListen);
  t.read("domain", out.domain);
  t.read("lease_ttl_ms", out.leaseTtlMs, 1000, 3'600'000, kMs);
  t.read("grace_ms", out.graceMs, 0, 3'600'000, kMs);
  t.read("max_nodes", out.maxNodes, 0, 100'000);
  if (const toml::node* l = node.as_table()->get("levels")) {
    if (auto v = t.strings(*l, "levels", 1)) out.levels = std::move(*v);
  }
  if (r.failed()) return;
  if (out.leaseTtlMs % 1000 != 0) {
    t.fail(node.as_table()->get("lease_ttl_ms"), "lease_ttl_ms",
           "etcd leases are whole seconds: give a multiple of 1000");
  }
  // A ring0d that dies just before its fence has its nodes stopped by its holder as late as
  // 0.6 x TTL after its lease can end (FleetAgent::kMinGraceShare): the grace must cover that.
  const toml::node* grace = node.as_table()->get("grace_ms");
  const int64_t minGraceMs =
      std::llround(static_cast<double>(out.leaseTtlMs) * FleetAgent::kMinGraceShare);
  if (grace == nullptr) {
    out.graceMs = out.leaseTtlMs;
  } else if (out.graceMs < minGraceMs) {
    t.fail(grace, "grace_ms",
           std::to_string(out.graceMs) + " is below 0.6 x lease_ttl_ms (" +
               std::to_string(minGraceMs) +
               " ms): a dead ring0d's nodes may stop that long after its lease ends, so they "
               "could run on two hosts; give at least that plus the nodes' stop time");
  }
  if (out.etcdCert.empty() != out.etcdKey.empty()) {
    t.failAt(t.lineOf(&node), out.etcdCert.empty() ? "etcd_cert" : "etcd_key",
             "etcd_cert and etcd_key go together");
  }
  if (out.host.empty()) {
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) == 0) out.host = name;
  }
  if (!supervise::validName(out.host)) {
    t.fail(node.as_table()->get("host"), "host", "'" + out.host + "': expected 1 to 64 of A-Z a-z 0-9 _ -");
  }
  if (out.compartment.empty()) out.compartment = out.host;
  if (auto p = fleet::parseCompartmentPath(out.compartment); !p.ok() && !r.failed()) {
    t.fail(node.as_table()->get("compartment"), "compartment", p.error().message);
  }
}
}  // namespace

Result<DaemonConfig> parseConfig(std::string_view text, const std::string& source, int ring,
                                 const std::string& stateDirOverride) {
  auto parsed = supervise::parseToml(text, source);
  if (!parsed.ok()) return parsed.error();
  toml::table& root = *parsed;
  DaemonConfig c;
  c.ring = ring;
  c.source = source;
  supervise::TomlFields r(source, kWording);
  supervise::TomlTable f(r, root, "");
  if (ring == 0) {
    static constexpr std::string_view kKeys[] = {
        "state_dir", "log_level", "key", "down", "up", "observe", "heartbeat_ms",
        "heartbeat_timeout_ms", "ring1", "api", "metrics", "fleet"};
    f.checkKeys(kKeys);
    if (const toml::node* fl = root.get("fleet"); fl != nullptr) readFleet(r, f, *fl, c.fleet);
    if (const toml::node* api = root.get("api"); api != nullptr) {
      if (!api->is_table()) {
        f.fail(api, "api", "expected a table: [api] listen = \"127.0.0.1:PORT\"");
      } else {
        supervise::TomlTable a(r, *api->as_table(), "api");
        static constexpr std::string_view kApiKeys[] = {"listen", "tls_cert", "tls_key"};
        a.checkKeys(kApiKeys);
        a.read("listen", c.apiListen);
        a.read("tls_cert", c.apiTlsCert);
        a.read("tls_key", c.apiTlsKey);
        if (!r.failed() && c.apiListen.empty()) a.failAt(lineOf(api), "listen", "required");
        if (!r.failed() && c.apiTlsCert.empty() != c.apiTlsKey.empty()) {
          a.failAt(lineOf(api), c.apiTlsCert.empty() ? "tls_cert" : "tls_key",
                   "tls_cert and tls_key go together");
        }
      }
    }
    if (const toml::node* m = root.get("metrics"); m != nullptr) {
      if (!m->is_table()) {
        f.fail(m, "metrics", "expected a table: [metrics] listen = \"127.0.0.1:PORT\"");
      } else {
        supervise::TomlTable t(r, *m->as_table(), "metrics");
        static constexpr std::string_view kMetricsKeys[] = {"listen"};
        t.checkKeys(kMetricsKeys);
        t.read("listen", c.metricsListen);
        const toml::node* listen = m->as_table()->get("listen");
        if (!r.failed() && c.metricsListen.empty()) {
          t.failAt(lineOf(m), "listen", "required");
        } else if (!r.failed()) {
          if (auto addr = api::parseListen(c.metricsListen); !addr.ok()) {
            std::string why = addr.error().message;
            if (why.starts_with("listen address ")) why.erase(0, 15);
            t.fail(listen, "listen", why);
          } else if (c.metricsListen == c.apiListen) {
            t.fail(listen, "listen", "the [api] listen address too: give the metrics their own");
          }
        }
      }
    }
  } else {
    static constexpr std::string_view kKeys[] = {
        "ring", "uuid", "label", "state_dir", "log_level", "key", "parent_key", "parent_down",
        "parent_up", "down", "up", "observe", "heartbeat_ms", "heartbeat_timeout_ms"};
    f.checkKeys(kKeys);
  }
  f.read("state_dir", c.stateDir);
  f.read("log_level", c.logLevel);
  f.read("key", c.key);
  f.read("down", c.down);
  f.read("up", c.up);
  f.read("observe", c.observe);
  f.read("heartbeat_ms", c.heartbeatMs, 10, 3'600'000, kMs);
  f.read("heartbeat_timeout_ms", c.heartbeatTimeoutMs, 10, 24 * 3'600'000LL, kMs);
  if (ring != 0) {
    f.read("uuid", c.uuid);
    f.read("label", c.label);
    f.read("parent_key", c.parentKey);
    f.read("parent_down", c.parentDown);
    f.read("parent_up", c.parentUp);
    int64_t fileRing = ring;
    if (const toml::node* n = root.get("ring"); n != nullptr && !n->is_integer()) {
      f.fail(n, "ring", "expected 1 or 2");
    }
    f.read("ring", fileRing, 0, 9);
    if (!r.failed() && fileRing != ring) {
      f.fail(root.get("ring"), "ring",
             "this file is for ring" + std::to_string(fileRing) + "d, not " + daemonName(ring));
    }
    for (auto [key, value] : {std::pair<const char*, std::string*>{"uuid", &c.uuid},
                              {"label", &c.label},
                              {"parent_key", &c.parentKey},
                              {"parent_down", &c.parentDown},
                              {"parent_up", &c.parentUp}}) {
      if (!r.failed() && value->empty()) r.failAt(1, "", key, "required");
    }
  }
  static const std::set<std::string> kLevels = {"trace", "debug", "info", "warn", "error", "off"};
  if (!r.failed() && !kLevels.contains(c.logLevel)) {
    f.fail(root.get("log_level"), "log_level", "expected one of trace, debug, info, warn, error, off");
  }
  if (!r.failed() && c.heartbeatTimeoutMs <= c.heartbeatMs) {
    f.fail(root.get("heartbeat_timeout_ms"), "heartbeat_timeout_ms",
           "must be longer than heartbeat_ms (" +
               std::to_string(c.heartbeatMs) + "), or every child would be lost between beats");
  }
  // Process tables are read by the spec reader, whose errors carry their own file:line.
  if (ring == 0 && !r.failed()) (void)readNodes(r, root.get("ring1"), 1, "", c.nodes);
  if (r.failed()) return r.error();

  if (!stateDirOverride.empty()) c.stateDir = stateDirOverride;
  if (c.stateDir.empty()) c.stateDir = defaultStateDir(ring);
  if (c.stateDir[0] != '/') {
    return Error{source + ": state_dir: '" + c.stateDir + "' must be an absolute path"};
  }
  while (c.stateDir.size() > 1 && c.stateDir.back() == '/') c.stateDir.pop_back();
  if (c.key.empty()) c.key = ring == 0 ? "ring0.key" : "node.key";
  c.key = underStateDir(c.stateDir, c.key);
  c.parentKey = underStateDir(c.stateDir, c.parentKey);
  fillDefaultEndpoints(c);
  if (ring == 0 && c.label.empty()) c.label = "ring0";
  return c;
}

void fillDefaultEndpoints(DaemonConfig& c) {
  if (c.observe.empty()) c.observe = "ipc://" + c.stateDir + "/out.sock";
  if (c.ring < 2) {
    if (c.down.empty()) c.down = "ipc://" + c.stateDir + "/down.sock";
    if (c.up.empty()) c.up = "ipc://" + c.stateDir + "/up.sock";
  }
}

Result<DaemonConfig> loadConfig(const std::string& path, int ring,
                                const std::string& stateDirOverride) {
  auto text = readFile(path);
  if (!text.ok()) return text.error().wrap("config");
  return parseConfig(*text, path, ring, stateDirOverride);
}

std::string renderChildConfig(const DaemonConfig& c) {
  // toml++ quotes and escapes every string, so no value can break out of its line.
  toml::table t;
  t.insert("ring", c.ring);
  t.insert("uuid", c.uuid);
  t.insert("label", c.label);
  t.insert("state_dir", c.stateDir);
  t.insert("log_level", c.logLevel);
  t.insert("key", c.key);
  t.insert("parent_key", c.parentKey);
  t.insert("parent_down", c.parentDown);
  t.insert("parent_up", c.parentUp);
  if (c.ring < 2) {
    t.insert("down", c.down);
    t.insert("up", c.up);
  }
  t.insert("observe", c.observe);
  t.insert("heartbeat_ms", c.heartbeatMs);
  t.insert("heartbeat_timeout_ms", c.heartbeatTimeoutMs);
  std::ostringstream out;
  out << "# Written by " << daemonName(c.ring - 1) << " when it created this node; it rewrites\n"
      << "# this file on every start, so edits here do not last.\n"
      << t << "\n";
  return out.str();
}

}  // namespace enjin::ring
