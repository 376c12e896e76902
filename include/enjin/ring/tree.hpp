// The tree a ring daemon reports (its nodes, theirs, and the processes at the leaves), flattened
// to paths so two snapshots can be compared: the events on the observation bus are the
// differences between the tree before and after a change. Computing events from full states,
// rather than forwarding each child's events, keeps the stream right when a message from below
// was lost: the next full state fills the gap.
#pragma once

#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace enjin::ring {

// path ("r1", "r1/web", "r1/web/app") -> {"kind":"node"|"process","state",..}
using FlatTree = std::map<std::string, nlohmann::json>;

FlatTree flattenTree(const nlohmann::json& tree);

// Null when the root and everything below it is ready (revoked nodes aside); otherwise what is
// not, as "infra-1/shop/web is backoff". What `enjinctl wait-ready` waits for.
std::optional<std::string> firstNotReady(const nlohmann::json& tree);

struct TreeEvent {
  std::string topicPath;  // the path with '.' for '/': the topic is "event." + topicPath
  nlohmann::json body;    // {"path","kind","state","previous","pid","restarts","detail",...}
};

// What changed from `before` to `after` (state, pid, restarts or detail), in path order;
// removed entries come as state "removed". `after` is moved into `*keep` if given.
std::vector<TreeEvent> diffTrees(const FlatTree& before, FlatTree after, FlatTree* keep);

}  // namespace enjin::ring
