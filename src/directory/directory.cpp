#include "enjin/directory/directory.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <ctime>
#include <functional>
#include <set>
#include <span>
#include <utility>

namespace enjin::directory {
namespace {

using nlohmann::json;

constexpr size_t kKinds = 7;
// Indexed by Kind.
constexpr std::array<std::string_view, kKinds> kCollections = {
    "users", "roles", "memberships", "access-rule-sets", "compartments", "networks",
    "network-interfaces"};
constexpr std::array<std::string_view, kKinds> kSingulars = {
    "user", "role", "membership", "access rule set", "compartment", "network",
    "network interface"};
// The store's kind of each: the singular, spelt as in a URL.
constexpr std::array<std::string_view, kKinds> kStoreKinds = {
    "user", "role", "membership", "access-rule-set", "compartment", "network",
    "network-interface"};

constexpr size_t kMaxRules = 1000;
constexpr size_t kMaxRuleFieldBytes = 256;
constexpr size_t kMaxPasswordHashBytes = 512;  // exclusive
constexpr std::string_view kArgon2idPrefix = "$argon2id$";
constexpr std::string_view kAdmin = "admin";

// The isolation strengths a compartment may demand, weakest first: the names of
// supervise::IsolationStrength (a test keeps both lists the same; the directory does not depend
// on supervise).
constexpr std::array<std::string_view, 4> kIsolationNames = {"exec", "unix-user", "sandbox", "vm"};

size_t index(Kind kind) { return static_cast<size_t>(kind); }
std::string_view storeKind(Kind kind) { return kStoreKinds[index(kind)]; }

// "user 'bob'", or "user" while the name is not known.
std::string who(Kind kind, std::string_view name) {
  std::string out(singularName(kind));
  if (!name.empty()) {
    out += " '";
    out += name;
    out += '\'';
  }
  return out;
}

Error badRequest(std::string message) { return Error{std::move(message), 400}; }
Error conflict(std::string message) { return Error{std::move(message), 409}; }
Error notFound(Kind kind, std::string_view name) {
  return Error{who(kind, name) + " does not exist", 404};
}

}  // namespace

std::span<const std::string_view> isolationLevels() { return kIsolationNames; }

int isolationRank(std::string_view name) {
  for (size_t i = 0; i < kIsolationNames.size(); ++i) {
    if (kIsolationNames[i] == name) return static_cast<int>(i);
  }
  return -1;
}

std::optional<int64_t> parseTime(std::string_view text) {
  if (text.empty() || text.size() > 40) return std::nullopt;
  if (std::all_of(text.begin(), text.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
    if (text.size() > 15) return std::nullopt;
    return std::stoll(std::string(text));
  }
  // YYYY-MM-DDTHH:MM:SS[.fff...]Z
  const std::string t(text);
  std::tm tm{};
  int used = 0;
  if (std::sscanf(t.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &used) != 6 ||
      used != 19) {
    return std::nullopt;
  }
  if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
      tm.tm_min > 59 || tm.tm_sec > 60) {
    return std::nullopt;
  }
  int64_t ms = 0;
  size_t i = 19;
  if (i < t.size() && t[i] == '.') {
    int64_t scale = 100;
    for (++i; i < t.size() && t[i] >= '0' && t[i] <= '9'; ++i) {
      ms += (t[i] - '0') * scale;
      scale /= 10;
    }
  }
  if (i + 1 != t.size() || (t[i] != 'Z' && t[i] != 'z')) return std::nullopt;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<int64_t>(::timegm(&tm)) * 1000 + ms;
}

std::string rfc3339(int64_t wallMs) {
  int64_t secs = wallMs / 1000;
  int64_t ms = wallMs % 1000;
  if (ms < 0) {
    ms += 1000;
    secs -= 1;
  }
  const auto t = static_cast<std::time_t>(secs);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[40];
  const size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof out, "%.*s.%03dZ", static_cast<int>(n), buf, static_cast<int>(ms));
  return out;
}

namespace {

bool validRuleText(std::string_view s) {
  return !s.empty() && s.size() <= kMaxRuleFieldBytes &&
         std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == ':' || c == '/' || c == '*' || c == '-';
         });
}

// Node labels as the rings spell them: 1 to 64 of A-Z a-z 0-9 _ -
bool validNodeLabel(std::string_view s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-';
         });
}

