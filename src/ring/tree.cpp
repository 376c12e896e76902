#include "enjin/ring/tree.hpp"

#include "enjin/supervise/spec_file.hpp"

namespace enjin::ring {

using nlohmann::json;

namespace {

// Copies the fields of `in` that `copy` names into `out`, each of the type asked for.
class Cleaner {
 public:
  Cleaner(const json& in, std::string where) : in_(in), where_(std::move(where)) {}

  bool str(const char* key, json& out, bool required = false) {
    return field(key, out, required, [](const json& v) { return v.is_string(); }, "a string");
  }
  bool integer(const char* key, json& out, bool required = false) {
    return field(key, out, required, [](const json& v) { return v.is_number_integer(); },
                 "an integer");
  }
  // A finite number >= 0 (CPU seconds, bytes), when present.
  bool amount(const char* key, json& out) {
    return field(key, out, false,
                 [](const json& v) { return v.is_number() && v.get<double>() >= 0 &&
                                            v.get<double>() <= 1e300; },
                 "a number >= 0");
  }
  bool boolean(const char* key, json& out) {
    return field(key, out, false, [](const json& v) { return v.is_boolean(); }, "true or false");
  }
  bool name(const char* key, json& out) {
    if (!str(key, out, true)) return false;
    if (!supervise::validName(out[key].get<std::string>())) return fail(std::string(key) + ": not a name");
    return true;
  }
  bool exit(json& out) {
    auto it = in_.find("last_exit");
    if (it == in_.end() || it->is_null()) {
      out["last_exit"] = nullptr;
      return true;
    }
    if (!it->is_object()) return fail("last_exit: expected an object or null");
    json e;
    Cleaner c(*it, where_ + ": last_exit");
    if (!c.str("kind", e, true) || !c.integer("code", e) || !c.integer("signal", e) ||
        !c.boolean("oom_killed", e)) {
      return fail(c.error_);
    }
    out["last_exit"] = std::move(e);
    return true;
  }
  // What a node offers (job offer): counts, never negative; optional.
  bool offer(json& out) {
    auto it = in_.find("offer");
    if (it == in_.end()) return true;
    if (!it->is_object()) return fail("offer: expected an object");
    json o;
    Cleaner c(*it, where_ + ": offer");
    for (const char* key : {"cpus", "memory_bytes", "process_slots"}) {
      if (!c.integer(key, o, true)) return fail(c.error_);
      if (o[key].get<int64_t>() < 0) return fail(std::string("offer: ") + key + ": negative");
    }
    // A ring-1 node that runs apps: the ports of its range no instance holds.
    if (!c.integer("ports_free", o)) return fail(c.error_);
    if (o.contains("ports_free") && o["ports_free"].get<int64_t>() < 0) {
      return fail("offer: ports_free: negative");
    }
    out["offer"] = std::move(o);
    return true;
  }
  // The isolation a node's strategy put in force: optional; only the known keys, each of its
  // type, are kept.
  bool isolation(json& out) {
    auto it = in_.find("isolation");
    if (it == in_.end()) return true;
    if (!it->is_object()) return fail("isolation: expected an object");
    json o;
    Cleaner c(*it, where_ + ": isolation");
    if (!(c.str("strategy", o, true) && c.str("cgroup", o) && c.boolean("seccomp", o) &&
          c.boolean("sandbox_processes", o) && c.integer("uid", o) && c.integer("app_uid", o))) {
      return fail(c.error_);
    }
    for (const char* key : {"namespaces", "unenforced"}) {
      auto list = it->find(key);
      if (list == it->end()) continue;
      if (!list->is_array()) return fail(std::string("isolation: ") + key + ": expected an array");
      for (const auto& item : *list) {
        if (!item.is_string()) {
          return fail(std::string("isolation: ") + key + ": expected strings");
        }
      }
      o[key] = *list;
    }
    if (auto limits = it->find("limits"); limits != it->end() && !limits->is_null()) {
      if (!limits->is_object()) return fail("isolation: limits: expected an object");
      json l = json::object();
      for (const auto& [key, value] : limits->items()) {
        if (value.is_number()) l[key] = value;
      }
      o["limits"] = std::move(l);
    }
    out["isolation"] = std::move(o);
    return true;
  }
  bool fail(std::string what) {
    if (error_.empty()) error_ = what.starts_with(where_) ? what : where_ + ": " + what;
    return false;
  }
  const std::string& error() const { return error_; }

