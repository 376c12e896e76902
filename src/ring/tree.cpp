#include "enjin/ring/tree.hpp"

namespace enjin::ring {

using nlohmann::json;

namespace {

json entry(const json& j, const char* kind) {
  json e{{"kind", kind},
         {"state", j.value("state", "")},
         {"pid", j.value("pid", 0)},
         {"restarts", j.value("restarts", 0)},
         {"detail", j.value("detail", "")}};
  if (auto it = j.find("last_exit"); it != j.end()) e["last_exit"] = *it;
  if (auto it = j.find("ring"); it != j.end()) e["ring"] = *it;
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

std::optional<std::string> firstNotReady(const json& tree) {
  if (!tree.is_object()) return std::string("no tree");
  if (tree.value("state", "") != "ready") {
    return tree.value("label", std::string("the root")) + " is " + tree.value("state", "");
  }
  for (const auto& [path, e] : flattenTree(tree)) {
    const std::string state = e.value("state", "");
    if (state != "ready" && state != "revoked") return path + " is " + state;
  }
  return std::nullopt;
}

std::vector<TreeEvent> diffTrees(const FlatTree& before, FlatTree after, FlatTree* keep) {
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