bool validIp(const std::string& s) {
  unsigned char buf[16];
  return ::inet_pton(AF_INET, s.c_str(), buf) == 1 || ::inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

// "" if `s` is an IPv4 or IPv6 network in CIDR notation with no host bits set; else why not.
std::string cidrProblem(const std::string& s) {
  const size_t slash = s.find('/');
  if (slash == std::string::npos) return "'" + s + "' is not ADDRESS/PREFIX";
  const std::string addr = s.substr(0, slash);
  const std::string prefix = s.substr(slash + 1);
  unsigned char bytes[16] = {};
  int family = AF_INET;
  int bits = 32;
  if (::inet_pton(AF_INET, addr.c_str(), bytes) != 1) {
    family = AF_INET6;
    bits = 128;
    if (::inet_pton(AF_INET6, addr.c_str(), bytes) != 1) {
      return "'" + addr + "' is not an IPv4 or IPv6 address";
    }
  }
  if (prefix.empty() || prefix.size() > 3 ||
      !std::all_of(prefix.begin(), prefix.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoi(prefix) > bits) {
    return "prefix '" + prefix + "' is not 0 to " + std::to_string(bits);
  }
  const int len = std::stoi(prefix);
  bool hostBits = false;
  for (int i = len; i < bits; ++i) {
    const auto mask = static_cast<unsigned char>(0x80u >> (i % 8));
    if ((bytes[i / 8] & mask) != 0) {
      hostBits = true;
      bytes[i / 8] = static_cast<unsigned char>(bytes[i / 8] & ~mask);
    }
  }
  if (hostBits) {
    char net[INET6_ADDRSTRLEN] = {};
    ::inet_ntop(family, bytes, net, sizeof net);
    return "'" + s + "' has host bits set (the network is " + net + "/" + prefix + ")";
  }
  return "";
}

// The parents named by a stored or checked compartment body.
std::vector<std::string> parentsOf(const json& body) {
  std::vector<std::string> out;
  auto it = body.find("parent_compartment");
  if (it == body.end()) return out;
  if (it->is_string()) out.push_back(it->get<std::string>());
  if (it->is_array()) {
    for (const auto& p : *it) {
      if (p.is_string()) out.push_back(p.get<std::string>());
    }
  }
  return out;
}

std::vector<std::string> stringsOf(const json& body, const char* field) {
  std::vector<std::string> out;
  auto it = body.find(field);
  if (it == body.end() || !it->is_array()) return out;
  for (const auto& v : *it) {
    if (v.is_string()) out.push_back(v.get<std::string>());
  }
  return out;
}

std::string stringOf(const json& body, const char* field) {
  auto it = body.find(field);
  return it != body.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// Checks a request body's shape for `kind` and returns it as stored: the known fields only,
// "name" always set. `pathName` is the name of the object updated ("" on create).
class ShapeCheck {
 public:
  ShapeCheck(Kind kind, const json& body, std::string_view pathName)
      : kind_(kind), body_(body), pathName_(pathName) {}

  Result<json> run(bool creating) {
    if (!body_.is_object()) {
      return badRequest(who(kind_, pathName_) + ": the body is not a JSON object");
    }
    if (auto st = readName(); !st.ok()) return st.error();
    out_["name"] = name_;
    Status st;
    switch (kind_) {
      case Kind::kUser: st = user(creating); break;
      case Kind::kRole: st = role(); break;
      case Kind::kMembership: st = known({"name", "user", "role"}); break;
      case Kind::kRuleSet: st = ruleSet(); break;
      case Kind::kCompartment: st = compartment(); break;
      case Kind::kNetwork: st = network(); break;
      case Kind::kNetworkInterface: st = networkInterface(); break;
    }
    if (!st.ok()) return st.error();
    return std::move(out_);
  }

 private:
  Error bad(std::string_view field, std::string_view why) const {
    std::string m = who(kind_, name_);
    m += ": ";
    m += field;
    m += ": ";
    m += why;
    return badRequest(std::move(m));
  }

  // A membership is named by its user and role; every other kind by its "name".
  Status readName() {
    std::string given;
    bool hasName = false;
    if (auto it = body_.find("name"); it != body_.end()) {
      if (!it->is_string()) return bad("name", "not a string");
      given = it->get<std::string>();
      hasName = true;
    }
    if (kind_ == Kind::kMembership) {
      name_ = std::string(pathName_);  // for messages until both parts are read
      std::string parts[2];
      const char* fields[2] = {"user", "role"};
      for (int i = 0; i < 2; ++i) {
        auto r = objectName(fields[i], true);
        if (!r.ok()) return r.error();
        parts[i] = *r;
        out_[fields[i]] = parts[i];
      }
      name_ = parts[0] + ":" + parts[1];
      if (hasName && given != name_) {
        return bad("name", "'" + given + "' is not USER:ROLE ('" + name_ + "')");
      }
    } else {
      if (!hasName) {
        if (pathName_.empty()) return bad("name", "missing");
        given = std::string(pathName_);
      }
      name_ = given;
      if (!validObjectName(name_)) {
        name_.clear();
        return bad("name", "'" + given + "': expected 1 to 64 of A-Z a-z 0-9 _ . -");
      }
    }
    if (!pathName_.empty() && name_ != pathName_) {
      std::string n = std::move(name_);
      name_ = std::string(pathName_);
      return bad("name", "'" + n + "' is not the name of this " +
                             std::string(singularName(kind_)) + "; a rename is a delete and a create");
    }
    return {};
  }

  Status known(std::initializer_list<std::string_view> fields) const {
    for (const auto& [key, value] : body_.items()) {
      if (std::find(fields.begin(), fields.end(), key) == fields.end()) {
        return badRequest(who(kind_, name_) + ": unknown field '" + key + "'");
      }
    }
    return {};
  }

  // A string field; nullopt when absent and not required.
  Result<std::optional<std::string>> text(const char* field, bool required) const {
    auto it = body_.find(field);
    if (it == body_.end()) {
      if (required) return bad(field, "missing");
      return std::optional<std::string>();
    }
    if (!it->is_string()) return bad(field, "not a string");
    return std::optional<std::string>(it->get<std::string>());
  }

  Result<std::string> objectName(const char* field, bool required) const {
    auto s = text(field, required);
    if (!s.ok()) return s.error();
    if (!*s) return std::string();  // absent and not required
    if (!validObjectName(**s)) {
      return bad(field, "'" + **s + "': expected 1 to 64 of A-Z a-z 0-9 _ . -");
    }
    return **s;
  }

  // An array of distinct object names.
  Result<std::vector<std::string>> nameList(const json& v, const char* field) const {
    if (!v.is_array()) return bad(field, "not an array of names");
    std::vector<std::string> out;
    for (const auto& n : v) {
      if (!n.is_string()) return bad(field, "not an array of names");
      const auto s = n.get<std::string>();
      if (!validObjectName(s)) return bad(field, "'" + s + "': expected 1 to 64 of A-Z a-z 0-9 _ . -");
      if (std::find(out.begin(), out.end(), s) != out.end()) {
        return bad(field, "'" + s + "' is named twice");
      }
      out.push_back(s);
    }
    return out;
  }

  Status user(bool creating) {
    if (auto st = known({"name", "password_hash"}); !st.ok()) return st;
    auto hash = text("password_hash", creating);
    if (!hash.ok()) return hash.error();
    if (*hash) {
      if (!(*hash)->starts_with(kArgon2idPrefix) || (*hash)->size() >= kMaxPasswordHashBytes) {
        return bad("password_hash", "not an argon2id hash (\"$argon2id$...\", under 512 bytes)");
      }
      out_["password_hash"] = **hash;
    }
    return {};
  }

  Status role() {
    if (auto st = known({"name", "rule_sets"}); !st.ok()) return st;
    auto it = body_.find("rule_sets");
    if (it == body_.end()) return bad("rule_sets", "missing");
    auto names = nameList(*it, "rule_sets");
    if (!names.ok()) return names.error();
    out_["rule_sets"] = *names;
    return {};
  }

  Status ruleSet() {
    if (auto st = known({"name", "rules"}); !st.ok()) return st;
    auto it = body_.find("rules");
    if (it == body_.end()) return bad("rules", "missing");
    if (!it->is_array()) return bad("rules", "not an array");
    if (it->size() > kMaxRules) {
      return bad("rules", std::to_string(it->size()) + " rules, at most " +
                              std::to_string(kMaxRules));
    }
    json rules = json::array();
    for (size_t i = 0; i < it->size(); ++i) {
      const json& r = (*it)[i];
      const std::string where = "rules[" + std::to_string(i) + "]";
      if (!r.is_object()) return bad(where, "not an object");
      for (const auto& [key, value] : r.items()) {
        if (key != "effect" && key != "action" && key != "resource") {
          return bad(where, "unknown field '" + key + "'");
        }
      }
      json rule = json::object();
      for (const char* f : {"effect", "action", "resource"}) {
        auto v = r.find(f);
        if (v == r.end()) return bad(where + "." + f, "missing");
        if (!v->is_string()) return bad(where + "." + f, "not a string");
        const auto s = v->get<std::string>();
        if (std::strcmp(f, "effect") == 0) {
          if (s != "allow" && s != "deny") return bad(where + ".effect", "'" + s + "' is not allow or deny");
        } else if (!validRuleText(s)) {
          return bad(where + "." + f,
                     "'" + s + "': expected 1 to 256 of A-Z a-z 0-9 _ . : / * -");
        }
        rule[f] = s;
      }
      rules.push_back(std::move(rule));
    }
    out_["rules"] = std::move(rules);
    return {};
  }

  Status compartment() {
    if (auto st = known({"name", "parent_compartment", "min_isolation"}); !st.ok()) return st;
    if (auto st = minIsolation(); !st.ok()) return st;
    auto it = body_.find("parent_compartment");
    if (it == body_.end() || it->is_null()) {
      out_["parent_compartment"] = nullptr;
      return {};
    }
    if (it->is_string()) {
      const auto s = it->get<std::string>();
      if (!validObjectName(s)) {
        return bad("parent_compartment", "'" + s + "': expected 1 to 64 of A-Z a-z 0-9 _ . -");
      }
      out_["parent_compartment"] = s;
      return {};
    }
    if (!it->is_array()) return bad("parent_compartment", "not null, a name or an array of names");
    auto names = nameList(*it, "parent_compartment");
    if (!names.ok()) return names.error();
    out_["parent_compartment"] = *names;
    return {};
  }

  // Optional: absent or null is no demand of its own (stored as null).
  Status minIsolation() {
    auto it = body_.find("min_isolation");
    if (it == body_.end() || it->is_null()) {
      out_["min_isolation"] = nullptr;
      return {};
    }
    if (!it->is_string() || isolationRank(it->get<std::string>()) < 0) {
      std::string names;
      for (const auto n : kIsolationNames) names += (names.empty() ? "" : ", ") + std::string(n);
      return bad("min_isolation", (it->is_string() ? "'" + it->get<std::string>() + "'" : it->dump()) +
                                      ": expected one of " + names);
    }
    out_["min_isolation"] = it->get<std::string>();
    return {};
  }

  Status network() {
    if (auto st = known({"name", "ring", "strategy", "cidr"}); !st.ok()) return st;
    auto ring = body_.find("ring");
    if (ring == body_.end()) return bad("ring", "missing");
    if (!ring->is_number_integer()) return bad("ring", "not 0, 1 or 2");
    const auto r = ring->get<int64_t>();
    if (r < 0 || r > 2 || (ring->is_number_unsigned() && ring->get<uint64_t>() > 2)) {
      return bad("ring", "not 0, 1 or 2");
    }
    out_["ring"] = r;
    auto strategy = text("strategy", true);
    if (!strategy.ok()) return strategy.error();
    if (**strategy != "local" && **strategy != "vpn") {
      return bad("strategy", "'" + **strategy + "' is not local or vpn");
    }
    out_["strategy"] = **strategy;
    if (auto cidr = body_.find("cidr"); cidr != body_.end() && !cidr->is_null()) {
      if (!cidr->is_string()) return bad("cidr", "not a string");
      const auto s = cidr->get<std::string>();
      if (auto why = cidrProblem(s); !why.empty()) return bad("cidr", why);
      out_["cidr"] = s;
    }
    return {};
  }

  Status networkInterface() {
    if (auto st = known({"name", "network", "node", "address"}); !st.ok()) return st;
    auto net = objectName("network", true);
    if (!net.ok()) return net.error();
    out_["network"] = *net;
    auto node = text("node", true);
    if (!node.ok()) return node.error();
    if (!validNodeLabel(**node)) {
      return bad("node", "'" + **node + "': expected a node label, 1 to 64 of A-Z a-z 0-9 _ -");
    }
    out_["node"] = **node;
    if (auto a = body_.find("address"); a != body_.end() && !a->is_null()) {
      if (!a->is_string()) return bad("address", "not a string");
      const auto s = a->get<std::string>();
      if (!validIp(s)) return bad("address", "'" + s + "' is not an IPv4 or IPv6 address");
      out_["address"] = s;
    }
    return {};
  }

  Kind kind_;
  const json& body_;
  std::string_view pathName_;
  std::string name_;
  json out_ = json::object();
};

}  // namespace

std::optional<Kind> kindFromCollection(std::string_view collection) {
  for (size_t i = 0; i < kKinds; ++i) {
    if (kCollections[i] == collection) return static_cast<Kind>(i);
  }
  return std::nullopt;
}

std::string_view collectionName(Kind kind) { return kCollections[index(kind)]; }
std::string_view singularName(Kind kind) { return kSingulars[index(kind)]; }

bool validObjectName(std::string_view name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-';
         });
}

