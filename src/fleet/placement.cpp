#include "enjin/fleet/placement.hpp"

#include <algorithm>
#include <cctype>
#include <optional>
#include <set>
#include <tuple>

namespace enjin::fleet {

namespace {

bool validSegment(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) != 0 || c == '_' || c == '.' || c == '-';
  });
}

std::string mib(int64_t bytes) { return std::to_string(bytes / (1024 * 1024)) + " MiB"; }

// The host's path up to and including the level `depth` (0-based), joined: its sibling group.
std::string groupAt(const std::vector<std::string>& path, size_t depth) {
  std::string g;
  for (size_t i = 0; i <= depth && i < path.size(); ++i) g += (i ? "/" : "") + path[i];
  return g;
}

struct Load {
  Capacity used;
  int nodes = 0;
};

}  // namespace

Result<std::vector<std::string>> parseCompartmentPath(const std::string& path) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t slash = path.find('/', start);
    std::string seg = path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (!validSegment(seg)) {
      return Error{"compartment path '" + path +
                       "': each part must be 1 to 64 of A-Z a-z 0-9 _ . - (\"dc/rack-a/h1\")",
                   400};
    }
    out.push_back(std::move(seg));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return out;
}

bool insideCompartment(const std::vector<std::string>& path, const std::string& compartment) {
  if (compartment.empty()) return true;
  if (compartment.find('/') == std::string::npos) {
    return std::find(path.begin(), path.end(), compartment) != path.end();
  }
  auto want = parseCompartmentPath(compartment);
  if (!want.ok() || want->size() > path.size()) return false;
  return std::equal(want->begin(), want->end(), path.begin());
}

PlacementResult place(const std::vector<HostInfo>& hosts, std::vector<NodeRequest> nodes,
                      const std::vector<std::string>& levels) {
  std::sort(nodes.begin(), nodes.end(),
            [](const NodeRequest& a, const NodeRequest& b) { return a.label < b.label; });
  std::map<std::string, const HostInfo*> byName;
  for (const auto& h : hosts) byName[h.name] = &h;

  PlacementResult out;
  std::map<std::string, Load> load;
  // Spread groups: (compartment, spread) -> sibling group -> nodes in it.
  std::map<std::pair<std::string, std::string>, std::map<std::string, int>> spreadCount;
  auto levelOf = [&](const std::string& spread) -> std::optional<size_t> {
    auto it = std::find(levels.begin(), levels.end(), spread);
    if (it == levels.end()) return std::nullopt;
    return static_cast<size_t>(it - levels.begin());
  };
  auto count = [&](const NodeRequest& n, const HostInfo& h) {
    Load& l = load[h.name];
    l.used.slots += n.need.slots;
    l.used.memoryBytes += n.need.memoryBytes;
    ++l.nodes;
    if (!n.spread.empty()) {
      if (auto depth = levelOf(n.spread)) {
        ++spreadCount[{n.compartment, n.spread}][groupAt(h.path, *depth)];
      }
    }
  };

  // First every node that stays, so that the room left is known before anything is placed.
  std::vector<const NodeRequest*> toPlace;
  for (const auto& n : nodes) {
    auto it = byName.find(n.assigned);
    if (!n.assigned.empty() && it != byName.end()) {
      out.assign[n.label] = n.assigned;
      count(n, *it->second);
    } else {
      toPlace.push_back(&n);
    }
  }

  for (const NodeRequest* n : toPlace) {
    const std::string where =
        n->compartment.empty() ? std::string("the fleet") : "compartment '" + n->compartment + "'";
    std::optional<size_t> depth;
    if (!n->spread.empty()) {
      depth = levelOf(n->spread);
      if (!depth) {
        std::string known;
        for (const auto& l : levels) known += (known.empty() ? "" : ", ") + l;
        out.pending[n->label] = "spread '" + n->spread + "' is not a compartment level (" + known + ")";
        continue;
      }
    }
    std::vector<const HostInfo*> inside;
    for (const auto& h : hosts) {
      if (insideCompartment(h.path, n->compartment)) inside.push_back(&h);
    }
    if (inside.empty()) {
      out.pending[n->label] = "no live host in " + where;
      continue;
    }
    std::vector<const HostInfo*> fit;
    std::string shortOf;
    for (const HostInfo* h : inside) {
      const Load& l = load[h->name];
      const int64_t slotsLeft = h->capacity.slots - l.used.slots;
      const int64_t memLeft = h->capacity.memoryBytes - l.used.memoryBytes;
      std::string why;
      if (slotsLeft < n->need.slots) {
        why = std::to_string(std::max<int64_t>(slotsLeft, 0)) + " process slots left (needs " +
              std::to_string(n->need.slots) + ")";
      } else if (n->need.memoryBytes > 0 && memLeft < n->need.memoryBytes) {
        why = mib(std::max<int64_t>(memLeft, 0)) + " of memory left (needs " +
              mib(n->need.memoryBytes) + ")";
      }
      if (why.empty()) {
        fit.push_back(h);
      } else {
        shortOf += (shortOf.empty() ? "" : "; ") + h->name + ": " + why;
      }
    }
    if (fit.empty()) {
      out.pending[n->label] = "no host in " + where + " has room: " + shortOf;
      continue;
    }
    auto& groups = spreadCount[{n->compartment, n->spread}];
    auto rank = [&](const HostInfo* h) {
      const Load& l = load[h->name];
      const int inGroup = depth ? groups[groupAt(h->path, *depth)] : 0;
      return std::make_tuple(inGroup, l.nodes, -(h->capacity.memoryBytes - l.used.memoryBytes),
                             h->name);
    };
    const HostInfo* best = *std::min_element(
        fit.begin(), fit.end(), [&](const HostInfo* a, const HostInfo* b) { return rank(a) < rank(b); });
    out.assign[n->label] = best->name;
    out.changed.push_back(n->label);
    count(*n, *best);
  }
  return out;
}

}  // namespace enjin::fleet
