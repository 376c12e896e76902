#include "enjin/ring/isolation_policy.hpp"

#include "enjin/directory/directory.hpp"
#include "enjin/ring/config.hpp"

namespace enjin::ring {

using supervise::IsolationStrength;

namespace {
constexpr IsolationStrength kStrengths[] = {IsolationStrength::kNone, IsolationStrength::kUser,
                                            IsolationStrength::kSandbox, IsolationStrength::kVm};
}  // namespace

Result<IsolationStrength> parseIsolation(std::string_view name) {
  std::string known;
  for (IsolationStrength s : kStrengths) {
    if (supervise::isolationName(s) == name) return s;
    known += (known.empty() ? "" : ", ") + std::string(supervise::isolationName(s));
  }
  return Error{"'" + std::string(name) + "': expected one of " + known, 400};
}

Status checkIsolationName(std::string_view name) {
  auto s = parseIsolation(name);
  if (!s.ok()) return s.error();
  return {};
}

namespace {
// `scope` follows the required strength in the message: " for its ring-2 nodes", or "".
Status checkAgainst(const NodeSpec& node, const std::string& requiredName, const std::string& why,
                    std::string_view scope, const supervise::SpawnRegistry& strategies) {
  if (requiredName.empty()) return {};
  auto required = parseIsolation(requiredName);
  if (!required.ok()) return required.error().wrap(why + ": min_isolation");
  auto strategy = strategies.find(node.strategy);
  if (!strategy.ok()) return Error{"node '" + node.label + "': " + strategy.error().message, 400};
  const IsolationStrength has = (*strategy)->isolation();
  if (static_cast<int>(has) >= static_cast<int>(*required)) return {};
  return Error{why + " requires isolation ≥ " + requiredName + std::string(scope) + "; node '" +
                   node.label + "' asks for " + std::string(supervise::isolationName(has)),
               409};
}
}  // namespace

Status checkIsolation(const NodeSpec& node, const std::string& requiredName, const std::string& why,
                      const supervise::SpawnRegistry& strategies) {
  return checkAgainst(node, requiredName, why, "", strategies);
}

Status checkRing1Isolation(const NodeSpec& ring1, const NodeSpec& ring2,
                           const supervise::SpawnRegistry& strategies) {
  return checkAgainst(ring2, ring1.minIsolation, "ring-1 node '" + ring1.label + "'",
                      " for its ring-2 nodes", strategies);
}

Status checkCompartmentIsolation(const NodeSpec& node, const directory::Directory& directory,
                                 const supervise::SpawnRegistry& strategies) {
  if (node.compartment.empty()) return {};
  auto demand = directory.minIsolation(node.compartment);
  if (!demand.ok()) return demand.error().wrap("node '" + node.label + "'");
  std::string why = "compartment '" + node.compartment + "'";
  if (!demand->from.empty() && demand->from != node.compartment) {
    why += " (through '" + demand->from + "')";
  }
  return checkIsolation(node, demand->level, why, strategies);
}

}  // namespace enjin::ring