namespace {

// A stored body, parsed. The store holds only what this file wrote, so a body that is not a
// JSON object is damage, reported as such (unclassified: the API answers 500).
Result<json> parseStored(Kind kind, const store::ObjectRecord& rec) {
  json body = json::parse(rec.bodyJson, nullptr, /*allow_exceptions=*/false);
  if (!body.is_object()) {
    return Error{"stored " + who(kind, rec.name) + " is not a JSON object"};
  }
  return body;
}

Result<std::optional<json>> load(const store::Store& store, Kind kind, std::string_view name) {
  auto rec = store.object(storeKind(kind), name);
  if (!rec.ok()) return rec.error();
  if (!*rec) return std::optional<json>();
  auto body = parseStored(kind, **rec);
  if (!body.ok()) return body.error();
  return std::optional<json>(std::move(*body));
}

// Every stored body of `kind`, by name.
Result<std::vector<json>> loadAll(const store::Store& store, Kind kind) {
  auto recs = store.objects(storeKind(kind));
  if (!recs.ok()) return recs.error();
  std::vector<json> out;
  for (const auto& rec : *recs) {
    auto body = parseStored(kind, rec);
    if (!body.ok()) return body.error();
    out.push_back(std::move(*body));
  }
  return out;
}

Result<json> view(Kind kind, const store::ObjectRecord& rec) {
  auto body = parseStored(kind, rec);
  if (!body.ok()) return body.error();
  body->erase("password_hash");
  (*body)["created_at"] = rfc3339(rec.createdWallMs);
  (*body)["updated_at"] = rfc3339(rec.updatedWallMs);
  return std::move(*body);
}

Result<bool> exists(const store::Store& store, Kind kind, std::string_view name) {
  auto rec = store.object(storeKind(kind), name);
  if (!rec.ok()) return rec.error();
  return rec->has_value();
}

// 409 unless every object `body` refers to exists; for a compartment also unless its parents
// keep the compartments a DAG.
Status checkReferences(const store::Store& store, Kind kind, const json& body) {
  const std::string self = who(kind, stringOf(body, "name"));
  auto need = [&](Kind target, const std::string& name, std::string_view field) -> Status {
    auto found = exists(store, target, name);
    if (!found.ok()) return found.error();
    if (!*found) {
      return conflict(self + ": " + std::string(field) + ": " + who(target, name) +
                      " does not exist");
    }
    return {};
  };
  switch (kind) {
    case Kind::kUser:
    case Kind::kRuleSet:
    case Kind::kNetwork:
      return {};
    case Kind::kRole:
      for (const auto& rs : stringsOf(body, "rule_sets")) {
        if (auto st = need(Kind::kRuleSet, rs, "rule_sets"); !st.ok()) return st;
      }
      return {};
    case Kind::kMembership:
      if (auto st = need(Kind::kUser, stringOf(body, "user"), "user"); !st.ok()) return st;
      return need(Kind::kRole, stringOf(body, "role"), "role");
    case Kind::kNetworkInterface:
      return need(Kind::kNetwork, stringOf(body, "network"), "network");
    case Kind::kCompartment:
      break;
  }

  // A cycle through this compartment: a path along parent links from it back to it, with its
  // new parents in place of the stored ones. The stored compartments form a DAG (every write
  // is checked here), so only a path through this one can close a cycle. Checked before the
  // parents' existence, so that naming itself reads as the cycle it is.
  const std::string name = stringOf(body, "name");
  std::vector<std::string> path{name};
  std::set<std::string> explored;
  std::function<Result<bool>(const std::vector<std::string>&)> reachesSelf =
      [&](const std::vector<std::string>& parents) -> Result<bool> {
    for (const auto& p : parents) {
      if (p == name) {
        path.push_back(p);
        return true;
      }
      if (!explored.insert(p).second) continue;
      auto parent = load(store, Kind::kCompartment, p);
      if (!parent.ok()) return parent.error();
      if (!*parent) continue;  // dangling: reported below
      path.push_back(p);
      auto found = reachesSelf(parentsOf(**parent));
      if (!found.ok() || *found) return found;
      path.pop_back();
    }
    return false;
  };
  auto cycle = reachesSelf(parentsOf(body));
  if (!cycle.ok()) return cycle.error();
  if (*cycle) {
    std::string text;
    for (const auto& n : path) {
      if (!text.empty()) text += " -> ";
      text += n;
    }
    return conflict(self + ": parent_compartment: makes a cycle: " + text);
  }
  for (const auto& p : parentsOf(body)) {
    if (auto st = need(Kind::kCompartment, p, "parent_compartment"); !st.ok()) return st;
  }
  return {};
}

// 409 if another object still refers to `name` of `kind`, naming the first one.
Status checkUnreferenced(const store::Store& store, Kind kind, std::string_view name) {
  auto usedBy = [&](Kind user, auto&& refersTo) -> Status {
    auto all = loadAll(store, user);
    if (!all.ok()) return all.error();
    for (const auto& body : *all) {
      if (refersTo(body)) {
        return conflict(who(kind, name) + " is used by " + who(user, stringOf(body, "name")));
      }
    }
    return {};
  };
  auto contains = [&](const std::vector<std::string>& v) {
    return std::find(v.begin(), v.end(), name) != v.end();
  };
  switch (kind) {
    case Kind::kRuleSet:
      return usedBy(Kind::kRole, [&](const json& b) { return contains(stringsOf(b, "rule_sets")); });
    case Kind::kRole:
      return usedBy(Kind::kMembership, [&](const json& b) { return stringOf(b, "role") == name; });
    case Kind::kCompartment: {
      auto all = loadAll(store, Kind::kCompartment);
      if (!all.ok()) return all.error();
      for (const auto& body : *all) {
        if (contains(parentsOf(body))) {
          return conflict(who(kind, name) + " is a parent of " +
                          who(Kind::kCompartment, stringOf(body, "name")));
        }
      }
      return {};
    }
    case Kind::kNetwork:
      return usedBy(Kind::kNetworkInterface,
                    [&](const json& b) { return stringOf(b, "network") == name; });
    case Kind::kUser:  // its memberships go with it
    case Kind::kMembership:
    case Kind::kNetworkInterface:
      return {};
  }
  return {};
}

}  // namespace

