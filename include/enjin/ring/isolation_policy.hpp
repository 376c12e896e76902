// The isolation policy: how strongly a node's strategy must keep its processes from the rest of
// the host (supervise::IsolationStrength, named "exec" < "unix-user" < "sandbox" < "vm").
//
// Two places may demand a minimum, and a stronger strategy satisfies a weaker demand:
// - a ring-1 node's spec (`min_isolation` in its [[ring1]] table), for its ring-2 nodes; the
//   parent's daemon checks it wherever it checks a node tree (checkNodeTree, so at every config
//   check, load and reload, and for every node the API makes);
// - a compartment (its optional "min_isolation" in the directory), for the nodes placed in it and
//   in the compartments below it; checked for the nodes the API makes or changes, where the
//   compartment must exist in the daemon's directory. A file's compartment is free text, so a
//   file-declared node is held to its ring-1 node's demand only.
// A refusal is a 409 naming the demand, who makes it and what the node asks for.
#pragma once

#include <string>
#include <string_view>

#include "enjin/base/result.hpp"
#include "enjin/supervise/spawn.hpp"

namespace enjin::directory {
class Directory;
}

namespace enjin::ring {

struct NodeSpec;

// The strength `name` stands for ("exec", "unix-user", "sandbox", "vm"); an unknown name is a
// 400 naming it and the known ones.
Result<supervise::IsolationStrength> parseIsolation(std::string_view name);
Status checkIsolationName(std::string_view name);

// Ok when node.strategy's isolation (from `strategies`) is at least `requiredName`, or when
// `requiredName` is empty. Else a 409: "WHY requires isolation ≥ sandbox; node 'shop' asks for
// unix-user", `why` naming who demands it ("compartment 'pci'"). An unknown required name or
// strategy is an error of its own.
Status checkIsolation(const NodeSpec& node, const std::string& requiredName, const std::string& why,
                      const supervise::SpawnRegistry& strategies);

// A ring-1 node's demand on one of its ring-2 nodes: "ring-1 node 'infra' requires isolation ≥
// sandbox for its ring-2 nodes; node 'shop' asks for exec".
Status checkRing1Isolation(const NodeSpec& ring1, const NodeSpec& ring2,
                           const supervise::SpawnRegistry& strategies);

// The demand of node.compartment (the strongest min_isolation of it and its ancestors) on `node`;
// ok for a node without a compartment. The compartment must exist (404 otherwise). When the
// demand comes from an ancestor, the message names both: "compartment 'pci-eu' (through 'pci')".
Status checkCompartmentIsolation(const NodeSpec& node, const directory::Directory& directory,
                                 const supervise::SpawnRegistry& strategies);

}  // namespace enjin::ring