 private:
  template <class Check>
  bool field(const char* key, json& out, bool required, Check ok, const char* what) {
    auto it = in_.find(key);
    if (it == in_.end()) return !required || fail(std::string(key) + ": missing");
    if (!ok(*it)) return fail(std::string(key) + ": expected " + what);
    out[key] = *it;
    return true;
  }

  const json& in_;
  std::string where_;
  std::string error_;
};

Result<json> cleanProcess(const json& in, const std::string& where) {
  if (!in.is_object()) return Error{where + ": a process must be an object"};
  json out;
  Cleaner c(in, where);
  if (c.name("name", out) && c.str("state", out, true) && c.integer("pid", out) &&
      c.integer("restarts", out) && c.integer("started_wall_ms", out) && c.str("detail", out) &&
      c.exit(out) && c.amount("cpu_seconds", out) && c.amount("resident_memory_bytes", out)) {
    return out;
  }
  return Error{c.error()};
}

// A node as its parent daemon reports it (below it, only processes: the tree ends at ring 2).
// Its heartbeat_age_ms is left out: it changes with every report, and kept it would make every
// observation from a ring1d differ from the last, so each one would be a change to pass on.
Result<json> cleanNodeEntry(const json& in, const std::string& where) {
  if (!in.is_object()) return Error{where + ": a node must be an object"};
  json out;
  Cleaner c(in, where);
  if (!(c.name("label", out) && c.str("uuid", out) && c.integer("ring", out) &&
        c.str("state", out, true) && c.integer("pid", out) && c.integer("restarts", out) &&
        c.integer("started_wall_ms", out) && c.str("detail", out) && c.exit(out) &&
        c.str("state_dir", out) &&
        c.str("observed_state", out) && c.boolean("spec_applied", out) &&
        c.str("compartment", out) && c.offer(out) && c.isolation(out))) {
    return Error{c.error()};
  }
  if (in.contains("nodes")) return Error{where + ": a ring-2 node has no nodes"};
  if (auto p = in.find("processes"); p != in.end()) {
    if (!p->is_array()) return Error{where + ": processes: expected an array"};
    json procs = json::array();
    for (const auto& proc : *p) {
      auto clean = cleanProcess(proc, where + ": process");
      if (!clean.ok()) return clean.error();
      procs.push_back(std::move(*clean));
    }
    out["processes"] = std::move(procs);
  }
  return out;
}

json entry(const json& j, const char* kind) {
  json e{{"kind", kind},
         {"state", j.value("state", "")},
         {"pid", j.value("pid", 0)},
         {"restarts", j.value("restarts", 0)},
         {"detail", j.value("detail", "")}};
  if (auto it = j.find("last_exit"); it != j.end()) e["last_exit"] = *it;
  if (auto it = j.find("ring"); it != j.end()) e["ring"] = *it;
  if (auto it = j.find("spec_applied"); it != j.end()) e["spec_applied"] = *it;
  if (auto it = j.find("observed_state"); it != j.end()) e["observed_state"] = *it;
  return e;
}

void flattenInto(const json& node, const std::string& prefix, FlatTree& out) {
  if (auto nodes = node.find("nodes"); nodes != node.end() && nodes->is_array()) {
    for (const auto& n : *nodes) {
      const std::string path = prefix + n.value("label", "?");
      out[path] = entry(n, "node");
      flattenInto(n, path + "/", out);
    }
  }
  if (auto procs = node.find("processes"); procs != node.end() && procs->is_array()) {
    for (const auto& p : *procs) out[prefix + p.value("name", "?")] = entry(p, "process");
  }
}

bool same(const json& a, const json& b) {
  for (const char* k : {"state", "pid", "restarts", "detail"}) {
    if (a.value(k, json()) != b.value(k, json())) return false;
  }
  return true;
}

TreeEvent event(const std::string& path, json body, const json* before) {
  std::string topicPath = path;
  for (char& c : topicPath) {
    if (c == '/') c = '.';
  }
  body["path"] = path;
  body["previous"] = before != nullptr ? before->value("state", json()) : json();
  return TreeEvent{std::move(topicPath), std::move(body)};
}

}  // namespace

FlatTree flattenTree(const json& tree) {
  FlatTree out;
  flattenInto(tree, "", out);
  return out;
}

Result<json> cleanObservation(const json& body, int ring) {
  if (!body.is_object()) return Error{"observation: expected an object"};
  json out;
  Cleaner c(body, "observation");
  if (!(c.integer("ring", out) && c.str("uuid", out) && c.str("label", out) &&
        c.integer("pid", out) && c.str("state", out, true) && c.str("state_dir", out) &&
        c.str("spec_digest", out) && c.str("spec_error", out) && c.offer(out) &&
        c.isolation(out))) {
    return Error{c.error()};
  }
  const char* list = ring == 1 ? "nodes" : "processes";
  const char* other = ring == 1 ? "processes" : "nodes";
  if (body.contains(other)) {
    return Error{"observation: a ring-" + std::to_string(ring) + " node reports no " + other};
  }
  json items = json::array();
  if (auto it = body.find(list); it != body.end()) {
    if (!it->is_array()) return Error{std::string("observation: ") + list + ": expected an array"};
    for (const auto& item : *it) {
      auto clean = ring == 1 ? cleanNodeEntry(item, "observation: node")
                             : cleanProcess(item, "observation: process");
      if (!clean.ok()) return clean.error();
      items.push_back(std::move(*clean));
    }
  }
  out[list] = std::move(items);
  return out;
}

namespace {
// What changes with every report without being news: processes' CPU and memory, and a node's
// job offer (its free memory moves all the time).
void dropUsage(json& node) {
  if (node.is_object()) node.erase("offer");
  for (const char* list : {"nodes", "processes"}) {
    auto it = node.find(list);
    if (it == node.end() || !it->is_array()) continue;
    for (auto& item : *it) {
      if (!item.is_object()) continue;
      item.erase("cpu_seconds");
      item.erase("resident_memory_bytes");
      dropUsage(item);
    }
  }
}
}  // namespace

bool sameApartFromUsage(const json& a, const json& b) {
  if (a == b) return true;
  json x = a, y = b;
  dropUsage(x);
  dropUsage(y);
  return x == y;
}

std::optional<std::string> firstNotReady(const json& tree) {
  if (!tree.is_object()) return std::string("no tree");
  if (tree.value("state", "") != "ready") {
    return tree.value("label", std::string("the root")) + " is " + tree.value("state", "");
  }
  for (const auto& [path, e] : flattenTree(tree)) {
    const std::string state = e.value("state", "");
    if (state != "ready" && state != "revoked") return path + " is " + state;
    if (state == "ready" && e.contains("spec_applied") && !e.value("spec_applied", false)) {
      return path + " does not run its latest spec yet";
    }
  }
  return std::nullopt;
}

std::vector<TreeEvent> diffTrees(const FlatTree& before, FlatTree after, FlatTree* keep) {
  // Below a node whose current run has not reported yet (observed_state "unknown": a restarted
  // daemon that re-adopts its children), nothing is known to have changed: what was there is
  // carried over, not reported removed.
  for (const auto& [path, e] : before) {
    if (after.contains(path)) continue;
    for (size_t slash = path.rfind('/'); slash != std::string::npos;
         slash = slash == 0 ? std::string::npos : path.rfind('/', slash - 1)) {
      auto ancestor = after.find(path.substr(0, slash));
      if (ancestor != after.end() && ancestor->second.value("observed_state", "") == "unknown") {
        after.emplace(path, e);
        break;
      }
    }
  }
  std::vector<TreeEvent> events;
  auto b = before.begin();
  auto a = after.begin();
  while (b != before.end() || a != after.end()) {
    if (a == after.end() || (b != before.end() && b->first < a->first)) {
      json gone = b->second;
      gone["state"] = "removed";
      gone["pid"] = 0;
      events.push_back(event(b->first, std::move(gone), &b->second));
      ++b;
    } else if (b == before.end() || a->first < b->first) {
      events.push_back(event(a->first, a->second, nullptr));
      ++a;
    } else {
      if (!same(b->second, a->second)) events.push_back(event(a->first, a->second, &b->second));
      ++a;
      ++b;
    }
  }
  if (keep != nullptr) *keep = std::move(after);
  return events;
}

}  // namespace enjin::ring