Directory::Directory(store::Store& store, const Clock& clock) : store_(store), clock_(clock) {}

Result<json> Directory::create(Kind kind, const json& body) {
  auto checked = ShapeCheck(kind, body, "").run(/*creating=*/true);
  if (!checked.ok()) return checked.error();
  const std::string name = stringOf(*checked, "name");
  const int64_t now = clock_.wallMillis();
  auto st = store_.atomically([&]() -> Status {
    auto found = exists(store_, kind, name);
    if (!found.ok()) return found.error();
    if (*found) return conflict(who(kind, name) + " already exists");
    if (auto s = checkReferences(store_, kind, *checked); !s.ok()) return s;
    return store_.putObject(storeKind(kind), name, checked->dump(), now);
  });
  if (!st.ok()) return st.error();
  return get(kind, name);
}

Result<json> Directory::get(Kind kind, std::string_view name) const {
  auto rec = store_.object(storeKind(kind), name);
  if (!rec.ok()) return rec.error();
  if (!*rec) return notFound(kind, name);
  return view(kind, **rec);
}

Result<json> Directory::list(Kind kind) const {
  auto recs = store_.objects(storeKind(kind));
  if (!recs.ok()) return recs.error();
  json out = json::array();
  for (const auto& rec : *recs) {
    auto v = view(kind, rec);
    if (!v.ok()) return v.error();
    out.push_back(std::move(*v));
  }
  return out;
}

