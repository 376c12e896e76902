#include "enjin/ring/node_spec_json.hpp"

#include <sodium.h>

#include <set>

#include "enjin/acl/password.hpp"
#include "enjin/api/http_server.hpp"
#include "enjin/base/hex.hpp"
#include "enjin/directory/directory.hpp"
#include "enjin/ring/apps.hpp"
#include "enjin/ring/isolation_policy.hpp"
#include "enjin/ring/tenant.hpp"
#include "enjin/supervise/limits.hpp"
#include "enjin/supervise/spec_file.hpp"
#include "enjin/supervise/spec_json.hpp"

namespace enjin::ring {

using nlohmann::json;

json nodeSpecToJson(const NodeSpec& spec) {
  json j{{"label", spec.label},
         {"strategy", spec.strategy},
         {"user", spec.user},
         {"compartment", spec.compartment}};
  if (!spec.processes.empty()) {
    json procs = json::array();
    for (const auto& p : spec.processes) procs.push_back(supervise::specToJson(p));
    j["processes"] = std::move(procs);
  }
  // Written only when set, so the digest of a node without them stays what it was.
  if (!spec.apiListen.empty()) j["api_listen"] = spec.apiListen;
  if (!spec.tenantUids.empty()) j["tenant_uids"] = spec.tenantUids;
  if (!spec.minIsolation.empty()) j["min_isolation"] = spec.minIsolation;
  if (!spec.limitsJson.empty()) j["limits"] = json::parse(spec.limitsJson, nullptr, false);
  if (!spec.ports.empty()) j["ports"] = spec.ports;
  if (!spec.routerListen.empty()) j["router_listen"] = spec.routerListen;
  if (!spec.domain.empty()) j["domain"] = spec.domain;
  if (!spec.sockets.empty()) {
    json socks = json::array();
    for (const auto& s : spec.sockets) socks.push_back({{"name", s.name}, {"port", s.port}});
    j["sockets"] = std::move(socks);
  }
  if (!spec.admins.empty()) {
    json admins = json::array();
    for (const auto& a : spec.admins) {
      admins.push_back({{"user", a.user}, {"password_hash", a.passwordHash}});
    }
    j["admins"] = std::move(admins);
  }
  if (!spec.nodes.empty()) {
    json nodes = json::array();
    for (const auto& n : spec.nodes) nodes.push_back(nodeSpecToJson(n));
    j["nodes"] = std::move(nodes);
  }
  return j;
}

Result<NodeSpec> nodeSpecFromJson(const json& j, int ring) {
  if (!j.is_object()) return Error{"node spec: expected an object"};
  NodeSpec spec;
  auto text = [&](const char* key, std::string& out) -> Status {
    auto it = j.find(key);
    if (it == j.end()) return {};
    if (!it->is_string()) return Error{std::string("node spec: ") + key + ": expected a string"};
    out = it->get<std::string>();
    return {};
  };
  for (auto [key, out] : {std::pair<const char*, std::string*>{"label", &spec.label},
                          {"strategy", &spec.strategy},
                          {"user", &spec.user},
                          {"compartment", &spec.compartment},
                          {"api_listen", &spec.apiListen},
                          {"tenant_uids", &spec.tenantUids},
                          {"min_isolation", &spec.minIsolation},
                          {"ports", &spec.ports},
                          {"router_listen", &spec.routerListen},
                          {"domain", &spec.domain}}) {
    if (auto st = text(key, *out); !st.ok()) return st.error();
  }
  if (!supervise::validName(spec.label)) {
    return Error{"node spec: label '" + spec.label + "': expected 1 to 64 of A-Z a-z 0-9 _ -"};
  }
  const std::string where = "node '" + spec.label + "'";
  if (!spec.apiListen.empty()) {
    if (ring != 1) return Error{where + ": api_listen: only a ring-1 node serves an API"};
    if (auto hp = api::parseListen(spec.apiListen); !hp.ok()) {
      return hp.error().wrap(where + ": api_listen");
    }
  }
  if (!spec.tenantUids.empty()) {
    if (ring != 1) return Error{where + ": tenant_uids: only a ring-1 node has tenant nodes"};
    if (auto range = parseUidRange(spec.tenantUids); !range.ok()) {
      return range.error().wrap(where);
    }
  }
  if (!spec.minIsolation.empty()) {
    if (ring != 1) return Error{where + ": min_isolation: only a ring-1 node has ring-2 nodes"};
    if (auto st = checkIsolationName(spec.minIsolation); !st.ok()) {
      return st.error().wrap(where + ": min_isolation");
    }
  }
  if (auto st = checkAppSettings(spec, ring); !st.ok()) return st.error().wrap(where);
  if (auto it = j.find("sockets"); it != j.end()) {
    if (ring != 2) return Error{where + ": sockets: only a ring-2 node is handed sockets"};
    if (!it->is_array()) return Error{where + ": sockets: expected an array"};
    for (const auto& s : *it) {
      if (!s.is_object() || s.size() != 2 || !s.contains("name") || !s["name"].is_string() ||
          !s.contains("port") || !s["port"].is_number_integer()) {
        return Error{where + ": sockets: expected {\"name\": NAME, \"port\": PORT}"};
      }
      spec.sockets.push_back({s["name"].get<std::string>(), s["port"].get<int>()});
    }
    if (auto st = checkNodeSockets(spec.sockets); !st.ok()) return st.error().wrap(where);
  }
  if (auto it = j.find("limits"); it != j.end()) {
    if (ring != 2) return Error{where + ": limits: only a ring-2 node has limits"};
    auto limits = supervise::parseLimits(*it);
    if (!limits.ok()) return limits.error().wrap(where + ": limits");
    spec.limitsJson = supervise::limitsToJson(*limits).dump();
  }
  if (auto it = j.find("admins"); it != j.end()) {
    if (ring != 1) return Error{where + ": admins: only a ring-1 node has API users"};
    if (!it->is_array()) return Error{where + ": admins: expected an array"};
    std::set<std::string> users;
    for (const auto& a : *it) {
      if (!a.is_object() || !a.contains("user") || !a["user"].is_string() ||
          !a.contains("password_hash") || !a["password_hash"].is_string() || a.size() != 2) {
        return Error{where + ": admins: expected {\"user\": NAME, \"password_hash\": \"$argon2id$...\"}"};
      }
      AdminSeed seed{a["user"].get<std::string>(), a["password_hash"].get<std::string>()};
      if (!directory::validObjectName(seed.user)) {
        return Error{where + ": admins: user '" + seed.user + "': expected 1 to 64 of A-Z a-z 0-9 _ . -"};
      }
      if (!acl::isPasswordHash(seed.passwordHash)) {
        return Error{where + ": admins: user '" + seed.user +
                     "': password_hash: expected an argon2id hash ($argon2id$...)"};
      }
      if (!users.insert(seed.user).second) {
        return Error{where + ": admins: user '" + seed.user + "' appears twice"};
      }
      spec.admins.push_back(std::move(seed));
    }
  }
  if (auto it = j.find("processes"); it != j.end()) {
    if (ring != 2) return Error{where + ": a ring-" + std::to_string(ring) + " node has no processes"};
    if (!it->is_array()) return Error{where + ": processes: expected an array"};
    std::set<std::string> names;
    for (const auto& p : *it) {
      auto proc = supervise::specFromJson(p);
      if (!proc.ok()) return proc.error().wrap(where);
      if (!names.insert(proc->name).second) {
        return Error{where + ": process '" + proc->name + "' appears twice"};
      }
      spec.processes.push_back(std::move(*proc));
    }
  }
  if (auto it = j.find("nodes"); it != j.end()) {
    if (ring != 1) return Error{where + ": only a ring-1 node has nodes"};
    if (!it->is_array()) return Error{where + ": nodes: expected an array"};
    std::set<std::string> labels;
    for (const auto& n : *it) {
      auto child = nodeSpecFromJson(n, 2);
      if (!child.ok()) return child.error().wrap(where);
      if (!labels.insert(child->label).second) {
        return Error{where + ": node '" + child->label + "' appears twice"};
      }
      spec.nodes.push_back(std::move(*child));
    }
  }
  return spec;
}

std::string specDigest(const json& specJson) {
  const std::string text = specJson.dump();
  unsigned char out[16];
  crypto_generichash(out, sizeof out, reinterpret_cast<const unsigned char*>(text.data()),
                     text.size(), nullptr, 0);
  return toHex(std::span<const uint8_t>(out, sizeof out));
}

}  // namespace enjin::ring

namespace enjin::ring {

std::string newUuid() {
  uint8_t b[16];
  randombytes_buf(b, sizeof b);
  b[6] = static_cast<uint8_t>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<uint8_t>((b[8] & 0x3f) | 0x80);
  const std::string h = toHex(std::span<const uint8_t>(b, sizeof b));
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) +
         "-" + h.substr(20);
}

}  // namespace enjin::ring
