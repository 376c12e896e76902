#include "enjin/ring/node_catalog.hpp"

#include <algorithm>
#include <type_traits>
#include <nlohmann/json.hpp>

#include "enjin/ring/node_spec_json.hpp"
#include "enjin/store/store.hpp"

namespace enjin::ring {

using nlohmann::json;

namespace {
constexpr const char* kMetaKey = "api_nodes";

auto byLabel(const std::string& label) {
  return [&label](const auto& n) {
    if constexpr (std::is_same_v<std::decay_t<decltype(n)>, NodeSpec>) {
      return n.label == label;
    } else {
      return n.spec.label == label;
    }
  };
}
}  // namespace

NodeCatalog::NodeCatalog(store::Store& store, int ring, std::string declaredBy)
    : store_(store), ring_(ring), declaredBy_(std::move(declaredBy)) {}

Status NodeCatalog::load() {
  auto text = store_.meta(kMetaKey);
  if (!text.ok()) return text.error();
  made_.clear();
  if (!text->has_value() || (*text)->empty()) return {};
  const std::string where = store_.path() + ": the nodes made through the API";
  const json arr = json::parse(**text, nullptr, false);
  if (!arr.is_array()) return Error{where + ": not a JSON array"};
  for (const auto& j : arr) {
    auto spec = nodeSpecFromTableJson(j, ring_);
    if (!spec.ok()) return spec.error().wrap(where);
    made_.push_back({std::move(*spec), j.dump()});
  }
  return {};
}

Status NodeCatalog::setDeclared(std::vector<NodeSpec> nodes) {
  for (const auto& n : nodes) {
    if (std::any_of(made_.begin(), made_.end(), byLabel(n.label))) {
      return Error{"node '" + n.label + "' is declared in " + declaredBy_ +
                       " but was made through the API: delete it there first "
                       "(DELETE /v1/nodes/" + n.label + "), or give the declared one another label",
                   409};
    }
  }
  declared_ = std::move(nodes);
  return {};
}

std::vector<NodeSpec> NodeCatalog::desired() const {
  std::vector<NodeSpec> all = declared_;
  for (const auto& m : made_) all.push_back(m.spec);
  return all;
}

bool NodeCatalog::declares(const std::string& label) const {
  return std::any_of(declared_.begin(), declared_.end(), byLabel(label));
}

const NodeCatalog::Made* NodeCatalog::findMade(const std::string& label) const {
  auto it = std::find_if(made_.begin(), made_.end(), byLabel(label));
  return it == made_.end() ? nullptr : &*it;
}

Status NodeCatalog::save() {
  json arr = json::array();
  for (const auto& m : made_) arr.push_back(json::parse(m.body));
  return store_.setMeta(kMetaKey, arr.dump());
}

Status NodeCatalog::create(Made node) {
  const std::string label = node.spec.label;
  if (declares(label)) return Error{"node '" + label + "' is declared in " + declaredBy_, 409};
  if (findMade(label) != nullptr) return Error{"node '" + label + "' already exists", 409};
  made_.push_back(std::move(node));
  if (auto st = save(); !st.ok()) {
    made_.pop_back();
    return st;
  }
  return {};
}

Result<NodeCatalog::Made> NodeCatalog::update(Made node) {
  const std::string label = node.spec.label;
  if (declares(label)) {
    return Error{"node '" + label + "' is declared in " + declaredBy_ + "; change it there", 409};
  }
  auto it = std::find_if(made_.begin(), made_.end(), byLabel(label));
  if (it == made_.end()) return Error{"node '" + label + "' does not exist", 404};
  Made previous = std::exchange(*it, std::move(node));
  if (auto st = save(); !st.ok()) {
    *it = std::move(previous);
    return st.error();
  }
  return previous;
}

Result<NodeCatalog::Made> NodeCatalog::remove(const std::string& label) {
  if (declares(label)) {
    return Error{"node '" + label + "' is declared in " + declaredBy_ + "; remove it there", 409};
  }
  auto it = std::find_if(made_.begin(), made_.end(), byLabel(label));
  if (it == made_.end()) return Error{"node '" + label + "' does not exist", 404};
  const auto index = it - made_.begin();
  Made previous = std::move(*it);
  made_.erase(it);
  if (auto st = save(); !st.ok()) {
    made_.insert(made_.begin() + index, previous);
    return st.error();
  }
  return previous;
}

}  // namespace enjin::ring