Result<json> Directory::update(Kind kind, std::string_view name, const json& body) {
  if (kind == Kind::kMembership) {
    return Error{"memberships cannot be changed; delete and create", 405};
  }
  auto checked = ShapeCheck(kind, body, name).run(/*creating=*/false);
  if (!checked.ok()) {
    // An update of nothing is reported as such, before what is wrong with its body.
    auto found = exists(store_, kind, name);
    if (found.ok() && !*found) return notFound(kind, name);
    return checked.error();
  }
  const int64_t now = clock_.wallMillis();
  auto st = store_.atomically([&]() -> Status {
    auto stored = load(store_, kind, name);
    if (!stored.ok()) return stored.error();
    if (!*stored) return notFound(kind, name);
    if (kind == Kind::kUser) {
      if (checked->contains("password_hash")) {
        // A new password ends the sessions opened with the old one.
        if (auto n = store_.deleteSessionsOf(name); !n.ok()) return n.error();
      } else if (auto it = (*stored)->find("password_hash"); it != (*stored)->end()) {
        (*checked)["password_hash"] = *it;
      }
    }
    if (auto s = checkReferences(store_, kind, *checked); !s.ok()) return s;
    return store_.putObject(storeKind(kind), name, checked->dump(), now);
  });
  if (!st.ok()) return st.error();
  return get(kind, name);
}

