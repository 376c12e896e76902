// Where the fleet's ring-1 nodes go: a pure function of the live hosts, their capacity, and the
// nodes with their constraints and current assignments. The scheduler (ring/fleet.hpp) calls it
// on every change it sees and writes what it returns with compare-and-swap transactions.
//
// Compartments: a host's compartment is a path of localities, outermost first
// ("dc/rack-a/h1"): it lies inside each of them. A node constrained to a compartment may go to a
// host whose path has it as one of its segments ("rack-a") or as a leading part ("dc/rack-a").
// The same name under several parents across hosts makes the compartments a DAG, not a tree.
//
// Rules, in order:
// - A node assigned to a live host stays there, even if a better host exists now or its
//   constraints changed: nothing running is moved by a scheduler's decision alone.
// - A node with no live host is placed: only on a host inside its compartment, with room for it
//   (capacity minus the needs of every node assigned there), and with `spread` set, in the
//   sibling compartment at that level (`levels` names the depths of the paths: "dc", "rack",
//   "host") that holds the fewest nodes of its spread group (same compartment and spread).
//   Among equals: the host with the fewest nodes, then the most memory left, then by name.
// - A node that fits nowhere stays pending, with a reason naming what ran out where.
// Deterministic: the same input gives the same output (nodes in label order).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "enjin/base/result.hpp"

namespace enjin::fleet {

struct Capacity {
  int64_t slots = 0;        // process slots
  int64_t memoryBytes = 0;  // 0 in a need: none asked
  bool operator==(const Capacity&) const = default;
};

struct HostInfo {
  std::string name;
  std::vector<std::string> path;  // compartment path segments, outermost first
  Capacity capacity;              // what the host offers in all
};

struct NodeRequest {
  std::string label;
  std::string compartment;  // "" = anywhere; "rack-a" or "dc/rack-a"
  std::string spread;       // "" = no spreading; else one of `levels`
  Capacity need;
  std::string assigned;     // the host it is assigned to now ("" = none)
};

struct PlacementResult {
  std::map<std::string, std::string> assign;   // label -> host, for every placed node
  std::map<std::string, std::string> pending;  // label -> why it has no host
  // The labels whose host changed (new or moved): what the scheduler must write.
  std::vector<std::string> changed;
};

// Splits "dc/rack-a/h1" into its segments; each 1..64 of [A-Za-z0-9_.-]. Errors name the path.
Result<std::vector<std::string>> parseCompartmentPath(const std::string& path);
// Whether a host at `path` lies inside `compartment` (see above). "" contains every host.
bool insideCompartment(const std::vector<std::string>& path, const std::string& compartment);

// `hosts` are the live hosts only. A node whose `assigned` host is not among them is placed
// again. `levels` names the path depths `spread` may name; an unknown spread level makes the
// node pending with a reason saying so.
PlacementResult place(const std::vector<HostInfo>& hosts, std::vector<NodeRequest> nodes,
                      const std::vector<std::string>& levels);

}  // namespace enjin::fleet