Status Directory::remove(Kind kind, std::string_view name) {
  return store_.atomically([&]() -> Status {
    auto found = exists(store_, kind, name);
    if (!found.ok()) return found.error();
    if (!*found) return notFound(kind, name);
    if (auto s = checkUnreferenced(store_, kind, name); !s.ok()) return s;
    if (kind == Kind::kUser) {
      auto memberships = loadAll(store_, Kind::kMembership);
      if (!memberships.ok()) return memberships.error();
      for (const auto& m : *memberships) {
        if (stringOf(m, "user") != name) continue;
        if (auto d = store_.deleteObject(storeKind(Kind::kMembership), stringOf(m, "name"));
            !d.ok()) {
          return d.error();
        }
      }
      if (auto n = store_.deleteSessionsOf(name); !n.ok()) return n.error();
    }
    auto d = store_.deleteObject(storeKind(kind), name);
    if (!d.ok()) return d.error();
    return {};
  });
}

Result<Directory::IsolationDemand> Directory::minIsolation(std::string_view compartment) const {
  auto own = load(store_, Kind::kCompartment, compartment);
  if (!own.ok()) return own.error();
  if (!*own) return notFound(Kind::kCompartment, compartment);
  // Every ancestor once (the parents form a DAG, so a diamond is met twice); the strongest
  // demand wins, and of equal ones the nearest (breadth first) names the compartment.
  IsolationDemand out;
  int best = -1;
  std::set<std::string> seen{std::string(compartment)};
  std::vector<std::pair<std::string, json>> queue{{std::string(compartment), std::move(**own)}};
  for (size_t i = 0; i < queue.size(); ++i) {
    const std::string name = queue[i].first;
    const json body = queue[i].second;
    const int rank = isolationRank(stringOf(body, "min_isolation"));
    if (rank > best) {
      best = rank;
      out.level = std::string(kIsolationNames[static_cast<size_t>(rank)]);
      out.from = name;
    }
    for (const auto& p : parentsOf(body)) {
      if (!seen.insert(p).second) continue;
      auto parent = load(store_, Kind::kCompartment, p);
      if (!parent.ok()) return parent.error();
      if (*parent) queue.emplace_back(p, std::move(**parent));
    }
  }
  return out;
}

Result<std::optional<std::string>> Directory::passwordHash(std::string_view user) const {
  auto body = load(store_, Kind::kUser, user);
  if (!body.ok()) return body.error();
  if (!*body) return std::optional<std::string>();
  const std::string hash = stringOf(**body, "password_hash");
  if (hash.empty()) return Error{"stored " + who(Kind::kUser, user) + " has no password hash"};
  return std::optional<std::string>(hash);
}

Result<std::vector<json>> Directory::rulesOf(std::string_view user) const {
  auto memberships = loadAll(store_, Kind::kMembership);
  if (!memberships.ok()) return memberships.error();
  std::vector<json> rules;
  std::set<std::string> seenRuleSets;
  for (const auto& m : *memberships) {
    if (stringOf(m, "user") != user) continue;
    const std::string roleName = stringOf(m, "role");
    auto role = load(store_, Kind::kRole, roleName);
    if (!role.ok()) return role.error();
    // References are checked on every write, so a missing one is damage. Skipping it could
    // drop a deny rule, so it is an error.
    if (!*role) {
      return Error{"stored " + who(Kind::kMembership, stringOf(m, "name")) + " names " +
                   who(Kind::kRole, roleName) + ", which does not exist"};
    }
    for (const auto& rsName : stringsOf(**role, "rule_sets")) {
      if (!seenRuleSets.insert(rsName).second) continue;
      auto rs = load(store_, Kind::kRuleSet, rsName);
      if (!rs.ok()) return rs.error();
      if (!*rs) {
        return Error{"stored " + who(Kind::kRole, roleName) + " names " +
                     who(Kind::kRuleSet, rsName) + ", which does not exist"};
      }
      if (auto it = (*rs)->find("rules"); it != (*rs)->end() && it->is_array()) {
        for (const auto& r : *it) rules.push_back(r);
      }
    }
  }
  return rules;
}

Status Directory::addSession(std::string_view tokenHash, std::string_view user,
                             int64_t expiresWallMs) {
  const int64_t now = clock_.wallMillis();
  return store_.atomically([&]() -> Status {
    auto found = exists(store_, Kind::kUser, user);
    if (!found.ok()) return found.error();
    if (!*found) return notFound(Kind::kUser, user);
    if (auto n = store_.deleteExpiredSessions(now); !n.ok()) return n.error();
    return store_.putSession(
        store::SessionRecord{std::string(tokenHash), std::string(user), now, expiresWallMs});
  });
}

Result<std::optional<std::string>> Directory::sessionUser(std::string_view tokenHash) {
  auto s = store_.session(tokenHash);
  if (!s.ok()) return s.error();
  if (!*s) return std::optional<std::string>();
  // Expired at its expiry time, as Store::deleteExpiredSessions counts it.
  if ((*s)->expiresWallMs <= clock_.wallMillis()) {
    if (auto d = store_.deleteSession(tokenHash); !d.ok()) return d.error();
    return std::optional<std::string>();
  }
  return std::optional<std::string>((*s)->user);
}

Status Directory::endSession(std::string_view tokenHash) {
  auto d = store_.deleteSession(tokenHash);
  if (!d.ok()) return d.error();
  return {};
}

Result<bool> Directory::ensureAdmin(std::string_view passwordHash) {
  bool created = false;
  auto st = store_.atomically([&]() -> Status {
    auto found = exists(store_, Kind::kUser, kAdmin);
    if (!found.ok()) return found.error();
    if (*found) return {};
    const std::pair<Kind, json> steps[] = {
        {Kind::kRuleSet, json::parse(R"({"name":"admin","rules":[)"
                                     R"({"effect":"allow","action":"*","resource":"*"}]})")},
        {Kind::kRole, json::parse(R"({"name":"admin","rule_sets":["admin"]})")},
        {Kind::kUser, json{{"name", "admin"}, {"password_hash", std::string(passwordHash)}}},
        {Kind::kMembership, json::parse(R"({"user":"admin","role":"admin"})")},
    };
    // Each create joins this transaction: one failing undoes the ones before it.
    for (const auto& [kind, body] : steps) {
      auto made = create(kind, body);
      if (!made.ok()) return made.error().wrap("create the admin user");
    }
    created = true;
    return {};
  });
  if (!st.ok()) return st.error();
  return created;
}

Result<bool> Directory::seedAdmin(std::string_view user, std::string_view passwordHash) {
  bool created = false;
  auto st = store_.atomically([&]() -> Status {
    auto found = exists(store_, Kind::kUser, user);
    if (!found.ok()) return found.error();
    if (*found) return {};
    auto role = exists(store_, Kind::kRole, kAdmin);
    if (!role.ok()) return role.error();
    std::vector<std::pair<Kind, json>> steps;
    if (!*role) {
      auto set = exists(store_, Kind::kRuleSet, kAdmin);
      if (!set.ok()) return set.error();
      if (!*set) {
        steps.emplace_back(Kind::kRuleSet, json::parse(R"({"name":"admin","rules":[)"
                                                       R"({"effect":"allow","action":"*","resource":"*"}]})"));
      }
      steps.emplace_back(Kind::kRole, json::parse(R"({"name":"admin","rule_sets":["admin"]})"));
    }
    steps.emplace_back(Kind::kUser,
                       json{{"name", std::string(user)}, {"password_hash", std::string(passwordHash)}});
    steps.emplace_back(Kind::kMembership, json{{"user", std::string(user)}, {"role", "admin"}});
    for (const auto& [kind, body] : steps) {
      auto made = create(kind, body);
      if (!made.ok()) return made.error().wrap("create the admin user '" + std::string(user) + "'");
    }
    created = true;
    return {};
  });
  if (!st.ok()) return st.error();
  return created;
}

}  // namespace enjin::directory
